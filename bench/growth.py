"""Growth to a million deliveries: ``python bench/growth.py --database-url postgres://...``.

Three measurements, each on tables made afresh (PostgreSQL only; elsewhere it prints
``skipped: <reason>``):

- ``rss``: a real database worker (``bench.child``, concurrency 4, as scenario 5 runs it)
  sends ``--deliveries`` deliveries to the bench receiver. They are inserted in batches
  of ``--batch`` as the worker drains them, so the table never holds them all pending at
  once, and the finished ones pile up. The worker's ``VmRSS`` is read at every tenth.
- ``claim``: with 0, a tenth of ``--deliveries``, and ``--deliveries`` finished rows
  (``--finished`` to choose), times the worker's cycle (``queue.claim``, ``queue.load``,
  ``queue.record``) over pending deliveries, and runs ``EXPLAIN (ANALYZE, BUFFERS)`` on
  the statements of one cycle, of a sweep and of a prune batch, in a transaction rolled
  back. A plan that reads the delivery table with a sequential scan is flagged.
- ``prune``: ``webhooks_prune`` deletes ``--deliveries`` old finished deliveries (one
  attempt each), while a thread keeps calling ``send_event`` (10 targets), claiming and
  recording; a second thread watches ``pg_stat_activity`` for sessions waiting on a lock.
  Reports the batches' times (start, end, longest) and the concurrent statements'
  latencies beside the same loop without prune.

Prints markdown, and writes it with every plan to ``--output`` (``bench/results/``).
Nothing here asserts a timing.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("claim", "rss", "prune")
PAYLOAD = '{"id": 1, "title": "Benchmark payload", "items": [1, 2, 3]}'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="postgres://user@host:port/name (default $DATABASE_URL)")
    parser.add_argument("--deliveries", type=int, default=1_000_000,
                        help="deliveries sent (rss) and pruned (prune); default 1,000,000")
    parser.add_argument("--batch", type=int, default=20_000,
                        help="deliveries inserted at a time for the worker (default 20,000)")
    parser.add_argument("--finished", default=None,
                        help="finished rows to time claims beside, comma-separated (default "
                        "0, a tenth of --deliveries, --deliveries)")
    parser.add_argument("--prune-snapshot", action="store_true",
                        help="hold a snapshot open on another connection while prune runs, "
                        "as a long report or pg_dump does (dead rows cannot be cleaned "
                        "away meanwhile)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"parts to run, comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    if not set(parts) <= set(PARTS):
        parser.error(f"--only takes {', '.join(PARTS)}")
    if not (args.database_url or "").startswith(("postgres://", "postgresql://")):
        print("skipped: the growth scenario fills tables with PostgreSQL's generate_series "
              "and reads its plans and locks; give --database-url postgres://...")
        return 0
    finished = ([int(n) for n in args.finished.split(",")] if args.finished else
                [0, args.deliveries // 10, args.deliveries])
    sys.path.insert(0, str(ROOT))
    from bench.run import ensure_postgres_database, load_average, setup_django

    ensure_postgres_database(args.database_url)
    setup_django(args.database_url)
    from bench.receiver import ReceiverProcess

    started = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.output.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="growth-", dir=args.output))
    out = [f"# Growth to {args.deliveries:,} deliveries ({stamp})", "",
           f"Load average at the start: {load_average()}", ""]
    plans = []
    with ReceiverProcess() as receiver:
        ctx = types.SimpleNamespace(work_dir=work_dir, receiver=receiver)
        for part in parts:
            part_started = time.monotonic()
            print(f"- {part}", flush=True)
            if part == "claim":
                text, part_plans = claim_part(finished)
                plans += part_plans
            elif part == "rss":
                text = rss_part(ctx, args.deliveries, args.batch)
            else:
                text = prune_part(args.deliveries, snapshot=args.prune_snapshot)
            elapsed = time.monotonic() - part_started
            print(text, f"\n({elapsed:.0f} s)", flush=True)
            out += [text, "", f"({part}: {elapsed:.0f} s)", ""]
    out.append(f"Load average at the end: {load_average()}; "
               f"{time.monotonic() - started:.0f} s in all.")
    if plans:
        out += ["", "## Plans", ""]
        for title, plan in plans:
            out += [f"### {title}", "", "```", plan, "```", ""]
    path = args.output / f"{stamp}-growth-{args.deliveries}.md"
    path.write_text("\n".join(out))
    print(f"Written: {path}; logs in {work_dir}")
    return 0


# -- filling the tables -----------------------------------------------------------------------

def reset(targets=100, identifier="growth", url="https://bench.example/t{i}"):
    """Empty dj-webhooks' tables; make ``targets`` targets; return their ids."""
    from django.contrib.auth import get_user_model

    from bench.scenarios import reset_tables
    from djwebhooks.models import WebhookTarget

    reset_tables()
    owner, _ = get_user_model().objects.get_or_create(username="bench")
    WebhookTarget.objects.bulk_create(
        WebhookTarget(owner=owner, event="bench.fan", identifier=identifier,
                      target_url=url.format(i=i))
        for i in range(targets)
    )
    return list(WebhookTarget.objects.order_by("pk").values_list("pk", flat=True))


