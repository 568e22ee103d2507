"""Scenarios 6 and 7: the queue backends (Celery, Django Tasks) beside the database worker.

6. ``queue-throughput``: deliveries per second to a fast receiver with two worker
   processes: Celery (one worker of ``-P prefork -c 2``, or two of ``-P threads -c 4``),
   django-tasks-db's ``db_worker`` (two processes), against the database worker
   (``webhooks_worker``: two processes of ``--concurrency 4``) and the bare requests loop
   (two processes of one thread, and of four).
7. ``queue-slow``: 1,000 deliveries to receivers that take 1 s each, at concurrency 100:
   Celery ``-P threads -c 100`` in one process, the database worker at
   ``--concurrency 100``; and ``db_worker``, which runs one task at a time per process, with
   as many processes as ``--tasks-slow-processes``.

Each figure runs from the commit that writes the deliveries (and, on commit, hands them to
the queue) to the moment the last of them is recorded as succeeded (the database's clock on
its attempt row), with the workers started and idle beforehand. The workers need a database
that processes share (PostgreSQL), and Celery a broker: without them, or without the
packages, the scenario prints ``skipped: <reason>`` and reports that instead of figures.
"""

import inspect
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from importlib.util import find_spec

from django.conf import settings
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import override_settings

from bench.scenarios import (
    PAYLOAD,
    Child,
    Row,
    analyze,
    combined,
    fan_out,
    free_connections,
    make_targets,
    reset_tables,
    run_children,
    write_requests,
)

