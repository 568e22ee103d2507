"""The benchmark scenarios 1-5 (6 and 7, the queue backends, are in ``bench/queues.py``).
Each returns ``Row``s: a figure, its baseline from the same run, and the target it is held
to. Nothing here asserts anything: a missed target is a row that says so.

1. ``caller``: what a ``@hook`` call fanning out to N targets costs its caller.
2. ``throughput``: deliveries per second to a fast receiver, against bare client loops.
3. ``slow``: many deliveries to receivers that take their time to answer.
4. ``hol``: healthy deliveries' latency beside a target that times out every time.
5. ``memory``: a sending process's RSS after 10x more deliveries.
"""

import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "djwebhooks.backends.database.DatabaseBackend"
INLINE = "djwebhooks.backends.inline.InlineBackend"
BACKENDS = {"database": DATABASE, "inline": INLINE}
PAYLOAD = {"title": "Benchmark payload", "description": "x" * 120, "tags": ["a", "b", "c"]}


# -- what a scenario reports ------------------------------------------------------------------

@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    backend: str
    database: str
    size: str
    measured: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str = "—"
    met: bool | None = None  # None: no target applies
    higher_is_better: bool = False
    measured_detail: str = ""  # e.g. the p95 beside a median
    baseline_detail: str = ""
    note: str = ""
    data: dict = field(default_factory=dict)  # raw numbers, for the JSON and the chart

    @property
    def ratio(self):
        if self.measured is None or not self.baseline:
            return None
        return self.measured / self.baseline

    def as_dict(self):
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Sizes:
    """How big each scenario is; ``full()`` is what the targets are stated for."""

    fanouts: tuple = (1, 10, 100, 1000)
    repetitions: dict = field(default_factory=lambda: {1: 300, 10: 200, 100: 100, 1000: 30})
    inline_repetitions: dict = field(default_factory=lambda: {1: 100, 10: 30, 100: 5, 1000: 3})
    warmup: int = 5
    inline_warmup: int = 1
    # Throughput in a steady state: 2,000 were 0.4 s of an async worker's work, a tenth of
    # it the start of a run (its listener, first heartbeat, first claims before the rate
    # is known), which the bare loops do not have.
    throughput_deliveries: int = 10_000
    throughput_targets: int = 100
    inline_calls: int = 1000
    slow_deliveries: int = 1000
    slow_concurrency: int = 100
    slow_latency_ms: int = 1000
    inline_slow_targets: int = 10
    hol_rate: float = 2.0  # events per second, each to every target
    hol_seconds: float = 20.0
    hol_targets: int = 10  # one of them times out, in the "with" half
    hol_read_timeout: float = 2.0
    hol_interval: float = 0.1  # the worker's polling interval
    inline_hol_calls: int = 5
    memory_small: int = 10_000
    memory_large: int = 100_000
    memory_targets: int = 100
    # Scenarios 6 and 7, the queue backends (bench/queues.py); 7 takes the sizes of 3.
    queue_deliveries: int = 2000
    queue_targets: int = 100
    queue_processes: int = 2
    queue_threads: int = 4  # per process: the database worker's default concurrency
    queue_interval: float = 0.1  # the polling workers' interval (database worker, db_worker)
    tasks_slow_processes: int = 10
    # Scenario 8, latency (bench/latency.py): single webhooks, each to an idle worker.
    latency_webhooks: int = 500
    latency_spacing: tuple = (0.02, 0.05)  # seconds between commits, from-to
    # Scenarios 9 to 11, the async sending mode (bench/asyncmode.py); 9 takes the sizes of 2.
    async_concurrencies: tuple = (1, 4, 16, 64, 256)
    thread_concurrencies: tuple = (1, 4, 16, 64)
    async_slow_deliveries: int = 2000
    async_slow_concurrency: int = 1000
    async_slow_latency_ms: int = 2000
    async_dead_concurrency: int = 64
    # Scenario 12, the CPU budget (bench/budget.py).
    budget_deliveries: int = 2000

    @classmethod
    def full(cls, scale=1.0):
        sizes = cls()
        if scale == 1.0:
            return sizes

        def scaled(n, least=1):
            return max(least, round(n * scale))

        return replace(
            sizes,
            repetitions={n: scaled(r, 3) for n, r in sizes.repetitions.items()},
            inline_repetitions={n: scaled(r, 2) for n, r in sizes.inline_repetitions.items()},
            throughput_deliveries=scaled(sizes.throughput_deliveries, 100),
            budget_deliveries=scaled(sizes.budget_deliveries, 100),
            inline_calls=scaled(sizes.inline_calls, 50),
            slow_deliveries=scaled(sizes.slow_deliveries, sizes.slow_concurrency),
            hol_seconds=max(2.0, sizes.hol_seconds * scale),
            inline_hol_calls=scaled(sizes.inline_hol_calls, 2),
            memory_small=scaled(sizes.memory_small, 100),
            memory_large=scaled(sizes.memory_large, 1000),
            queue_deliveries=scaled(sizes.queue_deliveries, 100),
            latency_webhooks=scaled(sizes.latency_webhooks, 20),
        )

    @classmethod
    def quick(cls):
        """Tiny: enough to run every code path, in well under a minute."""
        return cls(
            fanouts=(1, 10, 100),
            repetitions={1: 20, 10: 20, 100: 10},
            inline_repetitions={1: 5, 10: 3, 100: 1},
            warmup=2,
            inline_warmup=0,
            throughput_deliveries=60,
            throughput_targets=20,
            inline_calls=30,
            slow_deliveries=30,
            slow_concurrency=10,
            slow_latency_ms=200,
            inline_slow_targets=3,
            hol_rate=5.0,
            hol_seconds=1.0,
            hol_targets=5,
            hol_read_timeout=0.5,
            hol_interval=0.05,
            inline_hol_calls=2,
            memory_small=30,
            memory_large=120,
            memory_targets=10,
            queue_deliveries=60,
            queue_targets=20,
            tasks_slow_processes=2,
            latency_webhooks=20,
            async_concurrencies=(1, 16),
            thread_concurrencies=(4,),
            async_slow_deliveries=40,
            async_slow_concurrency=20,
            async_slow_latency_ms=200,
            async_dead_concurrency=8,
            budget_deliveries=50,
        )

    def scale_memory(self, factor):
        """Scenario 5 alone scaled by ``factor`` (it is the longest by far)."""
        if factor == 1.0:
            return self
        return replace(self, memory_small=max(10, round(self.memory_small * factor)),
                       memory_large=max(100, round(self.memory_large * factor)))


