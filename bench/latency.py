"""Scenario 8, ``latency``: from the caller's commit to the receiver, one webhook at a time.

One idle worker process with the default options. The caller commits single webhooks one
at a time, spaced out (so that each finds the worker idle), and notes ``time.time()`` as
its commit returns; the receiver notes ``time.time()`` as each request arrives (both are
the same machine's clock). On PostgreSQL the worker is woken by notifications; the
baseline is the same worker with ``listen=False``, polling, whose median is about half its
interval. Elsewhere only polling is measured (no target applies).
"""

import random
import time

from django.db import connections, transaction

from bench.scenarios import (
    DATABASE,
    PAYLOAD,
    Child,
    Row,
    analyze,
    djwebhooks_settings,
    make_targets,
    reset_tables,
)

#: The targets on the worker that listens, in milliseconds (p50, p99).
TARGET_P50_MS, TARGET_P99_MS = 25, 100


def percentile(values, q):
    """The nearest-rank ``q``-th percentile of ``values``."""
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def measure(ctx, owner, listen, count, spacing, conn_max_age=0):
    """Commit ``count`` webhooks ``spacing`` (min, max) seconds apart to an idle worker;
    return the milliseconds from each commit to its arrival, and how many never came."""
    from djwebhooks import send_event

    connections.close_all()
    config = {"mode": "worker", "concurrency": 4, "burst": False, "listen": listen}
    child = Child(ctx, f"worker-latency-{'listen' if listen else 'poll'}-{conn_max_age}",
                  config, {"BACKEND": DATABASE},
                  env={"BENCH_CONN_MAX_AGE": str(conn_max_age)} if conn_max_age else None)
    randomness = random.Random(8)
    committed = {}
    try:
        child.expect("ready", 60)
        child.send("go")
        with djwebhooks_settings(backend="database"):
            # Warm up (connections, the listener), then forget what arrived.
            for number in range(5):
                send_event("bench.latency", {"warmup": number}, owner=owner)
            wait_for_arrivals(ctx, 5, 30)
            for number in range(count):
                time.sleep(randomness.uniform(*spacing))
                with transaction.atomic():
                    [delivery] = send_event("bench.latency", {"id": number, **PAYLOAD},
                                            owner=owner)
                committed[delivery.hash_value] = time.time()
        arrived = wait_for_arrivals(ctx, count, 30)
        child.send("stop")
        child.expect("result", 30)
    finally:
        child.close()
    latencies = [(arrived[key] - at) * 1000 for key, at in committed.items() if key in arrived]
    return latencies, count - len(latencies)


def wait_for_arrivals(ctx, count, timeout):
    """``{webhook_id: arrival time}`` of the next ``count`` requests (fewer after
    ``timeout`` seconds)."""
    arrived, deadline = {}, time.monotonic() + timeout
    while len(arrived) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        for _, webhook_id, at in ctx.receiver.arrivals():
            arrived.setdefault(webhook_id, at)
    return arrived


def scenario_latency(ctx):
    from djwebhooks import wakeup
    from djwebhooks.worker import Worker

    sizes, owner = ctx.sizes, ctx.owner()
    reset_tables()
    make_targets(owner, "bench.latency", [f"{ctx.receiver.url}/log/latency/t0"], [""])
    analyze()
    ctx.receiver.arrivals()
    count, spacing = sizes.latency_webhooks, sizes.latency_spacing
    size = f"{count} webhooks, {spacing[0] * 1000:g}–{spacing[1] * 1000:g} ms apart"
    interval = Worker().interval
    # (listen, CONN_MAX_AGE): Django's default of 0 (a new connection after each look that
    # found nothing), and the persistent connection docs/worker.rst advises.
    modes = [(True, 0), (True, 60), (False, 0)] if wakeup.can_listen("default") \
        else [(False, 0)]
    figures = {}
    for listen, age in modes:
        latencies, missing = measure(ctx, owner, listen, count, spacing, age)
        f = figures[listen, age] = {
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "max": max(latencies), "missing": missing}
        ctx.log(f"  {'listening' if listen else 'polling'}, CONN_MAX_AGE {age}: p50 "
                f"{f['p50']:.1f} ms, p95 {f['p95']:.1f} ms, p99 {f['p99']:.1f} ms")
    poll = figures[False, 0]
    note = ("one idle worker process, default options; time.time() as the caller's commit "
            "returns, and as the receiver reads the request's headers")

    def detail(f):
        text = f"p95 {f['p95']:.1f}, p99 {f['p99']:.1f}, max {f['max']:.1f}"
        return text + (f"; {f['missing']} never arrived" if f["missing"] else "")

    rows = []
    for (listen, age), woken in figures.items():
        if not listen:
            continue
        rows.append(Row(
            f"8 latency: commit to receiver, woken by notifications, CONN_MAX_AGE {age}",
            "database", ctx.database, size, woken["p50"], "ms p50", poll["p50"],
            f"the same worker polling every {interval:g} s (listen=False), CONN_MAX_AGE 0",
            f"p50 ≤ {TARGET_P50_MS} ms, p99 ≤ {TARGET_P99_MS} ms",
            woken["p50"] <= TARGET_P50_MS and woken["p99"] <= TARGET_P99_MS
            and not woken["missing"],
            measured_detail=detail(woken), baseline_detail=detail(poll), note=note,
            data={"listening": woken, "polling": poll},
        ))
    if not rows:
        rows.append(Row(
            f"8 latency: commit to receiver, worker polling every {interval:g} s", "database",
            ctx.database, size, poll["p50"], "ms p50", interval * 500,
            "half the interval", "n/a (no notifications here)", None,
            measured_detail=detail(poll), note=note, data={"polling": poll},
        ))
    return rows


SCENARIOS = {"latency": scenario_latency}
