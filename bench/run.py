"""Benchmark dj-webhooks: ``python bench/run.py [--quick] [--database-url URL] ...``.

Runs the scenarios in ``bench/scenarios.py``, ``queues.py`` and ``latency.py`` against a
receiver in its own process, prints a markdown table (each figure beside a baseline
measured in the same run, the target and whether it was met), and writes it with the raw
numbers (JSON) and a chart (PNG) to ``--output``. Missed targets are reported, never
raised: the exit status is non-zero only when the harness itself failed.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["caller", "throughput", "slow", "hol", "memory", "queue-throughput", "queue-slow",
         "latency", "async-throughput", "async-slow", "async-dead", "budget"]
#: The backends each scenario measures (its baselines are measured whatever is chosen).
MEASURES = {name: ("database", "inline") for name in NAMES[:5]}
MEASURES.update({"queue-throughput": ("celery", "tasks"), "queue-slow": ("celery", "tasks"),
                 "latency": ("database",)})
MEASURES.update({name: ("database",) for name in NAMES[8:]})
BACKEND_CHOICES = {
    "database": ("database",), "inline": ("inline",), "celery": ("celery",),
    "tasks": ("tasks",), "both": ("database", "inline"),
    "all": ("database", "inline", "celery", "tasks"),
}
BROKERS = {
    "redis": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"),
    "rabbitmq": os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}


def listed(text, kind=str, choices=None):
    """``"a,b"`` as a list of ``kind``; argparse reports a ValueError as a bad value."""
    values = [kind(part.strip()) for part in text.split(",") if part.strip()]
    if not values or (choices and not set(values) <= set(choices)):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of "
                                         f"{', '.join(choices) if choices else kind.__name__}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that the harness works, in well under a minute")
    parser.add_argument("--size", type=float, default=1.0, metavar="FACTOR",
                        help="scale the full run's counts by FACTOR (default 1: the sizes the "
                        "targets are stated for)")
    parser.add_argument("--memory-size", type=float, default=1.0, metavar="FACTOR",
                        help="scale scenario 5 (memory) further by FACTOR: at full size it "
                        "sends 100,000 deliveries per backend, which takes a while")
    parser.add_argument("--only", action="append", metavar="SCENARIO",
                        help=f"run only these scenarios: {', '.join(NAMES)} or 1-{len(NAMES)} "
                        "(repeat, or separate with commas)")
    parser.add_argument("--backend", action="append", metavar="BACKEND",
                        help=f"measure only these backends: {', '.join(BACKEND_CHOICES)} "
                        "(repeat, or separate with commas; default all: scenarios 1-5 "
                        "measure database and inline, 6-7 celery and tasks)")
    queues = parser.add_argument_group("queue scenarios (6 queue-throughput, 7 queue-slow)")
    queues.add_argument("--broker", type=lambda text: listed(text, choices=list(BROKERS)),
                        default=["redis"], help="Celery's brokers: redis, rabbitmq, or both "
                        "comma-separated (default redis; URLs from $BENCH_REDIS_URL, "
                        "$BENCH_RABBITMQ_URL)")
    queues.add_argument("--celery-pool", type=lambda text: listed(
                        text, choices=["prefork", "threads"]), default=["prefork", "threads"],
                        help="scenario 6's Celery pools (default prefork,threads): one "
                        "worker of -P prefork -c 2, or 2 workers of -P threads -c 4; "
                        "scenario 7 always uses one worker of -P threads -c 100")
    queues.add_argument("--batch-size", type=lambda text: listed(text, int),
                        default=[1, 20], help="the queue backends' batch_size options "
                        "to try (default 1,20; 20 is the backends' default)")
    queues.add_argument("--celery-prefetch", type=lambda text: listed(text, int),
                        default=[4], help="Celery's --prefetch-multiplier values to try "
                        "(default 4, Celery's default)")
    queues.add_argument("--celery-db-reuse", type=lambda text: listed(text, int),
                        default=[0], help="CELERY_DB_REUSE_MAX values to try, each with "
                        "CONN_MAX_AGE 60 and CONN_HEALTH_CHECKS; 0 (default) leaves it "
                        "unset: Celery closes the database connection around every task")
    queues.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="scenario 6: measure everything N times, in rounds, and report "
                        "medians (default 1)")
    queues.add_argument("--profile", action="store_true",
                        help="run the Celery workers' processes under cProfile: .prof files "
                        "in the logs directory, one per process (it slows them down)")
    queues.add_argument("--slow-workers", type=int, default=1, metavar="N",
                        help="scenario 7: split Celery's 100 threads between N worker "
                        "processes (default 1: one worker of -P threads -c 100)")
    queues.add_argument("--tasks-slow-processes", type=int, metavar="N",
                        help="db_worker processes in scenario 7 (default 10; 2 with --quick)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results",
                        help="where results go (default bench/results/, ignored by git)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="postgres://user@host:port/name (default: $DATABASE_URL; a "
                        "temporary SQLite file when unset)")
    args = parser.parse_args(argv)
    chosen = []
    for item in args.only or NAMES:
        for name in item.split(","):
            name = name.strip()
            if name.isdigit() and 1 <= int(name) <= len(NAMES):
                name = NAMES[int(name) - 1]
            if name not in NAMES:
                parser.error(f"unknown scenario {name!r}: choose from {', '.join(NAMES)} or "
                             f"1-{len(NAMES)}")
            chosen.append(name)
    args.only = [name for name in NAMES if name in chosen]
    backends = set()
    for item in args.backend or ["all"]:
        for name in item.split(","):
            name = name.strip()
            if name not in BACKEND_CHOICES:
                parser.error(f"unknown backend {name!r}: choose from "
                             f"{', '.join(BACKEND_CHOICES)}")
            backends.update(BACKEND_CHOICES[name])
    args.backend = tuple(b for b in BACKEND_CHOICES["all"] if b in backends)
    return args


def ensure_postgres_database(url):
    """Create the database named in ``url`` if it does not exist yet."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = unquote(parsed.path[1:])
    params = {"dbname": "postgres", "host": parsed.hostname or None, "port": parsed.port,
              "user": unquote(parsed.username or "") or None,
              "password": unquote(parsed.password or "") or None}
    with psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django(database_url):
    os.environ["BENCH_DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    # dj-webhooks' tables made afresh for every run.
    call_command("migrate", "djwebhooks", "zero", verbosity=0, interactive=False)
    call_command("migrate", "djwebhooks", verbosity=0, interactive=False)


def machine():
    """What the numbers were measured on."""
    import django
    import requests
    import urllib3
    from django.db import connection

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]}"
            cursor.execute("SHOW max_connections")
            database += f" (max_connections {cursor.fetchone()[0]})"
    else:
        database = f"SQLite {connection.Database.sqlite_version} (file, IMMEDIATE transactions)"
    commit, fingerprint = code_state()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory": memory,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "django": django.get_version(),
        "requests": requests.__version__,
        "urllib3": urllib3.__version__,
        "database": database,
        "commit": commit,
        "fingerprint": fingerprint,
        "load": load_average(),
    }


