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


def measure(ctx, owner, listen, count, spacing):
    """Commit ``count`` webhooks ``spacing`` (min, max) seconds apart to an idle worker;
    return the milliseconds from each commit to its arrival, and how many never came."""
    from djwebhooks import send_event

    connections.close_all()
    config = {"mode": "worker", "concurrency": 4, "burst": False, "listen": listen}
    child = Child(ctx, f"worker-latency-{'listen' if listen else 'poll'}", config,
                  {"BACKEND": DATABASE})
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
    modes = [True, False] if wakeup.can_listen("default") else [False]
    figures = {}
    for listen in modes:
        latencies, missing = measure(ctx, owner, listen, count, spacing)
        figures[listen] = {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                           "p99": percentile(latencies, 99), "max": max(latencies),
                           "missing": missing}
        ctx.log(f"  {'listening' if listen else 'polling'}: p50 {figures[listen]['p50']:.1f} ms"
                f", p95 {figures[listen]['p95']:.1f} ms, p99 {figures[listen]['p99']:.1f} ms")
    poll = figures[False]
    rows = []

    def detail(f):
        text = f"p95 {f['p95']:.1f}, p99 {f['p99']:.1f}, max {f['max']:.1f}"
        return text + (f"; {f['missing']} never arrived" if f["missing"] else "")

    if True in figures:
        woken = figures[True]
        rows.append(Row(
            "8 latency: commit to receiver, worker woken by notifications", "database",
            ctx.database, size, woken["p50"], "ms p50", poll["p50"],
            f"the same worker polling every {interval:g} s (--no-listen)",
            f"p50 ≤ {TARGET_P50_MS} ms, p99 ≤ {TARGET_P99_MS} ms",
            woken["p50"] <= TARGET_P50_MS and woken["p99"] <= TARGET_P99_MS
            and not woken["missing"],
            measured_detail=detail(woken), baseline_detail=detail(poll),
            note="one idle worker process, default options; time.time() as the caller's "
                 "commit returns, and as the receiver reads the request's headers",
            data={"listening": woken, "polling": poll},
        ))
    else:
        rows.append(Row(
            f"8 latency: commit to receiver, worker polling every {interval:g} s", "database",
            ctx.database, size, poll["p50"], "ms p50", interval * 500,
            "half the interval", "n/a (no notifications here)", None,
            measured_detail=detail(poll),
            note="one idle worker process, default options; time.time() as the caller's "
                 "commit returns, and as the receiver reads the request's headers",
            data={"polling": poll},
        ))
    return rows


SCENARIOS = {"latency": scenario_latency}