def insert(cursor, targets, count, *, finished, start=0, age="0"):
    """Insert ``count`` deliveries spread over ``targets``, in one statement: finished
    (succeeded ``age`` ago, e.g. ``'60 days'``, with one attempt each) or pending and due."""
    from djwebhooks.models import Delivery, DeliveryAttempt

    table = Delivery._meta.db_table
    status = "succeeded" if finished else "pending"
    due = "NULL" if finished else "now()"
    cursor.execute(
        f"INSERT INTO {table} (event, payload, hash_value, status, attempt, success, "
        "response_status, reason, claimed_by, webhook_target_id, created, modified, "
        "next_attempt_at, queued_at) "
        f"SELECT 'bench.fan', %s, 'g' || g, %s, %s, %s, %s, '', '', "
        "(%s::bigint[])[1 + g %% %s], now() - %s::interval, now() - %s::interval, "
        f"{due}, {due} FROM generate_series(%s, %s) g",
        [PAYLOAD, status, int(finished), finished, 200 if finished else None, targets,
         len(targets), age, age, start + 1, start + count],
    )
    if finished:
        cursor.execute(
            f"INSERT INTO {DeliveryAttempt._meta.db_table} (delivery_id, attempt, success, "
            "response_status, response_message, response_content_type, error, duration, "
            "notification, created) SELECT id, 1, true, 200, 'ok', 'text/plain', '', 1, '', "
            f"modified FROM {table} WHERE status = 'succeeded' AND id > %s",
            [_max_attempted(cursor)],
        )


def _max_attempted(cursor):
    from djwebhooks.models import DeliveryAttempt

    cursor.execute(f"SELECT coalesce(max(delivery_id), 0) FROM "
                   f"{DeliveryAttempt._meta.db_table}")
    return cursor.fetchone()[0]


def vacuum():
    """What autovacuum would have done by now: statistics and the visibility map."""
    from django.db import connection

    from djwebhooks.models import Delivery, DeliveryAttempt

    with connection.cursor() as cursor:
        for model in (Delivery, DeliveryAttempt):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")


def ok_results(deliveries):
    from djwebhooks.senders.base import AttemptResult

    result = AttemptResult(success=True, response_status=200, response_message="ok",
                           response_content_type="text/plain", error="", duration=1,
                           notification="")
    return [(delivery, result) for delivery in deliveries]


# -- claim time and plans ---------------------------------------------------------------------

def claim_part(sizes, pending=5000, cycles=100, limit=16):
    from django.db import connection

    rows, plans = [], []
    for size in sizes:
        targets = reset()
        with connection.cursor() as cursor:
            insert(cursor, targets, size, finished=True, age="60 days")
            insert(cursor, targets, pending, finished=False, start=size)
        vacuum()
        times = cycle_times(cycles, limit)
        statements = capture_statements(limit)
        flagged, summaries = [], []
        for title, sql in statements:
            plan = explain(sql)
            plans.append((f"{size:,} finished rows: {title}", plan))
            summaries.append((title, plan))
            flagged += [title for line in plan.splitlines()
                        if "Seq Scan on djwebhooks_delivery" in line
                        or "Seq Scan on djwebhooks_deliveryattempt" in line]
        rows.append((size, times, essentials(summaries), flagged))
    lines = [f"Worker cycles of {limit} over {pending:,} pending deliveries, {cycles} "
             "cycles each: median (p95) ms.", "",
             "| finished rows | claim | load | record |", "|---|---|---|---|"]
    for size, times, _, _ in rows:
        lines.append(f"| {size:,} | " + " | ".join(
            f"{statistics.median(times[k]):.2f} ({p95(times[k]):.2f})"
            for k in ("claim", "load", "record")) + " |")
    lines += ["", "Plans (EXPLAIN ANALYZE, BUFFERS): the scans and buffers of each statement.",
              "", "| finished rows | statement | scans | buffers | ms |", "|---|---|---|---|---|"]
    for size, _, summary, _ in rows:
        for title, scans, buffers, ms in summary:
            lines.append(f"| {size:,} | {title} | {scans} | {buffers} | {ms} |")
    bad = sorted({title for *_, flagged in rows for title in flagged})
    lines += ["", "Sequential scans of the delivery or attempt table: "
              + (", ".join(bad) if bad else "none")]
    return "\n".join(lines), plans