def load_average():
    """The 1-minute load average now (other work on the machine skews every figure)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def git(*args, stdin=None):
    return subprocess.run(["git", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, check=True).stdout


def code_state():
    """The code measured: the commit, and djwebhooks/ files that differ from it.

    Read-only git commands only (``ls-tree``, ``hash-object`` without ``-w``): the work tree
    may be someone else's work in progress. Returns ``(description, fingerprint)``.
    """
    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        committed = {}
        for line in git("ls-tree", "-r", "HEAD", "djwebhooks").splitlines():
            meta, path = line.split("\t", 1)
            committed[path] = meta.split()[2]
        paths = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "djwebhooks").rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts)
        hashes = git("hash-object", "--stdin-paths", stdin="\n".join(paths)).split()
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return "unknown", None
    current = dict(zip(paths, hashes, strict=True))
    changed = sorted(p for p in set(current) | set(committed)
                     if current.get(p) != committed.get(p))
    fingerprint = hashlib.sha256(repr(sorted(current.items())).encode()).hexdigest()[:10]
    if not changed:
        return head, fingerprint
    names = ", ".join(p.removeprefix("djwebhooks/") for p in changed)
    return f"{head} + uncommitted changes to djwebhooks/ ({names}; tree {fingerprint})", \
        fingerprint


def number(value):
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def cell(value, unit, detail):
    text = f"{number(value)} {unit}" if value is not None else "—"
    return f"{text} ({detail})" if detail else text


def markdown(rows, info, title, notes_intro):
    table = [r for r in rows if not r["scenario"].startswith("queries")]
    queries = [r for r in rows if r["scenario"].startswith("queries")]
    out = [f"# {title}", ""]
    out.append(
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{info['memory']}; {info['os']}; {info['python']}; Django {info['django']}; "
        f"requests {info['requests']}, urllib3 {info['urllib3']}; {info['database']}; "
        f"dj-webhooks: {info['commit']}. Load average (1 min) {info['load']} at the start, "
        f"{info.get('load_end')} at the end."
    )
    out += ["", "| scenario | backend | database | size | measured | baseline | ratio | target "
            "| met? |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in table:
        scenario = r["scenario"]
        if r["note"]:
            notes.append(r["note"])
            scenario += f" [{len(notes)}]"
        baseline = cell(r["baseline"], r["unit"], r["baseline_detail"])
        if r["baseline_label"]:
            baseline = f"{baseline}, {r['baseline_label']}" if r["baseline"] is not None \
                else r["baseline_label"]
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
        met = {True: "yes", False: "**NO**", None: "n/a"}[r["met"]]
        out.append(f"| {scenario} | {r['backend']} | {r['database']} | {r['size']} | "
                   f"{cell(r['measured'], r['unit'], r['measured_detail'])} | {baseline} | "
                   f"{ratio} | {r['target']} | {met} |")
    if notes:
        out += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    if queries:
        out += ["", "SQL statements (the caller's counted with `CaptureQueriesContext`, BEGIN "
                "and COMMIT included; the worker's on every thread, without them):", "",
                "| path | backend | size | statements | detail |", "|---|---|---|---|---|"]
        for r in queries:
            out.append(f"| {r['scenario'][len('queries: '):]} | {r['backend']} | {r['size']} | "
                       f"{number(r['measured'])} | {r['measured_detail']} |")
    out += ["", notes_intro]
    return "\n".join(out) + "\n"


ABOUT = """\
How to read it: *ratio* is measured ÷ baseline, both from this run. Baselines: (1) a bare
`Delivery.objects.bulk_create` of the same rows in the same kind of transaction — the
write the call cannot avoid (plus, inline, the same POSTs made with a bare session);
(2, 3) a bare `requests.Session` loop (`trust_env = False`, as dj-webhooks' session)
posting the same signed bodies to the same receiver, with as many threads and processes
(`Session.post`; beside it, a `PreparedRequest` given to `Session.send`, the calls
dj-webhooks made before it sent through urllib3); the strict baseline is a bare urllib3
loop making the calls dj-webhooks makes (a pool manager per thread, `urlopen`);
(4) the same load without the target that times out; (5) the same process's RSS after
the smaller number of deliveries; (6) the database worker with two processes, measured as
the queues are, from the commit to the last success recorded (Celery's bare task, which posts
the same requests without the database, is its own ceiling); (7) the ideal time, deliveries ÷
concurrency × latency; (8) the same worker polling (`listen=False`), whose median is about
half its interval; (9) the async mode against a bare aiohttp loop with as many requests
in flight, the threads against the bare loop of prepared requests with as many threads; (10)
the ideal time, and bare aiohttp beside it; (11) as (4), with an async worker; (12) each
step of the send path alone, in CPU time of one thread, against the bare call of the same
client, and their sum: the most one process could send. Targets for
10 and 100 targets in (1) are the straight line between the
stated 1 ms for one target and 30 ms for 1,000. Throughput targets are ≥ 0.7× the bare
requests loop and ≥ 0.8× the strict baseline, and for the queues ≥ 0.6× the database worker
(higher is better); all other figures are better lower."""


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    temporary = None
    url = args.database_url
    if url:
        if urlparse(url).scheme in ("postgres", "postgresql"):
            ensure_postgres_database(url)
    else:
        temporary = Path(tempfile.mkdtemp(prefix="djwebhooks-bench-"))
        url = f"sqlite:///{temporary / 'bench.sqlite3'}"
    try:
        return run(args, url, started)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def run(args, url, started):
    setup_django(url)
    from django.db import connection

    from bench import asyncmode, budget, chart, latency, queues, scenarios
    from bench.receiver import ReceiverProcess

    sizes = scenarios.Sizes.quick() if args.quick else scenarios.Sizes.full(args.size)
    sizes = sizes.scale_memory(args.memory_size)
    if args.tasks_slow_processes:
        sizes = scenarios.replace(sizes, tasks_slow_processes=args.tasks_slow_processes)
    kind = "quick" if args.quick else ("full" if args.size == 1.0 else f"size {args.size:g}")
    if args.memory_size != 1.0 and "memory" in args.only:
        kind += f", memory size {args.memory_size:g}"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = f"{stamp}-{connection.vendor}-{re.sub(r'[^A-Za-z0-9.]+', '-', kind)}"
    args.output.mkdir(parents=True, exist_ok=True)
    work_dir = args.output / f"{stem}-logs"
    work_dir.mkdir()
    info = machine()
    backends = args.backend
    print(f"dj-webhooks benchmarks ({kind}) on {info['database']}; {info['cpu']}, "
          f"{info['cores']} cores", flush=True)

    rows, failed = [], []
    with ReceiverProcess() as receiver:
        ctx = scenarios.Context(receiver=receiver, sizes=sizes, work_dir=work_dir,
                                backends=backends,
                                log=lambda text: print(text, flush=True),
                                options={"brokers": args.broker, "broker_urls": BROKERS,
                                         "pools": args.celery_pool,
                                         "batch_sizes": args.batch_size,
                                         "prefetch": args.celery_prefetch,
                                         "db_reuse": args.celery_db_reuse,
                                         "profile": args.profile,
                                         "repeat": max(1, args.repeat),
                                         "slow_workers": max(1, args.slow_workers)})
        every = {**scenarios.SCENARIOS, **queues.SCENARIOS, **latency.SCENARIOS,
                 **asyncmode.SCENARIOS, **budget.SCENARIOS}
        steps = [(name, every[name]) for name in args.only]
        if "caller" in args.only or "throughput" in args.only:
            steps.append(("queries", scenarios.worker_query_rows))
        for name, scenario in steps:
            print(f"- {name}", flush=True)
            if name in MEASURES and not set(MEASURES[name]) & set(backends):
                print(f"  skipped: it measures {' and '.join(MEASURES[name])}, and --backend "
                      f"chose {', '.join(backends)}", flush=True)
                continue
            step_started = time.monotonic()
            try:
                rows += scenario(ctx)
            except Exception:
                failed.append(name)
                traceback.print_exc()
            print(f"  ({time.monotonic() - step_started:.1f} s)", flush=True)

    elapsed = time.monotonic() - started
    info["load_end"] = load_average()
    now_state, now_fingerprint = code_state()
    if now_fingerprint != info["fingerprint"]:
        # Subprocesses import the code when they start: part of the run saw other code.
        info["commit"] += f"; CHANGED during the run, to {now_state}"
    title = f"dj-webhooks benchmarks: {connection.vendor}, {kind} ({stamp}, {elapsed:.0f} s)"
    data = [row.as_dict() for row in rows]
    text = markdown(data, info, title, ABOUT)
    (args.output / f"{stem}.md").write_text(text)
    (args.output / f"{stem}.json").write_text(json.dumps(
        {"title": title, "machine": info, "sizes": scenarios.asdict(sizes), "rows": data,
         "failed": failed}, indent=2, default=str))
    png = chart.render(data, args.output / f"{stem}.png", title)
    chart.render_concurrency(data, args.output / f"{stem}-concurrency.png")
    print()
    print(text)
    print(f"Written: {args.output / stem}.md, .json" + (", .png" if png else
          " (no chart: pip install -r bench/requirements.txt)") + f"; logs in {work_dir}")
    if failed:
        print(f"The harness failed in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
