"""Scenarios 9 to 11: the async sending mode (``SEND_MODE = "async"``) beside the threads.

9. ``async-throughput``: deliveries per second to a fast receiver from one worker process,
   at several concurrencies, in each mode; each against its own client's bare loop with as
   many requests in flight (aiohttp on one event loop for the async mode; urllib3 threads,
   making the calls dj-webhooks makes, for the threads). The figures also make the
   Performance page's chart of throughput against concurrency.
10. ``async-slow``: 2,000 deliveries to receivers that take 2 s each at a concurrency of
   1,000, which only the async mode can run in one process: the time against the ideal
   (4 s), the worker's peak RSS and the most threads it ran.
11. ``async-dead``: scenario 4 in the async mode (a target that never answers among healthy
   ones), with an async worker of concurrency 64.

Without aiohttp (``pip install 'dj-webhooks[async]'``) each prints ``skipped: <reason>``.
"""

from importlib.util import find_spec

from bench.scenarios import (
    Row,
    Stalled,
    analyze,
    combined,
    cpu_use,
    fan_out,
    hol_worker,
    make_targets,
    reset_tables,
    run_children,
    succeeded_count,
    write_requests,
)

THROUGHPUT = "9 async throughput"
SLOW = "10 async slow receivers at scale"
DEAD = "11 async dead endpoint"


def aiohttp_problem():
    if find_spec("aiohttp") is None:
        return "needs aiohttp, its baseline: pip install -r bench/requirements.txt"
    return None


def skipped(ctx, scenario, reason):
    ctx.log(f"  skipped: {reason}")
    return [Row(scenario, "database", ctx.database, "—", None, "", note=f"skipped: {reason}")]