def p95(values):
    values = sorted(values)
    return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def cycle_times(cycles, limit):
    from djwebhooks import queue

    times = {"claim": [], "load": [], "record": []}
    for _ in range(cycles):
        t0 = time.perf_counter()
        claim = queue.claim("growth", limit=limit, lease=60)
        t1 = time.perf_counter()
        deliveries = queue.load("growth", claim.ids)
        t2 = time.perf_counter()
        queue.record("growth", ok_results(deliveries))
        t3 = time.perf_counter()
        times["claim"].append((t1 - t0) * 1000)
        times["load"].append((t2 - t1) * 1000)
        times["record"].append((t3 - t2) * 1000)
    return times


class _Stop(Exception):
    pass


def capture_statements(limit):
    """The SQL of one worker cycle, of a sweep and of two prune batches, as run, in a
    transaction rolled back; ``[(title, sql)]``."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from djwebhooks import queue, retention
    from djwebhooks.backends.base import BaseBackend
    from djwebhooks.sweep import sweep

    class Discard(BaseBackend):
        defers = True

        def enqueue(self, delivery_ids, *, run_after=None):
            pass

    steps = []

    def step(title, function):
        with CaptureQueriesContext(connection) as captured, contextlib.suppress(_Stop):
            function()
        steps.extend((title, q["sql"]) for q in captured.captured_queries
                     if q["sql"].lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT",
                                                              "DELETE", "WITH"))
                     and "djwebhooks_" in q["sql"])

    def two_batches(deleted):
        if deleted >= 2000:
            raise _Stop

    def cycle():
        claim = queue.claim("growth-plan", limit=limit, lease=60)
        queue.record("growth-plan", ok_results(queue.load("growth-plan", claim.ids)))

    with contextlib.suppress(_Stop), transaction.atomic():
        step("worker cycle", cycle)
        # Make some due rows overdue (handed to no queue), so the sweep has work to do.
        step("sweep", lambda: sweep(backend=Discard(), limit=limit, requeue_after=0))
        step("prune", lambda: retention.prune(30 * 86400, batch_size=1000,
                                              on_batch=two_batches))
        raise _Stop
    counts = {}
    titled = []
    for title, sql in steps:
        counts[title] = counts.get(title, 0) + 1
        titled.append((f"{title} {counts[title]}: {sql[:60]}...", sql))
    return titled


def explain(sql):
    """``EXPLAIN (ANALYZE, BUFFERS)`` of ``sql``, run in a transaction rolled back."""
    from django.db import connection, transaction

    with contextlib.suppress(_Stop), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql.replace("%", "%%"))
        plan = "\n".join(row[0] for row in cursor.fetchall())
        raise _Stop
    return plan


def essentials(plans):
    """For each plan: its scan nodes (with their index), the top node's buffers, its time."""
    summary = []
    for title, plan in plans:
        lines = plan.splitlines()
        scans = []
        for line in lines:
            text = line.strip().lstrip("->").strip()
            if " Scan" in text.split("  ")[0] and " on " in text:
                scans.append(text.split("  (")[0])
        buffers = next((line.strip() for line in lines if "Buffers:" in line), "")
        total = next((line.split(":")[1].strip() for line in lines
                      if line.startswith("Execution Time")), "")
        short = title.split(":")[0]  # "worker cycle 2"
        summary.append((short, "; ".join(scans) or "(no scan)",
                        buffers.replace("Buffers: ", ""), total.replace(" ms", "")))
    return summary


# -- RSS over a million deliveries ------------------------------------------------------------

