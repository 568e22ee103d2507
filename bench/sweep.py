"""The recovery sweep on a large table: ``python bench/sweep.py --database-url postgres://...``.

Fills dj-webhooks' delivery table with ``--finished`` finished deliveries and
``--pending`` pending ones (a fifth of them overdue: due an hour ago, handed to a queue an
hour ago), then times what ``webhooks_sweep`` does every minute: a sweep that hands the
overdue ones to a backend that does nothing, and then sweeps that find nothing to do.
Prints a markdown table. PostgreSQL only: the rows are made with ``generate_series``.
The named database is created if missing, and its dj-webhooks tables are dropped and made
again at every run.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="postgres://user@host:port/name (default $DATABASE_URL)")
    parser.add_argument("--finished", type=int, default=2_000_000)
    parser.add_argument("--pending", type=int, default=25_000)
    parser.add_argument("--repeat", type=int, default=5, help="times each sweep is timed")
    args = parser.parse_args(argv)
    if not (args.database_url or "").startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a postgres:// URL")
    sys.path.insert(0, str(ROOT))
    os.environ["BENCH_DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    from bench.run import ensure_postgres_database

    ensure_postgres_database(args.database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "djwebhooks", "zero", verbosity=0)
    call_command("migrate", verbosity=0)
    rows = fill(args.finished, args.pending)
    print(measure(rows, args.repeat))


def fill(finished, pending):
    """Insert the rows in three statements; return how many of each kind."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from djwebhooks.models import Delivery, WebhookTarget

    user, _ = get_user_model().objects.get_or_create(username="bench-sweep")
    target = WebhookTarget.objects.create(owner=user, event="bench.one",
                                          target_url="https://bench.example/")
    overdue = pending // 5
    table = connection.ops.quote_name(Delivery._meta.db_table)
    insert = (
        f"INSERT INTO {table} (event, payload, hash_value, status, attempt, success, reason, "
        "claimed_by, webhook_target_id, created, modified, next_attempt_at, queued_at) "
        "SELECT 'bench.one', '{{}}', %s || g, %s, 0, false, '', '', %s, now(), now(), "
        "{due}, {due} FROM generate_series(1, %s) g"
    )
    with connection.cursor() as cursor:
        cursor.execute(insert.format(due="NULL"), ["done_", "succeeded", target.pk, finished])
        cursor.execute(insert.format(due="now() - interval '1 hour'"),
                       ["lost_", "pending", target.pk, overdue])
        cursor.execute(insert.format(due="now() - interval '10 seconds'"),
                       ["queued_", "pending", target.pk, pending - overdue])
        cursor.execute(f"ANALYZE {table}")
    return {"finished": finished, "overdue": overdue, "queued": pending - overdue}


def measure(rows, repeat):
    from djwebhooks.backends.base import BaseBackend
    from djwebhooks.sweep import sweep

    class Discard(BaseBackend):
        defers = True

        def enqueue(self, delivery_ids, *, run_after=None):
            pass

    started = time.perf_counter()
    result = sweep(backend=Discard(), limit=None)
    handing = time.perf_counter() - started
    idle = []
    for _ in range(repeat):
        started = time.perf_counter()
        assert sweep(backend=Discard(), limit=None).handed == 0
        idle.append(time.perf_counter() - started)
    per = handing / max(result.handed, 1) * 1e6
    return "\n".join([
        f"Table: {rows['finished']:,} finished, {rows['overdue']:,} overdue and "
        f"{rows['queued']:,} pending deliveries held by a queue.",
        "",
        "| sweep | deliveries handed over | time |",
        "|---|---|---|",
        f"| first (hands the overdue ones over) | {result.handed:,} | "
        f"{handing * 1000:.0f} ms ({per:.0f} µs each) |",
        f"| next ones (nothing to do), median of {repeat} | 0 | "
        f"{statistics.median(idle) * 1000:.1f} ms |",
    ])


if __name__ == "__main__":
    main()