CELERY = "djwebhooks.backends.celery.CeleryBackend"
TASKS = "djwebhooks.backends.tasks.TasksBackend"
DATABASE = "djwebhooks.backends.database.DatabaseBackend"
BROKER_URLS = {
    "redis": "redis://127.0.0.1:6379/7",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
THROUGHPUT = "6 queue throughput"
SLOW = "7 queue slow receivers"


# -- what can run here ------------------------------------------------------------------------

def shared_database_problem(ctx):
    if ctx.database != "postgresql":
        return (f"needs PostgreSQL: the worker processes share the database (this run is on "
                f"{ctx.database}; use --database-url postgres://...)")
    return None


def celery_problem():
    if find_spec("celery") is None:
        return 'Celery is not installed (pip install "dj-webhooks[celery]" redis)'
    try:
        import bench.celery_app  # noqa: F401
        import djwebhooks.backends.celery  # noqa: F401
    except Exception as exc:  # an import error, or a Celery app that cannot be made
        return f"the Celery backend cannot be imported ({type(exc).__name__}: {exc})"
    return None


def broker_problem(name, url):
    if name == "redis" and find_spec("redis") is None:
        return "the redis package is not installed (pip install redis)"
    from bench.celery_app import app

    try:
        with app.connection_for_write(url) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return f"{name} is not answering at {url} ({type(exc).__name__}: {exc})"
    return None


def tasks_problem():
    if not getattr(settings, "TASKS_INSTALLED", False):
        return ("django-tasks-db is not installed (nor, before Django 6.0, django-tasks): "
                "pip install django-tasks-db")
    try:
        from djwebhooks.backends.tasks import TasksBackend  # noqa: F401
    except ImportError as exc:
        return (f"{TASKS} cannot be imported ({exc}): this dj-webhooks has no Tasks "
                "backend")
    return None


def tasks_batch_sizes(ctx):
    """The batch sizes to try with the Tasks backend: None (its default) when it takes no
    ``batch_size`` option."""
    from djwebhooks.backends.tasks import TasksBackend

    if "batch_size" in inspect.signature(TasksBackend).parameters:
        return ctx.options["batch_sizes"]
    return [None]


def skipped(ctx, scenario, backend, reason):
    ctx.log(f"  {backend}: skipped: {reason}")
    return Row(scenario, backend, ctx.database, "skipped", None, "", note=f"skipped: {reason}")


# -- the workers -------------------------------------------------------------------------------

def use_broker(url):
    """Point this process's Celery app (the producer that ``enqueue`` sends with) at ``url``."""
    from bench.celery_app import app

    app.conf.broker_url = url
    app._pool = None  # kombu keeps a connection pool per broker; the next send takes url's
    app.amqp._producer_pool = None


def delete_queue(url, name):
    """Delete the run's queue (on Redis, with the binding tables kombu keeps for it)."""
    from bench.celery_app import app

    try:
        with app.connection_for_write(url) as conn:
            conn.default_channel.queue_delete(name)
        if url.startswith("redis"):
            import redis

            with redis.Redis.from_url(url) as client:
                client.delete(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
    except Exception as exc:  # left behind, harmlessly: a queue no one will read again
        print(f"  (could not delete the queue {name}: {exc})", flush=True)


@dataclass
class CeleryLayout:
    """How the Celery workers run: ``workers`` processes of ``-P pool -c concurrency``."""

    pool: str
    workers: int
    concurrency: int

    @property
    def label(self):
        if self.pool == "prefork":
            one = f"prefork -c {self.concurrency}"
            return one if self.workers == 1 else f"{self.workers} workers × {one}"
        one = f"-P {self.pool} -c {self.concurrency}"
        return f"{self.workers} process{'es' if self.workers > 1 else ''} × {one}"

    @property
    def processes(self):
        """The processes that run tasks (a prefork worker's pool processes)."""
        return self.workers * (self.concurrency if self.pool == "prefork" else 1)


def celery_workers(ctx, name, layout, *, broker, queue_name, batch_size, prefetch, db_reuse,
                   count_dir=None):
    """Start the Celery workers of ``layout`` (they print ``bench-celery-ready``), counting
    statements into ``count_dir`` when given."""
    djwebhooks = {"BACKEND": CELERY,
                  "BACKEND_OPTIONS": {"queue": queue_name, "batch_size": batch_size}}
    env = {"BENCH_CELERY_BROKER": broker, "BENCH_CELERY_POOL": layout.pool,
           "BENCH_COUNT_DIR": str(count_dir or ""),
           "BENCH_CELERY_DB_REUSE_MAX": str(db_reuse or "")}
    if ctx.options.get("profile"):
        profile_dir = ctx.work_dir / f"{name}-profile"
        profile_dir.mkdir(exist_ok=True)
        env["BENCH_PROFILE_DIR"] = str(profile_dir)
    workers = []
    for index in range(layout.workers):
        node = f"{name}-{index}-{uuid.uuid4().hex[:6]}@%h"
        argv = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker",
                "-Q", queue_name, "-P", layout.pool, "-c", str(layout.concurrency),
                "--prefetch-multiplier", str(prefetch), "-n", node, "--without-gossip",
                "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
        workers.append(Child(ctx, f"{name}-{index}", None, djwebhooks, argv=argv, env=env))
    return workers


def read_counts(count_dir):
    total = {}
    for path in sorted(count_dir.glob("counts-*.json")):
        for key, value in json.loads(path.read_text()).items():
            total[key] = total.get(key, 0) + value
    return total


def per_delivery(counts, done):
    """Statements, claims and new connections per delivery, as a phrase."""
    if not counts or not done:
        return ""
    return (f"per delivery: {counts['statements'] / done:.1f} SQL statements (BEGIN/COMMIT "
            f"not counted), {counts['connects'] / done:.2f} new database connections, "
            f"{counts['claims'] / done:.2f} claims")


# -- one measured run --------------------------------------------------------------------------

@dataclass
class Delivered:
    """What a run from commit to the last success recorded measured."""

    seconds: float | None  # None: not every delivery succeeded
    handover: float  # the commit, with the on-commit hand-over to the queue
    succeeded: int
    requests: int  # requests the receiver got meanwhile (more than deliveries: sent twice)
    notes: list = field(default_factory=list)
    results: list = field(default_factory=list)  # bench.child results of the workers
    cpu: float | None = None  # CPU seconds the workers' processes used, from the commit on


def load_targets(owner, urls):
    reset_tables()
    reset_tasks()
    make_targets(owner, "bench.fan", urls, ["queue"] * len(urls))
    analyze()


def reset_tasks():
    if not getattr(settings, "TASKS_INSTALLED", False):
        return
    from django_tasks_db.models import DBTaskResult

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {DBTaskResult._meta.db_table}")


def deliver(ctx, owner, workers, *, overrides, calls, expected, kind, timeout,
            stall_after=20.0):
    """Start ``workers`` (a callable returning ``Child``s, started), wait until each is
    ready, commit ``calls`` events to every target in one transaction under ``overrides``
    (``DJWEBHOOKS``), and wait until the receiver has had ``expected`` requests on ``kind``
    and the database records ``expected`` successes."""
    from djwebhooks import send_event

    connections.close_all()
    children, notes, results = [], [], []
    cpu = None
    try:
        children = workers()
        for child in children:
            child.expect("bench-celery-ready" if child.group else "ready", 120)
        for child in children:
            if not child.group:
                child.send("go")
        time.sleep(0.2)  # let every worker reach its first poll of the queue
        cpu_before = [child.cpu_seconds() for child in children]
        before = ctx.receiver.stats()[kind]
        with override_settings(DJWEBHOOKS={**settings.DJWEBHOOKS, **overrides}):
            with transaction.atomic():
                for number in range(calls):
                    send_event("bench.fan", {"id": number, **PAYLOAD}, owner=owner,
                               identifier="queue")
                started = time.time()
            handover = time.time() - started
        # No connection of ours while they work: Celery threads need one each.
        connections.close_all()
        deadline = time.monotonic() + timeout
        last, last_change = 0, time.monotonic()
        while True:
            got = ctx.receiver.stats()[kind] - before
            now = time.monotonic()
            if got >= expected:
                break
            if got != last:
                last, last_change = got, now
            elif now - last_change > stall_after:
                notes.append(f"stalled: no request for {stall_after:g} s after {got} of "
                             f"{expected}")
                break
            if now > deadline:
                notes.append(f"timed out after {timeout:g} s with {got} of {expected} sent")
                break
            time.sleep(0.02)
        succeeded, finished = wait_for_records(expected, 30)
        requests = ctx.receiver.stats()[kind] - before
        used = [child.cpu_seconds() for child in children]
        if None not in used and None not in cpu_before:
            cpu = sum(used) - sum(cpu_before)
    finally:
        for child in children:
            if child.group:
                child.close(grace=15)  # a warm shutdown: the processes write their counts
            else:
                try:
                    child.send("stop")
                    results.append(json.loads(child.expect("result", 60)))
                except (OSError, TimeoutError, RuntimeError) as exc:
                    notes.append(f"{child.name} did not stop cleanly: {exc}")
                child.close()
    if succeeded != expected:
        notes.append(f"{succeeded} of {expected} succeeded"
                     + (f", the last {finished - started:.3g} s after the commit" if finished
                        and succeeded else "")
                     + "; the others wait for webhooks_sweep")
    if requests > expected:
        notes.append(f"{requests - expected} requests more than deliveries")
    for child in children:
        log = child.log_path.read_text()
        if "too many clients" in log:
            notes.append(f"PostgreSQL refused connections (\"too many clients\"); see "
                         f"{child.log_path.name}")
        elif "Traceback" in log:
            notes.append(f"errors in {child.log_path.name}")
    seconds = finished - started if succeeded == expected and finished else None
    return Delivered(seconds, handover, succeeded, requests, notes, results, cpu)


def wait_for_records(expected, timeout):
    """Wait for ``expected`` successes; return ``(successes, time.time() of the last one
    recorded)``. Retries a connection PostgreSQL refuses while the workers hold them all."""
    from django.db.models import Max

    from djwebhooks.models import Delivery, DeliveryAttempt

    deadline = time.monotonic() + timeout
    succeeded = 0
    while True:
        try:
            succeeded = Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count()
            if succeeded >= expected or time.monotonic() > deadline:
                last = DeliveryAttempt.objects.filter(success=True).aggregate(
                    last=Max("created"))["last"]
                return succeeded, last.timestamp() if last else None
        except OperationalError:
            connections.close_all()
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


# -- 6. throughput -----------------------------------------------------------------------------

@dataclass
class Measured:
    """One measured run of scenario 6."""

    rate: float | None  # deliveries (or requests) per second; None: it did not finish
    handover: float | None = None  # the commit (or the sends) handing the work to the queue
    counts: dict = field(default_factory=dict)  # the workers' statements and connections
    notes: list = field(default_factory=list)
    cpu: float | None = None  # the workers' CPU seconds for the run


def median_of(runs):
    """The median rate of ``runs`` (Measured), those that finished; None if none did."""
    rates = sorted(m.rate for m in runs if m.rate is not None)
    return statistics.median(rates) if rates else None


def spread(runs):
    """``"median of 3 runs: 410-450"``, or nothing for a single run."""
    rates = sorted(m.rate for m in runs if m.rate is not None)
    if len(runs) < 2:
        return ""
    text = f"median of {len(runs)} runs"
    if rates:
        text += f", {rates[0]:.0f}–{rates[-1]:.0f}"
    if len(rates) < len(runs):
        text += f", {len(runs) - len(rates)} did not finish"
    return text


def run_notes(runs):
    """The notes of every run, each once."""
    return list(dict.fromkeys(note for m in runs for note in m.notes))


def scenario_queue_throughput(ctx):
    wanted = [name for name in ("celery", "tasks") if name in ctx.backends]
    problem = shared_database_problem(ctx)
    if problem:
        return [skipped(ctx, THROUGHPUT, name, problem) for name in wanted]
    sizes, owner, options = ctx.sizes, ctx.owner(), ctx.options
    targets = sizes.queue_targets
    calls = max(1, sizes.queue_deliveries // targets)
    total = calls * targets
    processes, threads = sizes.queue_processes, sizes.queue_threads
    urls = [f"{ctx.receiver.url}/ok/queue/t{i}" for i in range(targets)]
    rows = []

    # What the workers will send (the same bodies and headers), for the bare baselines.
    from djwebhooks.models import Delivery

    load_targets(owner, urls)
    fan_out(owner, "queue", calls)
    deliveries = Delivery.objects.select_related("webhook_target__owner").order_by("pk")
    requests_file = write_requests(ctx, deliveries, "queue-throughput")

    # What to measure, in the order of one round; every round measures each once, so that
    # other work on the machine weighs on all of them alike.
    plan = {}  # key -> (function returning a Measured)
    for per_process in sorted({1, threads}):
        plan[("bare", per_process)] = partial(bare_run, ctx, requests_file, total,
                                              per_process)
    plan[("database",)] = partial(database_run, ctx, owner, urls, calls, total)
    layouts = {"prefork": CeleryLayout("prefork", 1, processes),
               "threads": CeleryLayout("threads", processes, threads)}
    celery_skips = []
    if "celery" in wanted:
        problem = celery_problem()
        brokers = []
        if problem:
            celery_skips.append(problem)
        else:
            for broker in options["brokers"]:
                url = options["broker_urls"][broker]
                problem = broker_problem(broker, url)
                if problem:
                    celery_skips.append(problem)
                else:
                    brokers.append((broker, url))
        for broker, url in brokers:
            for pool in options["pools"]:
                for batch_size in options["batch_sizes"]:
                    for prefetch in options["prefetch"]:
                        common = {"broker": broker, "url": url, "layout": layouts[pool],
                                  "batch_size": batch_size, "prefetch": prefetch}
                        plan[("celery-bare", broker, pool, batch_size, prefetch)] = partial(
                            celery_bare_run, ctx, requests_file, **common)
                        for db_reuse in options["db_reuse"]:
                            plan[("celery", broker, pool, batch_size, prefetch, db_reuse)] = \
                                partial(celery_run, ctx, owner, urls, calls, total,
                                        db_reuse=db_reuse, **common)
    tasks_skip = None
    if "tasks" in wanted:
        tasks_skip = tasks_problem()
        if not tasks_skip:
            for batch_size in tasks_batch_sizes(ctx):
                plan[("tasks", batch_size)] = partial(tasks_run, ctx, owner, urls, calls,
                                                      total, batch_size)

    runs = {key: [] for key in plan}
    for round_number in range(options.get("repeat", 1)):
        if options.get("repeat", 1) > 1:
            ctx.log(f"  round {round_number + 1} of {options['repeat']}")
        for key, measure in plan.items():
            measured = measure()
            runs[key].append(measured)
            ctx.log(f"    {describe(key, layouts)}: {rate_text(measured.rate)}")

    bare = {key[1]: median_of(runs[key]) for key in plan if key[0] == "bare"}
    database = median_of(runs[("database",)])

    def versus_bare(rate):
        return ", ".join(f"{rate / bare[n]:.2f}× the bare loop of {processes} × {n}"
                         for n in sorted(bare) if bare[n])

    database_runs = runs[("database",)]
    database_label = f"database worker, {processes} processes × --concurrency {threads}"
    rows.append(Row(
        f"{THROUGHPUT}: {database_label}", "database", ctx.database, f"{total} deliveries",
        database, "deliveries/s", bare[threads],
        f"bare requests loop, {processes} × {threads} threads",
        higher_is_better=True, measured_detail=spread(database_runs),
        note=join([f"polling every {sizes.queue_interval:g} s; from the commit to the last "
                   "success recorded", versus_bare(database) if database else "",
                   cpu_text(database_runs, total),
                   per_delivery(merged_counts(database_runs), total * len(database_runs)),
                   *run_notes(database_runs)]),
        data={"rates": [m.rate for m in database_runs]},
    ))
    for problem in celery_skips:
        rows.append(skipped(ctx, THROUGHPUT, "celery", problem))
    for key in plan:
        if key[0] == "celery-bare":
            rows.append(celery_bare_row(ctx, key, layouts, runs[key], bare, total))
        elif key[0] == "celery":
            ceiling = median_of(runs[("celery-bare", *key[1:5])])
            rows.append(celery_row(ctx, key, layouts, runs[key], total, database,
                                   database_label, versus_bare, ceiling))
        elif key[0] == "tasks":
            rows.append(tasks_row(ctx, key, runs[key], total, database, database_label,
                                  versus_bare))
    if tasks_skip:
        rows.append(skipped(ctx, THROUGHPUT, "tasks", tasks_skip))
    return rows


def cpu_text(runs, done):
    """The workers' CPU per delivery, median over ``runs``."""
    values = sorted(m.cpu / done for m in runs if m.cpu is not None and done)
    if not values:
        return ""
    return f"workers' CPU {statistics.median(values) * 1000:.2f} ms per delivery"


def join(notes):
    return "; ".join(note for note in notes if note)


def merged_counts(runs):
    counts = {}
    for measured in runs:
        for name, value in measured.counts.items():
            counts[name] = counts.get(name, 0) + value
    return counts


def describe(key, layouts):
    kind = key[0]
    if kind == "bare":
        return f"bare requests loop, 2 processes × {key[1]}"
    if kind == "database":
        return "database worker"
    if kind == "celery-bare":
        _, broker, pool, batch_size, prefetch = key
        return (f"Celery {layouts[pool].label}, bare task, {broker}, {batch_size} per task, "
                f"prefetch ×{prefetch}")
    if kind == "celery":
        _, broker, pool, batch_size, prefetch, db_reuse = key
        return (f"Celery {layouts[pool].label}, "
                f"{celery_settings_text(broker, batch_size, prefetch, db_reuse)}")
    return f"Tasks, db_worker, batch_size {key[1]}"


def rate_text(rate):
    return "did not finish" if rate is None else f"{rate:.0f}/s"


def bare_run(ctx, requests_file, total, per_process):
    processes = ctx.sizes.queue_processes
    parts = [(total * i // processes, total * (i + 1) // processes) for i in range(processes)]
    results = run_children(ctx, [
        (f"bare-queue-{processes}x{per_process}-{i}",
         {"mode": "bare", "requests_file": str(requests_file), "start": start, "stop": stop,
          "concurrency": per_process}, None)
        for i, (start, stop) in enumerate(parts)
    ], timeout=600)
    done, seconds = combined(results)
    return Measured(done / seconds)


def database_run(ctx, owner, urls, calls, total):
    """The database worker, measured as the queues are: running before the commit."""
    sizes = ctx.sizes
    load_targets(owner, urls)
    run = deliver(ctx, owner, lambda: [
        Child(ctx, f"queue-worker-{i}", {"mode": "worker", "concurrency": sizes.queue_threads,
                                         "burst": False, "interval": sizes.queue_interval,
                                         "count": True}, {"BACKEND": DATABASE})
        for i in range(sizes.queue_processes)
    ], overrides={"BACKEND": DATABASE}, calls=calls, expected=total, kind="ok", timeout=600)
    return Measured(total / run.seconds if run.seconds else None, run.handover,
                    sum_counts(run.results), run.notes, run.cpu)


def sum_counts(results):
    counts = {}
    for result in results:
        for key, value in (result.get("counts") or {}).items():
            counts[key] = counts.get(key, 0) + value
    return counts


def celery_settings_text(broker, batch_size, prefetch, db_reuse):
    reuse = (f"CELERY_DB_REUSE_MAX {db_reuse}" if db_reuse
             else "a new database connection per task (Celery's default)")
    return f"{broker}, batch_size {batch_size}, prefetch ×{prefetch}, {reuse}"


def celery_run(ctx, owner, urls, calls, total, *, broker, url, layout, batch_size, prefetch,
               db_reuse):
    queue_name = f"djwebhooks-bench-{uuid.uuid4().hex[:8]}"
    name = (f"celery-{broker}-{layout.pool}-b{batch_size}-p{prefetch}-r{db_reuse or 0}-"
            f"{uuid.uuid4().hex[:4]}")
    count_dir = ctx.work_dir / f"{name}-counts"
    count_dir.mkdir()
    load_targets(owner, urls)
    overrides = {"BACKEND": CELERY,
                 "BACKEND_OPTIONS": {"queue": queue_name, "batch_size": batch_size}}
    use_broker(url)
    try:
        run = deliver(ctx, owner, lambda: celery_workers(
            ctx, name, layout, broker=url, queue_name=queue_name, batch_size=batch_size,
            prefetch=prefetch, db_reuse=db_reuse, count_dir=count_dir),
            overrides=overrides, calls=calls, expected=total, kind="ok", timeout=600)
    finally:
        delete_queue(url, queue_name)
    return Measured(total / run.seconds if run.seconds else None, run.handover,
                    read_counts(count_dir), run.notes, run.cpu)


def celery_bare_run(ctx, requests_file, *, broker, url, layout, batch_size, prefetch,
                    rewrite=("/ok/", "/log/"), stall_after=20.0):
    """Celery's own ceiling: ``bench.post`` tasks posting the same requests (their paths
    rewritten as ``rewrite`` says, to ones where the receiver notes when it answered each),
    batched as ``batch_size`` deliveries would be, from the first message sent to the last
    answer."""
    from bench.celery_app import post

    todo = []
    with open(requests_file) as lines:
        for line in lines:
            target, headers, body = json.loads(line)
            todo.append([target.replace(*rewrite, 1), headers, body])
    queue_name = f"djwebhooks-bench-{uuid.uuid4().hex[:8]}"
    name = f"celery-bare-{broker}-{layout.pool}-b{batch_size}-p{prefetch}-{uuid.uuid4().hex[:4]}"
    notes = []
    arrived = []
    connections.close_all()
    use_broker(url)
    workers = celery_workers(ctx, name, layout, broker=url, queue_name=queue_name,
                             batch_size=batch_size, prefetch=prefetch, db_reuse=None)
    try:
        for worker in workers:
            worker.expect("bench-celery-ready", 120)
        time.sleep(0.2)
        cpu_before = [worker.cpu_seconds() for worker in workers]
        ctx.receiver.arrivals()  # forget earlier ones
        started = time.time()
        for start in range(0, len(todo), batch_size):
            post.apply_async((todo[start:start + batch_size],), queue=queue_name)
        handover = time.time() - started
        deadline, last, last_change = time.monotonic() + 600, 0, time.monotonic()
        while len(arrived) < len(todo):
            arrived += [at for _, _, at in ctx.receiver.arrivals()]
            now = time.monotonic()
            if len(arrived) != last:
                last, last_change = len(arrived), now
            elif now - last_change > stall_after or now > deadline:
                notes.append(f"stalled after {len(arrived)} of {len(todo)} answers")
                break
            time.sleep(0.02)
        used = [worker.cpu_seconds() for worker in workers]
        cpu = (sum(used) - sum(cpu_before)) if None not in used + cpu_before else None
    finally:
        for worker in workers:
            worker.close(grace=15)
        delete_queue(url, queue_name)
    seconds = max(arrived) - started if len(arrived) >= len(todo) else None
    return Measured(len(todo) / seconds if seconds else None, handover, notes=notes, cpu=cpu)


POST_TASK_TEXT = ("Celery's own ceiling: a task (bench.post, acks_late as djwebhooks.send) "
                  "that only POSTs the same requests with a requests.Session, no database; "
                  "from the first message sent to the last answer")


def celery_bare_row(ctx, key, layouts, runs, bare, total):
    _, broker, pool, batch_size, prefetch = key
    layout = layouts[pool]
    per_process = layout.concurrency if pool == "threads" else 1
    rate = median_of(runs)
    handovers = [m.handover for m in runs if m.handover is not None]
    return Row(
        f"{THROUGHPUT}: Celery {layout.label}, bare task", "celery", ctx.database,
        f"{total} requests; {broker}, {batch_size} per task, prefetch ×{prefetch}", rate,
        "deliveries/s", bare.get(per_process),
        f"bare requests loop, {ctx.sizes.queue_processes} × {per_process} "
        f"thread{'s' if per_process > 1 else ''}",
        higher_is_better=True, measured_detail=spread(runs),
        note=join([POST_TASK_TEXT, f"sending the messages took "
                   f"{statistics.median(handovers):.3g} s" if handovers else "",
                   cpu_text(runs, total), *run_notes(runs)]),
        data={"rates": [m.rate for m in runs], "pool": pool, "broker": broker,
              "batch_size": batch_size, "prefetch": prefetch},
    )


def celery_row(ctx, key, layouts, runs, total, database, database_label, versus_bare,
               ceiling):
    _, broker, pool, batch_size, prefetch, db_reuse = key
    layout = layouts[pool]
    rate = median_of(runs)
    handovers = [m.handover for m in runs if m.handover is not None]
    notes = [versus_bare(rate) if rate else "",
             f"{rate / ceiling:.2f}× Celery's bare task" if rate and ceiling else "",
             f"the commit took {statistics.median(handovers):.3g} s with the hand-over"
             if handovers else "",
             cpu_text(runs, total), per_delivery(merged_counts(runs), total * len(runs)),
             *run_notes(runs)]
    return Row(
        f"{THROUGHPUT}: Celery {layout.label}", "celery", ctx.database,
        f"{total} deliveries; {celery_settings_text(broker, batch_size, prefetch, db_reuse)}",
        rate, "deliveries/s", database, database_label, "≥ 0.6×",
        bool(rate and database and rate / database >= 0.6), higher_is_better=True,
        measured_detail=spread(runs), note=join(notes),
        data={"rates": [m.rate for m in runs], "counts": merged_counts(runs),
              "pool": pool, "workers": layout.workers, "concurrency": layout.concurrency,
              "broker": broker, "batch_size": batch_size, "prefetch": prefetch,
              "db_reuse_max": db_reuse, "ceiling": ceiling},
    )


def tasks_run(ctx, owner, urls, calls, total, batch_size):
    sizes = ctx.sizes
    options = {} if batch_size is None else {"batch_size": batch_size}
    overrides = {"BACKEND": TASKS, "BACKEND_OPTIONS": options}
    load_targets(owner, urls)
    tag = uuid.uuid4().hex[:4]
    run = deliver(ctx, owner, lambda: [
        Child(ctx, f"db-worker-b{batch_size}-{i}-{tag}",
              {"mode": "db_worker", "interval": sizes.queue_interval, "count": True},
              overrides)
        for i in range(sizes.queue_processes)
    ], overrides=overrides, calls=calls, expected=total, kind="ok", timeout=600)
    return Measured(total / run.seconds if run.seconds else None, run.handover,
                    sum_counts(run.results), run.notes, run.cpu)


def tasks_row(ctx, key, runs, total, database, database_label, versus_bare):
    batch_size = key[1]
    processes = ctx.sizes.queue_processes
    rate = median_of(runs)
    handovers = [m.handover for m in runs if m.handover is not None]
    batch = "its default batch" if batch_size is None else f"batch_size {batch_size}"
    notes = [versus_bare(rate) if rate else "",
             f"db_worker --interval {ctx.sizes.queue_interval:g}, one task at a time per "
             "process",
             f"the commit took {statistics.median(handovers):.3g} s with the hand-over"
             if handovers else "",
             cpu_text(runs, total), per_delivery(merged_counts(runs), total * len(runs)),
             *run_notes(runs)]
    return Row(
        f"{THROUGHPUT}: Tasks, {processes} db_worker processes", "tasks", ctx.database,
        f"{total} deliveries; {batch}", rate, "deliveries/s", database, database_label,
        "≥ 0.6× (Celery's target)", bool(rate and database and rate / database >= 0.6),
        higher_is_better=True, measured_detail=spread(runs), note=join(notes),
        data={"rates": [m.rate for m in runs], "counts": merged_counts(runs),
              "batch_size": batch_size, "processes": processes},
    )


# -- 7. slow receivers -------------------------------------------------------------------------

def scenario_queue_slow(ctx):
    wanted = [name for name in ("celery", "tasks") if name in ctx.backends]
    problem = shared_database_problem(ctx)
    if problem:
        return [skipped(ctx, SLOW, name, problem) for name in wanted]
    sizes, owner = ctx.sizes, ctx.owner()
    latency = sizes.slow_latency_ms / 1000
    concurrency = sizes.slow_concurrency
    calls = max(1, sizes.slow_deliveries // concurrency)
    total = calls * concurrency
    urls = [f"{ctx.receiver.url}/delay/{sizes.slow_latency_ms}/queue/t{i}"
            for i in range(concurrency)]
    timeout = 10 * total / concurrency * latency + 120
    rows = []

    # The database worker, measured the same way, for reference (scenario 3 measures it
    # released on a full table).
    ideal = total / concurrency * latency
    load_targets(owner, urls)
    run = deliver(ctx, owner, lambda: [
        Child(ctx, "queue-slow-worker", {"mode": "worker", "concurrency": concurrency,
                                         "burst": False, "interval": sizes.queue_interval},
              {"BACKEND": DATABASE}),
    ], overrides={"BACKEND": DATABASE}, calls=calls, expected=total, kind="delay",
        timeout=timeout, stall_after=max(20.0, 5 * latency))
    rows.append(slow_row(ctx, f"database worker, --concurrency {concurrency}", "database",
                         f"{total} deliveries", run, ideal,
                         [f"polling every {sizes.queue_interval:g} s"]))

    if "celery" in wanted:
        rows += celery_slow(ctx, owner, urls, calls, total, latency, timeout)
    if "tasks" in wanted:
        rows += tasks_slow(ctx, owner, latency)
    return rows


def slow_row(ctx, label, backend, size, run, ideal, notes, done=None):
    """A scenario 7 row; ``done`` (the requests answered) for Celery's bare task, whose
    ``run`` has no deliveries."""
    ctx.log(f"  {label}, {size}: "
            + ("did not finish" if run.seconds is None else f"{run.seconds:.2f} s")
            + f" (ideal {ideal:g} s)")
    handover = (f"sending the messages took {run.handover:.3g} s" if done else
                f"the commit took {run.handover:.3g} s with the hand-over")
    return Row(
        f"{SLOW} ({ctx.sizes.slow_latency_ms / 1000:g} s each): {label}", backend,
        ctx.database, size, run.seconds, "s", ideal, "ideal", f"≤ {1.2 * ideal:.3g} s "
        f"(1.2× ideal)", run.seconds is not None and run.seconds <= 1.2 * ideal,
        note="; ".join(n for n in [*notes, handover, cpu_text([run], done or run.succeeded),
                                   *run.notes] if n),
        data={"seconds": run.seconds, "ideal": ideal, "handover": run.handover,
              "succeeded": run.succeeded, "requests": run.requests},
    )


def celery_slow(ctx, owner, urls, calls, total, latency, timeout):
    problem = celery_problem()
    if problem:
        return [skipped(ctx, SLOW, "celery", problem)]
    from djwebhooks.models import Delivery

    options = ctx.options
    # What the workers will send, for Celery's bare task.
    load_targets(owner, urls)
    fan_out(owner, "queue", calls)
    deliveries = Delivery.objects.select_related("webhook_target__owner").order_by("pk")
    requests_file = write_requests(ctx, deliveries, "queue-slow")
    rows = []
    for broker in options["brokers"]:
        url = options["broker_urls"][broker]
        problem = broker_problem(broker, url)
        if problem:
            rows.append(skipped(ctx, SLOW, "celery", problem))
            continue
        use_broker(url)
        layout, notes = slow_layout(ctx)
        ideal = total / (layout.workers * layout.concurrency) * latency
        prefetch = options["prefetch"][0]
        bare = celery_bare_run(
            ctx, requests_file, broker=broker, url=url, layout=layout, batch_size=1,
            prefetch=prefetch, rewrite=(f"/delay/{ctx.sizes.slow_latency_ms}/",
                                        f"/delay/{ctx.sizes.slow_latency_ms}/log/"),
            stall_after=max(20.0, 5 * latency))
        run = Delivered(total / bare.rate if bare.rate else None, bare.handover, 0, 0,
                        bare.notes, cpu=bare.cpu)
        rows.append(slow_row(ctx, f"Celery {layout.label}, bare task", "celery",
                             f"{total} requests; {broker}, 1 per task, prefetch ×{prefetch}",
                             run, ideal, [POST_TASK_TEXT, *notes], done=total))
        for batch_size in options["batch_sizes"]:
            for prefetch in options["prefetch"]:
                for db_reuse in options["db_reuse"]:
                    rows.append(celery_slow_run(
                        ctx, owner, urls, calls, total, latency, timeout, broker=broker,
                        url=url, batch_size=batch_size, prefetch=prefetch, db_reuse=db_reuse))
    return rows


def slow_layout(ctx):
    """Scenario 7's Celery workers: ``slow_concurrency`` threads (fewer when PostgreSQL has
    not the connections free), in ``--slow-workers`` processes; and notes saying so."""
    concurrency = ctx.sizes.slow_concurrency
    notes = [f"threads: prefork would take a process per concurrent request ({concurrency} "
             f"processes on {os.cpu_count()} cores)"]
    # Each thread holds a database connection of its own while it sends; this process
    # holds one while it commits and hands the deliveries over, and one is left spare.
    free = free_connections()
    if free is not None and free - 2 < concurrency:
        notes.append(f"PostgreSQL had {free} connections free, and each Celery thread holds "
                     f"one for the length of its task: ran at -c {free - 2}, not "
                     f"{concurrency}")
        concurrency = free - 2
    workers = ctx.options.get("slow_workers", 1)
    per_worker = concurrency // workers
    if workers > 1:
        notes.append(f"{per_worker * workers} threads in {workers} worker processes")
    return CeleryLayout("threads", workers, per_worker), notes


def celery_slow_run(ctx, owner, urls, calls, total, latency, timeout, *, broker, url,
                    batch_size, prefetch, db_reuse):
    layout, notes = slow_layout(ctx)
    ideal = total / (layout.workers * layout.concurrency) * latency
    queue_name = f"djwebhooks-bench-{uuid.uuid4().hex[:8]}"
    name = f"celery-slow-{broker}-b{batch_size}-p{prefetch}-r{db_reuse or 0}"
    count_dir = ctx.work_dir / f"{name}-counts"
    count_dir.mkdir(exist_ok=True)
    load_targets(owner, urls)
    overrides = {"BACKEND": CELERY,
                 "BACKEND_OPTIONS": {"queue": queue_name, "batch_size": batch_size}}
    try:
        run = deliver(ctx, owner, lambda: celery_workers(
            ctx, name, layout, broker=url, queue_name=queue_name, batch_size=batch_size,
            prefetch=prefetch, db_reuse=db_reuse, count_dir=count_dir),
            overrides=overrides, calls=calls, expected=total, kind="delay", timeout=timeout,
            stall_after=max(20.0, 5 * latency * batch_size))
    finally:
        delete_queue(url, queue_name)
    if batch_size > 1:
        notes.append(f"a task sends its {batch_size} deliveries one after the other")
    described = celery_settings_text(broker, batch_size, prefetch, db_reuse)
    return slow_row(ctx, f"Celery {layout.label}", "celery", f"{total} deliveries; {described}",
                    run, ideal, notes)


def tasks_slow(ctx, owner, latency):
    problem = tasks_problem()
    if problem:
        return [skipped(ctx, SLOW, "tasks", problem)]
    sizes = ctx.sizes
    processes = sizes.tasks_slow_processes
    per_process = max(1, sizes.slow_deliveries // sizes.slow_concurrency)
    total = processes * per_process
    ideal = per_process * latency
    urls = [f"{ctx.receiver.url}/delay/{sizes.slow_latency_ms}/queue/t{i}"
            for i in range(total)]
    load_targets(owner, urls)
    overrides = {"BACKEND": TASKS, "BACKEND_OPTIONS": {}}
    run = deliver(ctx, owner, lambda: [
        Child(ctx, f"db-worker-slow-{i}", {"mode": "db_worker",
                                           "interval": sizes.queue_interval}, overrides)
        for i in range(processes)
    ], overrides=overrides, calls=1, expected=total, kind="delay",
        timeout=10 * ideal + 120, stall_after=max(20.0, 5 * latency))
    return [slow_row(
        ctx, f"Tasks, {processes} db_worker processes", "tasks",
        f"{total} deliveries, concurrency {processes}", run, ideal,
        [f"db_worker runs one task at a time per process (it has no concurrency option): "
         f"concurrency {sizes.slow_concurrency} would take {sizes.slow_concurrency} "
         f"processes, each with its own database connection; ideal at concurrency "
         f"{processes}"])]


SCENARIOS = {
    "queue-throughput": scenario_queue_throughput,
    "queue-slow": scenario_queue_slow,
}