def proc_rss(pid):
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def rss_part(ctx, total, batch, targets=100):
    from django.db import connection, connections

    from bench.scenarios import Child
    from djwebhooks.models import Delivery

    ids = reset(targets, url=f"{ctx.receiver.url}/ok/growth/t{{i}}")
    points = sorted({max(1, total * k // 10) for k in range(1, 11)})
    connections.close_all()
    child = Child(ctx, "growth-worker", {"mode": "worker", "concurrency": 4, "burst": False,
                                         "interval": 0.2, "rss_at": points, "gc": True})
    inserted, samples = 0, []
    try:
        child.expect("ready", 60)
        child.send("go")
        started = time.monotonic()
        table = Delivery._meta.db_table
        pending_sql = f"SELECT count(*) FROM {table} WHERE status = 'pending'"
        next_point = 0
        while True:
            with connection.cursor() as cursor:
                cursor.execute(pending_sql)
                (pending,) = cursor.fetchone()
                done = inserted - pending
                while next_point < len(points) and done >= points[next_point]:
                    samples.append((points[next_point], time.monotonic() - started,
                                    proc_rss(child.process.pid)))
                    print(f"  {points[next_point]:,} sent, {samples[-1][1]:.0f} s, "
                          f"RSS {samples[-1][2]} kB", flush=True)
                    next_point += 1
                if done >= total:
                    break
                if pending < batch // 2 and inserted < total:
                    count = min(batch, total - inserted)
                    insert(cursor, ids, count, finished=False, start=inserted)
                    inserted += count
            if child.process.poll() is not None:
                raise RuntimeError(f"the worker exited; see {child.log_path}")
            time.sleep(0.2)
        child.send("stop")
        result = json.loads(child.expect("result", 120))
    finally:
        child.close()
    exact = {int(k): v for k, v in result["rss_kb"].items()}
    first = points[0]
    lines = [f"Worker (concurrency 4) sending {total:,} deliveries, inserted {batch:,} at a "
             "time; RSS read by the worker when it had handled each number.", "",
             "| handled | RSS (MB) | × at " + f"{first:,}" + " | seconds | deliveries/s in "
             "the stretch |", "|---|---|---|---|---|"]
    previous = (0, 0.0)
    for point, seconds, _ in samples:
        rss = exact.get(point)
        rate = (point - previous[0]) / max(seconds - previous[1], 1e-9)
        previous = (point, seconds)
        ratio = f"{rss / exact[first]:.3f}" if rss and exact.get(first) else "-"
        lines.append(f"| {point:,} | {rss / 1024:.1f} | {ratio} | {seconds:.0f} | "
                     f"{rate:.0f} |" if rss else f"| {point:,} | - | - | {seconds:.0f} | - |")
    hwm = result.get("hwm_kb")
    lines += ["", f"High-water mark {hwm / 1024:.1f} MB; the worker handled "
              f"{result['processed']:,}; gc: {result.get('gc')}"]
    return "\n".join(lines)


# -- prune under load -------------------------------------------------------------------------

class Load:
    """A thread that keeps doing what callers and workers do, timing each statement group:
    ``send_event`` to 10 targets (in a transaction), a claim of 10, and recording them."""

    def __init__(self):
        self.times = {"send_event": [], "claim": [], "record": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from django.contrib.auth import get_user_model
        from django.db import connections, transaction

        from bench.scenarios import djwebhooks_settings
        from djwebhooks import queue, send_event

        owner = get_user_model().objects.get(username="bench")
        number = 0
        try:
            with djwebhooks_settings(backend="database"):
                while not self._stop.is_set():
                    number += 1
                    t0 = time.perf_counter()
                    with transaction.atomic():
                        send_event("bench.fan", {"id": number}, owner=owner,
                                   identifier="load")
                    t1 = time.perf_counter()
                    claim = queue.claim("growth-load", limit=10, lease=60)
                    t2 = time.perf_counter()
                    queue.record("growth-load", ok_results(queue.load("growth-load",
                                                                        claim.ids)))
                    t3 = time.perf_counter()
                    for key, value in (("send_event", t1 - t0), ("claim", t2 - t1),
                                       ("record", t3 - t2)):
                        self.times[key].append(value * 1000)
                    time.sleep(0.01)
        finally:
            connections.close_all()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.times


class LockWatch:
    """A thread polling ``pg_stat_activity`` every 20 ms for sessions of this database
    waiting on a lock; keeps the longest wait seen per kind of statement."""

    def __init__(self):
        self.longest = 0.0
        self.seen = 0
        self.example = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from django.db import connection, connections

        try:
            with connection.cursor() as cursor:
                while not self._stop.wait(0.02):
                    cursor.execute(
                        "SELECT extract(epoch FROM clock_timestamp() - query_start), query "
                        "FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
                    for seconds, query in cursor.fetchall():
                        self.seen += 1
                        if seconds > self.longest:
                            self.longest, self.example = float(seconds), query[:120]
        finally:
            connections.close_all()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self


class Stamped(io.StringIO):
    """A command's stdout noting when each line was written."""

    def __init__(self):
        super().__init__()
        self.stamps = []

    def write(self, text):
        self.stamps.append((time.perf_counter(), text))
        return super().write(text)


def prune_part(total, baseline_seconds=10.0, snapshot=False):
    from django.core.management import call_command
    from django.db import connection

    from djwebhooks.models import Delivery, WebhookTarget

    targets = reset()
    with connection.cursor() as cursor:
        insert(cursor, targets, total, finished=True, age="60 days")
        insert(cursor, targets, 5000, finished=False, start=total)
    owner = WebhookTarget.objects.first().owner
    WebhookTarget.objects.bulk_create(
        WebhookTarget(owner=owner, event="bench.fan", identifier="load",
                      target_url=f"https://bench.example/load/{i}") for i in range(10))
    vacuum()
    watch = LockWatch().start()
    quiet = Load().start()
    time.sleep(baseline_seconds)
    quiet_times = quiet.stop()
    quiet_locks = (watch.longest, watch.seen)
    load = Load().start()
    time.sleep(1)
    reader = None
    if snapshot:
        import psycopg

        settings = connection.settings_dict
        reader = psycopg.connect(dbname=settings["NAME"], user=settings["USER"],
                                 host=settings["HOST"], port=settings["PORT"] or None)
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM djwebhooks_webhooktarget")
    stdout = Stamped()
    started = time.perf_counter()
    call_command("webhooks_prune", older_than="30d", batch_size=1000, verbosity=2,
                 stdout=stdout)
    finished = time.perf_counter()
    if reader is not None:
        reader.close()
    busy_times = load.stop()
    watch.stop()
    left = Delivery.objects.finished().filter(modified__lt=time_ago(30)).count()
    stamps = [started] + [when for when, text in stdout.stamps if "so far" in text]
    batches = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
    head, tail = batches[:20], batches[-20:]
    held = " (another connection holding a snapshot meanwhile)" if snapshot else ""
    lines = [f"webhooks_prune --older-than 30d --batch-size 1000 over {total:,} old finished "
             f"deliveries (one attempt each) and 5,000 pending{held}: "
             f"{stdout.getvalue().strip().splitlines()[-1]} in {finished - started:.1f} s; "
             f"{left} old finished left.", "",
             f"Batches: {len(batches)}; first 20 median {statistics.median(head):.1f} ms, "
             f"last 20 median {statistics.median(tail):.1f} ms, longest {max(batches):.1f} ms "
             f"(batch {batches.index(max(batches)) + 1}).", "",
             "Concurrent loop (send_event to 10 targets, claim 10, record): ms",
             "", "| statement | without prune: median / p99 / max | during prune: median / "
             "p99 / max |", "|---|---|---|"]
    for key in ("send_event", "claim", "record"):
        cells = []
        for times in (quiet_times, busy_times):
            values = sorted(times[key])
            p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
            cells.append(f"{statistics.median(values):.2f} / {p99:.2f} / {values[-1]:.2f} "
                         f"({len(values)} runs)")
        lines.append(f"| {key} | {cells[0]} | {cells[1]} |")
    lines += ["", f"Sessions seen waiting on a lock (pg_stat_activity every 20 ms): "
              f"{quiet_locks[1]} without prune, {watch.seen} in all; longest wait seen "
              f"{watch.longest * 1000:.0f} ms" + (f" ({watch.example})" if watch.example
                                                   else "")]
    lines += ["", "Per-batch ms, in tenths of the run: " + ", ".join(
        f"{statistics.median(part):.1f}" for part in tenths(batches))]
    return "\n".join(lines)


def time_ago(days):
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() - timedelta(days=days)


def tenths(values):
    size = max(1, len(values) // 10)
    return [values[i:i + size] for i in range(0, len(values), size)][:10]


if __name__ == "__main__":
    sys.exit(main())