@dataclass
class Context:
    """What every scenario needs: the receiver, the sizes, where to leave logs."""

    receiver: object
    sizes: Sizes
    work_dir: Path
    backends: tuple = ("database", "inline")
    log: object = print
    options: dict = field(default_factory=dict)  # the queue scenarios' (bench/run.py)

    @property
    def classic_backends(self):
        """The backends that scenarios 1-5 measure, of those chosen."""
        return tuple(b for b in self.backends if b in BACKENDS)

    @property
    def database(self):
        return connection.vendor

    def owner(self):
        user, _ = get_user_model().objects.get_or_create(username="bench")
        return user


# -- helpers ----------------------------------------------------------------------------------

def djwebhooks_settings(**overrides):
    """``override_settings`` for ``DJWEBHOOKS``, with ``backend`` as a short name."""
    backend = overrides.pop("backend", "database")
    return override_settings(
        DJWEBHOOKS={**settings.DJWEBHOOKS, "BACKEND": BACKENDS[backend], **overrides}
    )


def reset_tables():
    """Empty dj-webhooks' tables (the schema itself is made afresh once per run)."""
    from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget

    tables = [m._meta.db_table for m in (DeliveryAttempt, Delivery, WebhookTarget)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


def analyze():
    """Give the query planner fresh statistics after loading rows, as autovacuum would."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def make_targets(owner, event, urls, identifiers):
    from djwebhooks.models import WebhookTarget

    targets = [
        WebhookTarget(owner=owner, event=event, target_url=url, identifier=identifier)
        for url, identifier in zip(urls, identifiers, strict=True)
    ]
    WebhookTarget.objects.bulk_create(targets)
    return list(WebhookTarget.objects.filter(event=event, owner=owner).order_by("pk"))


def fan_out(owner, identifier, calls):
    """Commit ``calls`` events, each to every ``bench.fan`` target of ``identifier``."""
    from djwebhooks import send_event

    with djwebhooks_settings(backend="database"):
        for number in range(calls):
            with transaction.atomic():
                send_event("bench.fan", {"id": number, **PAYLOAD}, owner=owner,
                           identifier=identifier)


def median_p95(values):
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return statistics.median(values), p95


def ms(seconds):
    return seconds * 1000


class Child:
    """A ``bench.child`` subprocess; see that module for the protocol.

    With ``argv``, that command instead (a Celery worker), with ``env`` added to its
    environment, in a session of its own so that ``close()`` stops the processes it forks
    too; ``expect()`` reads its stdout as well.
    """

    def __init__(self, ctx, name, config, djwebhooks=None, *, argv=None, env=None):
        environment = dict(os.environ)
        environment["BENCH_DJWEBHOOKS"] = json.dumps(djwebhooks or {})
        environment.update(env or {})
        self.name = name
        self.log_path = ctx.work_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in close())
        self.group = argv is not None
        self.process = subprocess.Popen(
            argv or [sys.executable, "-m", "bench.child", json.dumps(config)], cwd=ROOT,
            env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, start_new_session=self.group,
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def expect(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no {prefix!r} within {timeout:g} s") from None
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.process.wait()}); see "
                                   f"{self.log_path}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def cpu_seconds(self):
        """CPU time used so far by the process and the processes it forked (a Celery
        worker's pool), alive or reaped; None off Linux."""
        return tree_cpu_seconds(self.process.pid)

    def close(self, grace=0.0):
        """Stop the process (``grace`` seconds after SIGTERM, for a warm shutdown, when it
        runs in a session of its own), then SIGKILL what is left of it."""
        if self.group:
            # Only ever the session of a process this benchmark started: it and its forks.
            with contextlib.suppress(ProcessLookupError):
                if grace and self.process.poll() is None:
                    os.killpg(self.process.pid, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(grace)
                os.killpg(self.process.pid, signal.SIGKILL)
        elif self.process.poll() is None:
            self.process.kill()  # only ever a child this benchmark started
        self.process.wait()
        self._log.close()


def tree_cpu_seconds(pid):
    """User and system CPU of ``pid`` and its live children, with the children it reaped,
    from ``/proc`` (None where there is no ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def stat(path):
        with open(path) as file:
            fields = file.read().rsplit(")", 1)[1].split()
        # After the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based.
        return int(fields[1]), sum(int(value) for value in fields[11:15])

    try:
        _, total = stat(f"/proc/{pid}/stat")
        for entry in os.listdir("/proc"):
            if entry.isdigit() and entry != str(pid):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    parent, used = stat(f"/proc/{entry}/stat")
                    if parent == pid:
                        total += used
    except OSError:
        return None
    return total / ticks


class Stalled(Exception):
    """A measured process made no progress for a while; it was stopped."""


def run_children(ctx, specs, timeout, progress=None, stall_after=15.0):
    """Start each ``(name, config, djwebhooks)``, release them together, return results.

    The throughput is taken from the earliest start to the latest finish the children
    report (``time.monotonic`` is one clock for every process on Linux). With ``progress``
    (a callable returning a number that grows as work gets done, such as the receiver's
    request count), children that make no progress for ``stall_after`` seconds are
    stopped and ``Stalled`` is raised, instead of waiting for ``timeout``.
    """
    connections.close_all()  # no connection of ours in the way (SQLite locks, PG slots)
    children = [Child(ctx, name, config, dj) for name, config, dj in specs]
    try:
        for child in children:
            child.expect("ready", 60)
        for child in children:
            child.send("go")
        results = []
        deadline = time.monotonic() + timeout
        last, last_change = (progress() if progress else None), time.monotonic()
        for child in children:
            while True:
                try:
                    results.append(json.loads(child.expect("result", 1.0 if progress else
                                                            deadline - time.monotonic())))
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
                    now, current = time.monotonic(), progress()
                    if current != last:
                        last, last_change = current, now
                    elif now - last_change > stall_after:
                        raise Stalled(f"{child.name} made no progress for {stall_after:g} s; "
                                      "stopped") from None
        return results
    finally:
        for child in children:
            child.close()


def combined(results):
    started = min(r["started"] for r in results)
    finished = max(r["finished"] for r in results)
    processed = sum(r["processed"] for r in results)
    return processed, finished - started


def write_requests(ctx, deliveries, name):
    """Write what the worker would send for ``deliveries`` (URL, headers, body) to a file,
    so the bare loop posts the same bodies."""
    from djwebhooks.senders.orm import DjangoSenderable

    path = ctx.work_dir / f"{name}.jsonl"
    now = int(time.time())
    with open(path, "w") as out:
        for delivery in deliveries:
            sender = DjangoSenderable(delivery)
            body = sender.get_body()
            headers = sender.get_headers(body, now)
            out.write(json.dumps([sender.url, headers, body.decode()]) + "\n")
    return path


def cpu_ms(results, done):
    """CPU time of the measured processes per item done, in ms (their own clocks: the
    receiver's and the database's work not counted)."""
    return 1000 * sum(r.get("cpu_s", 0.0) for r in results) / max(1, done)


def cpu_busy(results, seconds):
    """The share of one core each of the measured processes was busy, on average."""
    return sum(r.get("cpu_s", 0.0) for r in results) / max(seconds, 1e-9) / len(results)


def cpu_use(result, done, seconds):
    """One process's CPU time per item done, and how busy that kept it: a process near
    100 % of one core is bound by its own CPU (the interpreter lock lets its threads use
    one core at a time), and goes faster only by spending less per item."""
    return (f"CPU {1e6 * result['cpu_s'] / max(1, done):.0f} µs per delivery, "
            f"{cpu_busy([result], seconds):.0%} of one core")


def succeeded_count():
    from djwebhooks.models import Delivery

    return Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count()


# -- 1. the caller's cost ---------------------------------------------------------------------

def caller_target_ms(n):
    """≤ 1 ms for one target, ≤ 30 ms for 1,000, linear in between."""
    return 1 + 29 * (n - 1) / 999


def scenario_caller(ctx):
    from djwebhooks import hook
    from djwebhooks.models import Delivery

    @hook(event="bench.fan")
    def fan_hook(number, owner, identifier=""):
        return {"id": number, **PAYLOAD}

    owner = ctx.owner()
    rows, medians = [], {}
    _, headers, body = sample_request(ctx, owner, fan_hook)
    for backend in ctx.classic_backends:
        repetitions = (ctx.sizes.repetitions if backend == "database"
                       else ctx.sizes.inline_repetitions)
        with djwebhooks_settings(backend=backend):
            for n in ctx.sizes.fanouts:
                reset_tables()
                identifier = f"fan{n}"
                urls = [f"{ctx.receiver.url}/ok/{identifier}/t{i}" for i in range(n)]
                targets = make_targets(owner, "bench.fan", urls, [identifier] * n)
                target_ids = [t.pk for t in targets]
                analyze()
                session = bare_session() if backend == "inline" else None
                lib_in, lib_total, base_in, base_total = [], [], [], []
                warmup = ctx.sizes.warmup if backend == "database" else ctx.sizes.inline_warmup
                for rep in range(warmup + repetitions[n]):
                    t0 = time.perf_counter()
                    with transaction.atomic():
                        t1 = time.perf_counter()
                        fan_hook(rep, owner=owner, identifier=identifier)
                        t2 = time.perf_counter()
                    t3 = time.perf_counter()
                    b0 = time.perf_counter()
                    with transaction.atomic():
                        b1 = time.perf_counter()
                        now = timezone.now()
                        Delivery.objects.bulk_create([
                            Delivery(webhook_target_id=pk, event="bench.fan",
                                     payload={"id": rep, **PAYLOAD},
                                     hash_value=f"base_{rep}", next_attempt_at=now)
                            for pk in target_ids
                        ])
                        b2 = time.perf_counter()
                    if session is not None:
                        for url in urls:
                            session.post(url, data=body.encode(), headers=headers,
                                         timeout=(5, 15), allow_redirects=False)
                    b3 = time.perf_counter()
                    if rep >= warmup:
                        lib_in.append(t2 - t1)
                        lib_total.append(t3 - t0)
                        base_in.append(b2 - b1)
                        base_total.append(b3 - b0)
                size = f"{n} target{'s' if n > 1 else ''}, {repetitions[n]} calls"
                if backend == "database":
                    (m, p), (bm, bp) = median_p95(lib_in), median_p95(base_in)
                    medians[n] = (m, bm)
                    target = caller_target_ms(n)
                    rows.append(Row(
                        "1 caller: call in transaction", backend, ctx.database, size,
                        ms(m), "ms", ms(bm), "bare bulk_create", f"≤ {target:.3g} ms",
                        ms(m) <= target, measured_detail=f"p95 {ms(p):.3g}",
                        baseline_detail=f"p95 {ms(bp):.3g}", data={"n": n, "kind": "in_tx"},
                    ))
                (m, p), (bm, bp) = median_p95(lib_total), median_p95(base_total)
                label = ("1 caller: call + commit" if backend == "database"
                         else "1 caller: call + commit (sends inline)")
                rows.append(Row(
                    label, backend, ctx.database, size, ms(m), "ms", ms(bm),
                    "bulk_create + commit" + (" + bare POSTs" if backend == "inline" else ""),
                    measured_detail=f"p95 {ms(p):.3g}", baseline_detail=f"p95 {ms(bp):.3g}",
                    data={"n": n, "kind": "total"},
                ))
                if session is not None:
                    session.close()
                ctx.log(f"  {backend}: {n} targets done")
    if len(medians) >= 3:
        rows.append(scaling_row(ctx, medians))
    rows.extend(caller_query_rows(ctx, fan_hook, owner))
    return rows


def sample_request(ctx, owner, fan_hook):
    """A ``[url, headers, body]`` as the worker would send it, for the inline baseline."""
    reset_tables()
    make_targets(owner, "bench.fan", [f"{ctx.receiver.url}/ok/sample"], ["sample"])
    with djwebhooks_settings(backend="database"):
        (delivery,) = fan_hook(0, owner=owner, identifier="sample")
    path = write_requests(ctx, [delivery], "caller-sample")
    return json.loads(path.read_text())


def scaling_row(ctx, medians):
    """Linear in targets: the cost per added target does not grow with the number of targets."""
    sizes = sorted(medians)
    a, b, c = sizes[-3:]
    slope_low = (medians[b][0] - medians[a][0]) / (b - a)
    slope_high = (medians[c][0] - medians[b][0]) / (c - b)
    return Row(
        "1 caller: cost per added target", "database", ctx.database,
        f"{b}→{c} vs {a}→{b} targets", slope_high * 1e6, "µs/target", slope_low * 1e6,
        f"{a}→{b} targets", "≤ 1.5× (linear)",
        slope_low > 0 and slope_high / slope_low <= 1.5,
        note="median cost in the transaction; equal slopes mean linear",
    )


def caller_query_rows(ctx, fan_hook, owner):
    """How many queries one call makes (and, inline, its commit)."""
    rows = []
    for backend in ctx.classic_backends:
        with djwebhooks_settings(backend=backend):
            for n in (1, max(ctx.sizes.fanouts)):
                identifier = f"fan{n}"
                reset_tables()
                urls = [f"{ctx.receiver.url}/ok/{identifier}/t{i}" for i in range(n)]
                make_targets(owner, "bench.fan", urls, [identifier] * n)
                fan_hook(-1, owner=owner, identifier=identifier)  # warm
                with (CaptureQueriesContext(connection) as total, transaction.atomic(),
                      CaptureQueriesContext(connection) as inside):
                    fan_hook(0, owner=owner, identifier=identifier)
                after_commit = len(total) - len(inside)
                detail = f"{len(inside)} in the transaction (incl. BEGIN/COMMIT)"
                if backend == "inline":
                    detail += f", {after_commit} after commit ({after_commit / n:.3g}/delivery)"
                rows.append(Row(
                    "queries: one call", backend, ctx.database, f"{n} targets",
                    float(len(total)), "queries", measured_detail=detail,
                    data={"queries": [q["sql"][:200] for q in total.captured_queries[:40]]},
                ))
    return rows


def bare_session():
    import requests

    session = requests.Session()
    session.trust_env = False
    return session


# -- 2. throughput ----------------------------------------------------------------------------

def scenario_throughput(ctx):
    from djwebhooks.models import Delivery

    sizes, owner = ctx.sizes, ctx.owner()
    total = sizes.throughput_deliveries
    calls = max(1, total // sizes.throughput_targets)
    total = calls * sizes.throughput_targets
    rows = []

    def load():
        reset_tables()
        urls = [f"{ctx.receiver.url}/ok/fan/t{i}" for i in range(sizes.throughput_targets)]
        make_targets(owner, "bench.fan", urls, ["fan"] * len(urls))
        fan_out(owner, "fan", calls)
        analyze()

    load()
    deliveries = Delivery.objects.select_related("webhook_target__owner").order_by("pk")
    requests_file = write_requests(ctx, deliveries, "throughput")
    half = total // 2
    layouts = [  # label, processes, threads per process
        ("1 thread", 1, 1),
        ("4 threads (default)", 1, 4),
        ("2 processes × 4 threads", 2, 4),
    ]
    bare, prepared, strict = {}, {}, {}
    cpu = {}  # (kind, label) -> CPU ms per request of the measured processes
    busy = {}  # (kind, label) -> the share of one core each process was busy
    for label, processes, threads in layouts:
        parts = [(0, total)] if processes == 1 else [(0, half), (half, total)]
        for kind, rates in (("post", bare), ("prepared", prepared), ("urllib3", strict)):
            results = run_children(ctx, [
                (f"bare-{kind}-{processes}x{threads}-{i}",
                 {"mode": "bare", "requests_file": str(requests_file), "start": start,
                  "stop": stop, "concurrency": threads, "calls": kind}, None)
                for i, (start, stop) in enumerate(parts)
            ], timeout=600)
            done, seconds = combined(results)
            rates[label] = done / seconds
            cpu[kind, label] = cpu_ms(results, done)
            busy[kind, label] = cpu_busy(results, seconds)
            ctx.log(f"  bare ({kind}) {label}: {rates[label]:.0f}/s")
    if "database" in ctx.backends:
        for label, processes, threads in layouts:
            if label != layouts[0][0]:
                load()
            results = run_children(ctx, [
                (f"worker-{processes}x{threads}-{i}",
                 {"mode": "worker", "concurrency": threads, "burst": True, "count": True},
                 None)
                for i in range(processes)
            ], timeout=1200)
            done, seconds = combined(results)
            sent = succeeded_count()
            rate = sent / seconds
            cpu["worker", label] = cpu_ms(results, done)
            busy["worker", label] = cpu_busy(results, seconds)
            counts = {key: sum(r["counts"][key] for r in results) for key in results[0]["counts"]}
            note = (f"per delivery: {counts['statements'] / done:.1f} SQL statements (BEGIN/COMMIT "
                    f"not counted), {counts['claims'] / done:.2f} claims (average batch "
                    f"{counts['claimed'] / max(1, counts['claims']):.1f}), "
                    f"{counts['connects'] / done:.2f} new database connections")
            if sent != total:
                note += f"; only {sent} of {total} succeeded"
            rows.append(Row(
                f"2 throughput: worker, {label}", "database", ctx.database,
                f"{total} deliveries", rate, "deliveries/s", bare[label],
                f"bare requests loop, {label}", "≥ 0.7×", rate / bare[label] >= 0.7,
                higher_is_better=True, note=note,
                data={"seconds": seconds, "handled": done, "counts": counts},
            ))
            rows.append(Row(
                f"2 throughput: worker, {label}, strict baseline", "database", ctx.database,
                f"{total} deliveries", rate, "deliveries/s", strict[label],
                f"bare urllib3 loop (the same calls), {label}", "≥ 0.8×",
                rate / strict[label] >= 0.8, higher_is_better=True,
                note="the urllib3 calls dj-webhooks makes (a pool manager per thread, "
                     "urlopen on the host's pool, the first 4 KiB of the body read), "
                     "without the guarded connections, the deadline, signing or a database; "
                     f"CPU time per delivery {cpu['worker', label]:.3f} ms "
                     f"({busy['worker', label]:.0%} of one core per process), per request "
                     f"of the bare loop {cpu['urllib3', label]:.3f} ms "
                     f"({busy['urllib3', label]:.0%})",
                data={"seconds": seconds, "handled": done,
                      "cpu_ms": cpu["worker", label], "baseline_cpu_ms": cpu["urllib3", label]},
            ))
            rows.append(Row(
                f"2 throughput: worker, {label}, against prepared requests", "database",
                ctx.database, f"{total} deliveries", rate, "deliveries/s", prepared[label],
                f"bare loop of prepared requests (Session.send), {label}", "—", None,
                higher_is_better=True,
                note="the requests calls dj-webhooks made before it sent through urllib3, "
                     "for comparison",
                data={"seconds": seconds, "handled": done},
            ))
            ctx.log(f"  worker {label}: {rate:.0f}/s")
    if "inline" in ctx.backends:
        rows.append(inline_throughput(ctx, owner, bare[layouts[0][0]]))
    return rows


def inline_throughput(ctx, owner, bare_rate):
    sizes = ctx.sizes
    reset_tables()
    targets = sizes.throughput_targets
    urls = [f"{ctx.receiver.url}/ok/one/t{i}" for i in range(targets)]
    make_targets(owner, "bench.one", urls, [f"t{i}" for i in range(targets)])
    analyze()
    (result,) = run_children(ctx, [
        ("inline-throughput", {"mode": "inline", "calls": sizes.inline_calls,
                               "targets": targets}, {"BACKEND": INLINE}),
    ], timeout=1200)
    done, seconds = combined([result])
    sent = succeeded_count()
    rate = sent / seconds
    ctx.log(f"  inline: {rate:.0f}/s")
    return Row(
        "2 throughput: inline, caller's thread", "inline", ctx.database,
        f"{sizes.inline_calls} calls × 1 target", rate, "deliveries/s", bare_rate,
        "bare requests loop, 1 thread", "≥ 0.7×", rate / bare_rate >= 0.7,
        higher_is_better=True,
        note="each call in its own transaction, sent at commit"
        + ("" if sent == sizes.inline_calls else f"; only {sent} succeeded"),
        data={"seconds": seconds},
    )


# -- 3. slow receivers ------------------------------------------------------------------------

def scenario_slow(ctx):
    sizes, owner = ctx.sizes, ctx.owner()
    rows = []
    if "database" in ctx.backends:
        rows.append(slow_worker(ctx, owner, sizes.slow_concurrency, sizes.slow_deliveries))
    if "inline" in ctx.backends:
        rows.append(inline_slow(ctx, owner, sizes.slow_latency_ms / 1000))
    return rows


def free_connections():
    """Connections the PostgreSQL server has left for new clients (None elsewhere)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('max_connections')::int - count(*) "
                       "FROM pg_stat_activity WHERE backend_type = 'client backend'")
        free = cursor.fetchone()[0]
    return free + 1  # this benchmark's own connection is closed while a worker runs


def slow_worker(ctx, owner, concurrency, total):
    from djwebhooks.models import Delivery

    sizes = ctx.sizes
    latency = sizes.slow_latency_ms / 1000
    targets = concurrency
    calls = max(1, total // targets)
    total = calls * targets
    ideal = total / concurrency * latency
    reset_tables()
    urls = [f"{ctx.receiver.url}/delay/{sizes.slow_latency_ms}/t{i}" for i in range(targets)]
    make_targets(owner, "bench.fan", urls, ["slow"] * targets)
    fan_out(owner, "slow", calls)
    analyze()
    free = free_connections()
    deliveries = Delivery.objects.select_related("webhook_target__owner").order_by("pk")
    requests_file = write_requests(ctx, deliveries, f"slow-{concurrency}")
    (bare,) = run_children(ctx, [
        (f"bare-slow-{concurrency}", {"mode": "bare", "requests_file": str(requests_file),
                                      "concurrency": concurrency}, None),
    ], timeout=ideal * 5 + 60)
    _, bare_seconds = combined([bare])
    name = f"worker-slow-{concurrency}"
    notes = []
    received = ctx.receiver.stats()["delay"]
    try:
        (result,) = run_children(ctx, [
            (name, {"mode": "worker", "concurrency": concurrency, "burst": True}, None),
        ], timeout=ideal * 5 + 120, progress=lambda: ctx.receiver.stats()["delay"],
            stall_after=max(15.0, 5 * latency))
        _, seconds = combined([result])
    except (TimeoutError, Stalled) as exc:
        seconds = None
        notes.append(f"{exc} after {ctx.receiver.stats()['delay'] - received} of {total} "
                     "requests")
    sent = succeeded_count()
    if sent != total:
        notes.append(f"{sent} of {total} succeeded")
    log = (ctx.work_dir / f"{name}.log").read_text()
    if "too many clients" in log:
        notes.append(f"the worker ran out of database connections (PostgreSQL: \"too many "
                     f"clients\"; {free} were free before it started); see {name}.log")
    row = Row(
        f"3 slow receivers ({latency:g} s each)", "database", ctx.database,
        f"{total} deliveries, concurrency {concurrency}", seconds, "s", bare_seconds,
        f"bare loop, {concurrency} threads", f"≤ {1.3 * ideal:.3g} s (1.3× ideal {ideal:g} s)",
        seconds is not None and sent == total and seconds <= 1.3 * ideal,
        note="; ".join(notes), data={"ideal": ideal, "succeeded": sent},
    )
    ctx.log(f"  worker, concurrency {concurrency}: {seconds} s (bare {bare_seconds:.1f} s)")
    return row


def inline_slow(ctx, owner, latency):
    from djwebhooks import send_event

    n = ctx.sizes.inline_slow_targets
    reset_tables()
    urls = [f"{ctx.receiver.url}/delay/{ctx.sizes.slow_latency_ms}/t{i}" for i in range(n)]
    make_targets(owner, "bench.fan", urls, ["slow"] * n)
    body = json.dumps({"id": 0, **PAYLOAD}).encode()
    session = bare_session()
    started = time.perf_counter()
    for url in urls:
        session.post(url, data=body, timeout=(5, 15))
    bare_seconds = time.perf_counter() - started
    session.close()
    with djwebhooks_settings(backend="inline"):
        started = time.perf_counter()
        with transaction.atomic():
            send_event("bench.fan", {"id": 0, **PAYLOAD}, owner=owner, identifier="slow")
        seconds = time.perf_counter() - started
    return Row(
        f"3 slow receivers ({latency:g} s each)", "inline", ctx.database,
        f"1 call × {n} targets", seconds, "s", bare_seconds, "bare loop, 1 thread",
        "— (inline sends one at a time)",
        note=f"the caller waits for every receiver: ideal with concurrency {latency:g} s",
    )


# -- 4. head-of-line blocking -----------------------------------------------------------------

def scenario_hol(ctx):
    rows = []
    if "database" in ctx.backends:
        rows.append(hol_worker(ctx))
    if "inline" in ctx.backends:
        rows.append(hol_inline(ctx))
    return rows


def hol_targets(ctx, owner, bad, identifier):
    """``hol_targets`` targets that note arrivals; with ``bad``, the middle one never answers.
    Returns the healthy targets' ids."""
    n = ctx.sizes.hol_targets
    urls = [f"{ctx.receiver.url}/log/{identifier}/t{i}" for i in range(n)]
    if bad:
        urls[n // 2] = f"{ctx.receiver.url}/hang/{identifier}/t{n // 2}"
    targets = make_targets(owner, "bench.fan", urls, [identifier] * n)
    ctx.receiver.arrivals()  # forget earlier ones
    return [t.pk for t in targets if "/hang/" not in t.target_url]


def healthy_latencies(ctx, healthy_ids):
    """Seconds from each healthy delivery's creation to (1) its request reaching the
    receiver and (2) its first attempt being recorded; and how many never arrived.

    Deliveries not there yet count with their age now: a lower bound.
    """
    from urllib.parse import urlsplit

    from djwebhooks.models import Delivery, DeliveryAttempt

    arrived = {}
    for path, webhook_id, at in ctx.receiver.arrivals():
        arrived.setdefault((path, webhook_id), at)
    now = time.time()
    deliveries = Delivery.objects.filter(webhook_target_id__in=healthy_ids).values_list(
        "hash_value", "webhook_target__target_url", "created")
    delivered, missing = [], 0
    for message_id, url, created in deliveries:
        at = arrived.get((urlsplit(url).path, message_id))
        missing += at is None
        delivered.append((at or now) - created.timestamp())
    recorded = [
        (attempted - created).total_seconds()
        for attempted, created in DeliveryAttempt.objects.filter(
            attempt=1, delivery__webhook_target_id__in=healthy_ids
        ).values_list("created", "delivery__created")
    ]
    return delivered, recorded, missing


def hol_worker(ctx, send_mode="threads", concurrency=4):
    from djwebhooks import send_event
    from djwebhooks.models import Delivery

    sizes, owner = ctx.sizes, ctx.owner()
    timeouts = {"READ_TIMEOUT": sizes.hol_read_timeout,
                "TOTAL_TIMEOUT": sizes.hol_read_timeout + 1}
    delivered, recorded, missing = {}, {}, {}
    for bad in (False, True):
        reset_tables()
        healthy = hol_targets(ctx, owner, bad, "hol")
        analyze()
        connections.close_all()
        child = Child(ctx, f"worker-hol-{'bad' if bad else 'good'}",
                      {"mode": "worker", "concurrency": concurrency, "burst": False,
                       "interval": sizes.hol_interval, "send_mode": send_mode},
                      {"BACKEND": DATABASE, **timeouts})
        try:
            child.expect("ready", 60)
            child.send("go")
            events = round(sizes.hol_rate * sizes.hol_seconds)
            started = time.monotonic()
            with djwebhooks_settings(backend="database", **timeouts):
                for number in range(events):
                    time.sleep(max(0.0, started + number / sizes.hol_rate - time.monotonic()))
                    with transaction.atomic():
                        send_event("bench.fan", {"id": number, **PAYLOAD}, owner=owner,
                                   identifier="hol")
            deadline = time.monotonic() + 4 * sizes.hol_seconds + 60
            pending = Delivery.objects.filter(webhook_target_id__in=healthy, attempt=0)
            while pending.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            times, stored, missing[bad] = healthy_latencies(ctx, healthy)
            child.send("stop")
            child.expect("result", sizes.hol_read_timeout * 3 + 30)
        finally:
            child.close()
        delivered[bad], recorded[bad] = median_p95(times)[1], median_p95(stored)[1]
        ctx.log(f"  worker, {'with' if bad else 'without'} the bad target: p95 "
                f"{delivered[bad]:.3f} s to the receiver, {recorded[bad]:.3f} s recorded")
    note = (f"latency to the receiver; recorded as attempted in the database, p95 "
            f"{recorded[True]:.3g} s vs {recorded[False]:.3g} s; worker {send_mode}, "
            f"concurrency {concurrency}, "
            f"polling every {sizes.hol_interval:g} s")
    if missing[True] or missing[False]:
        note += f"; {missing[True] + missing[False]} healthy deliveries never arrived"
    return Row(
        "4 head-of-line: healthy p95 latency", "database", ctx.database,
        f"{sizes.hol_rate:g} events/s × {sizes.hol_seconds:g} s to {sizes.hol_targets} targets, "
        f"1 times out ({sizes.hol_read_timeout:g} s)",
        delivered[True], "s", delivered[False], "same load, no bad target", "≤ 1.2×",
        delivered[True] <= 1.2 * delivered[False], note=note,
        data={"recorded_p95": recorded},
    )


def hol_inline(ctx):
    from djwebhooks import send_event

    sizes, owner = ctx.sizes, ctx.owner()
    timeouts = {"READ_TIMEOUT": sizes.hol_read_timeout,
                "TOTAL_TIMEOUT": sizes.hol_read_timeout + 1}
    delivered, recorded = {}, {}
    for bad in (False, True):
        reset_tables()
        healthy = hol_targets(ctx, owner, bad, "hol")
        with djwebhooks_settings(backend="inline", **timeouts):
            for number in range(sizes.inline_hol_calls):
                with transaction.atomic():
                    send_event("bench.fan", {"id": number, **PAYLOAD}, owner=owner,
                               identifier="hol")
        times, stored, _ = healthy_latencies(ctx, healthy)
        delivered[bad], recorded[bad] = median_p95(times)[1], median_p95(stored)[1]
    return Row(
        "4 head-of-line: healthy p95 latency", "inline", ctx.database,
        f"{sizes.inline_hol_calls} calls × {sizes.hol_targets} targets, 1 times out "
        f"({sizes.hol_read_timeout:g} s)",
        delivered[True], "s", delivered[False], "same calls, no bad target", "≤ 2×",
        delivered[True] <= 2 * delivered[False],
        note=(f"latency to the receiver (recorded in the database: p95 {recorded[True]:.3g} s "
              f"vs {recorded[False]:.3g} s); a call sends to its targets one after another, "
              "in id order, and the bad one is in the middle"),
        data={"recorded_p95": recorded},
    )


# -- 5. memory --------------------------------------------------------------------------------

def scenario_memory(ctx):
    sizes, owner = ctx.sizes, ctx.owner()
    small, large = sizes.memory_small, sizes.memory_large
    rows = []
    for backend in ctx.classic_backends:
        reset_tables()
        n = sizes.memory_targets
        if backend == "database":
            urls = [f"{ctx.receiver.url}/ok/mem/t{i}" for i in range(n)]
            make_targets(owner, "bench.fan", urls, ["mem"] * n)
            fan_out(owner, "mem", -(-large // n))
            analyze()
            spec = ("worker-memory", {"mode": "worker", "concurrency": 4, "burst": True,
                                      "rss_at": [small, large]}, None)
        else:
            urls = [f"{ctx.receiver.url}/ok/one/t{i}" for i in range(n)]
            make_targets(owner, "bench.one", urls, [f"t{i}" for i in range(n)])
            analyze()
            spec = ("inline-memory", {"mode": "inline", "calls": large, "targets": n,
                                      "rss_at": [small, large]}, {"BACKEND": INLINE})
        (result,) = run_children(ctx, [spec], timeout=3600)
        rss = result["rss_kb"]
        at_small, at_large = rss.get(str(small)), rss.get(str(large))
        measured = at_large / 1024 if at_large else None
        baseline = at_small / 1024 if at_small else None
        ratio = measured / baseline if measured and baseline else None
        rows.append(Row(
            "5 memory: RSS of the sending process", backend, ctx.database,
            f"{large:,} vs {small:,} deliveries", measured, "MB", baseline,
            f"RSS after {small:,}", "≤ 1.2×", ratio is not None and ratio <= 1.2,
            note=("worker, concurrency 4" if backend == "database"
                  else "inline: one call per delivery, in one process"),
            data={"hwm_kb": result.get("hwm_kb"), "processed": result["processed"]},
        ))
        ctx.log(f"  {backend}: {baseline} MB -> {measured} MB")
    return rows


# -- statements per delivery in the worker path ----------------------------------------------

def worker_query_rows(ctx):
    """SQL statements per delivery of a real ``Worker`` run, counted on every thread."""
    from bench.child import Counters
    from djwebhooks.worker import Worker

    owner = ctx.owner()
    rows = []
    for concurrency in (1, 4):
        reset_tables()
        urls = [f"{ctx.receiver.url}/ok/q/t{i}" for i in range(20)]
        make_targets(owner, "bench.fan", urls, ["q"] * len(urls))
        fan_out(owner, "q", 5)
        with djwebhooks_settings(backend="database"), Counters() as counters, \
                CaptureQueriesContext(connection) as captured:
            handled = Worker(concurrency=concurrency, burst=True, interval=0.05).run()
        counts = counters.counts
        rows.append(Row(
            "queries: worker, per delivery", "database", ctx.database,
            f"{handled} deliveries, concurrency {concurrency}", counts["statements"] / handled,
            "statements",
            measured_detail=f"BEGIN/COMMIT not counted; {counts['claims'] / handled:.2f} claims "
                            f"(average batch {counts['claimed'] / max(1, counts['claims']):.1f})"
                            f", {counts['connects'] / handled:.2f} new database connections",
            data={"counts": counts,
                  "main_thread_sql": [q["sql"][:200] for q in captured.captured_queries[:30]]},
        ))
    return rows


SCENARIOS = {
    "caller": scenario_caller,
    "throughput": scenario_throughput,
    "slow": scenario_slow,
    "hol": scenario_hol,
    "memory": scenario_memory,
}