def scenario_async_throughput(ctx):
    from djwebhooks.models import Delivery

    problem = aiohttp_problem()
    if problem:
        return skipped(ctx, THROUGHPUT, problem)
    sizes, owner = ctx.sizes, ctx.owner()
    total = sizes.throughput_deliveries
    targets = sizes.throughput_targets
    calls = max(1, total // targets)
    total = calls * targets

    def load():
        reset_tables()
        urls = [f"{ctx.receiver.url}/ok/async/t{i}" for i in range(targets)]
        make_targets(owner, "bench.fan", urls, ["async"] * len(urls))
        fan_out(owner, "async", calls)
        analyze()

    load()
    deliveries = Delivery.objects.select_related("webhook_target__owner").order_by("pk")
    requests_file = write_requests(ctx, deliveries, "async-throughput")
    rows, curve = [], {"async": {}, "threads": {}, "bare aiohttp": {}, "bare urllib3": {}}
    for mode, concurrencies in (("async", sizes.async_concurrencies),
                                ("threads", sizes.thread_concurrencies)):
        for concurrency in concurrencies:
            bare_kind = "bare aiohttp" if mode == "async" else "bare urllib3"
            config = ({"mode": "bare_aio"} if mode == "async" else
                      {"mode": "bare", "calls": "urllib3"})
            (bare,) = run_children(ctx, [
                (f"bare-{mode}-{concurrency}", {**config, "requests_file": str(requests_file),
                                                "concurrency": concurrency}, None),
            ], timeout=600)
            done, bare_seconds = combined([bare])
            bare_rate = done / bare_seconds
            load()
            (result,) = run_children(ctx, [
                (f"worker-{mode}-{concurrency}",
                 {"mode": "worker", "concurrency": concurrency, "burst": True,
                  "send_mode": mode}, None),
            ], timeout=1200)
            _, seconds = combined([result])
            sent = succeeded_count()
            rate = sent / seconds
            curve[mode][concurrency] = rate
            curve[bare_kind][concurrency] = bare_rate
            ctx.log(f"  {mode}, concurrency {concurrency}: {rate:.0f}/s (bare {bare_rate:.0f}/s)")
            target = 0.5 if mode == "async" else 0.8
            rows.append(Row(
                f"{THROUGHPUT}: {mode} worker, concurrency {concurrency}", "database",
                ctx.database, f"{total} deliveries, 1 process", rate, "deliveries/s",
                bare_rate, f"{bare_kind}, {concurrency} in flight", f"≥ {target}×",
                rate / bare_rate >= target, higher_is_better=True,
                note=(f"{result['most_threads']} threads at most; "
                      f"{cpu_use(result, sent, seconds)}; the bare loop "
                      f"{cpu_use(bare, done, bare_seconds)}" +
                      ("" if sent == total else f"; only {sent} of {total} succeeded")),
                data={"seconds": seconds, "mode": mode, "concurrency": concurrency,
                      "cpu_us": 1e6 * result["cpu_s"] / max(1, sent),
                      "baseline_cpu_us": 1e6 * bare["cpu_s"] / max(1, done),
                      "curve": curve if mode == "threads" and
                      concurrency == concurrencies[-1] else None},
            ))
    return rows


def scenario_async_slow(ctx):
    from djwebhooks.models import Delivery

    problem = aiohttp_problem()
    if problem:
        return skipped(ctx, SLOW, problem)
    sizes, owner = ctx.sizes, ctx.owner()
    latency_ms, concurrency = sizes.async_slow_latency_ms, sizes.async_slow_concurrency
    total = sizes.async_slow_deliveries
    targets = concurrency
    calls = max(1, total // targets)
    total = calls * targets
    ideal = total / concurrency * latency_ms / 1000
    reset_tables()
    urls = [f"{ctx.receiver.url}/delay/{latency_ms}/a{i}" for i in range(targets)]
    make_targets(owner, "bench.fan", urls, ["aslow"] * targets)
    fan_out(owner, "aslow", calls)
    analyze()
    deliveries = Delivery.objects.select_related("webhook_target__owner").order_by("pk")
    requests_file = write_requests(ctx, deliveries, "async-slow")
    (bare,) = run_children(ctx, [
        ("bare-aio-slow", {"mode": "bare_aio", "requests_file": str(requests_file),
                           "concurrency": concurrency}, None),
    ], timeout=ideal * 5 + 60)
    _, bare_seconds = combined([bare])
    notes, seconds, result = [], None, {}
    received = ctx.receiver.stats()["delay"]
    try:
        (result,) = run_children(ctx, [
            ("worker-async-slow", {"mode": "worker", "concurrency": concurrency,
                                   "burst": True, "send_mode": "async"}, None),
        ], timeout=ideal * 5 + 120, progress=lambda: ctx.receiver.stats()["delay"],
            stall_after=max(15.0, 5 * latency_ms / 1000))
        _, seconds = combined([result])
    except (TimeoutError, Stalled) as exc:
        notes.append(f"{exc} after {ctx.receiver.stats()['delay'] - received} of {total} "
                     "requests")
    sent = succeeded_count()
    if sent != total:
        notes.append(f"{sent} of {total} succeeded")
    hwm = (result.get("hwm_kb") or 0) / 1024
    threads = result.get("most_threads")
    notes.append(f"peak RSS {hwm:.0f} MB (target ≤ 300 MB); {threads} threads at most")
    ctx.log(f"  async worker, concurrency {concurrency}: {seconds} s (bare {bare_seconds:.1f} s"
            f", ideal {ideal:g} s), peak RSS {hwm:.0f} MB, {threads} threads")
    return [Row(
        f"{SLOW} ({latency_ms / 1000:g} s each)", "database", ctx.database,
        f"{total} deliveries, concurrency {concurrency}", seconds, "s", bare_seconds,
        f"bare aiohttp, {concurrency} in flight",
        f"≤ {1.3 * ideal:.3g} s (1.3× ideal {ideal:g} s), ≤ 300 MB",
        seconds is not None and sent == total and seconds <= 1.3 * ideal and hwm <= 300,
        note="; ".join(notes),
        data={"ideal": ideal, "succeeded": sent, "hwm_mb": hwm, "most_threads": threads},
    )]


def scenario_async_dead(ctx):
    problem = aiohttp_problem()
    if problem:
        return skipped(ctx, DEAD, problem)
    row = hol_worker(ctx, send_mode="async", concurrency=ctx.sizes.async_dead_concurrency)
    row.scenario = f"{DEAD}: healthy p95 latency"
    return [row]


SCENARIOS = {
    "async-throughput": scenario_async_throughput,
    "async-slow": scenario_async_slow,
    "async-dead": scenario_async_dead,
}
