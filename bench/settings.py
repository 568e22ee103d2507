"""Django settings for the benchmarks, read from the environment that ``run.py`` sets.

``BENCH_DATABASE_URL`` picks the database (``postgres://...`` or ``sqlite:///path``);
``BENCH_DJWEBHOOKS`` (JSON) is merged over the ``DJWEBHOOKS`` below, so the benchmark and
its worker subprocesses can choose the backend and the timeouts per scenario.
``BENCH_CELERY_BROKER`` and ``BENCH_CELERY_DB_REUSE_MAX`` configure the Celery workers of
the queue scenarios (``bench/celery_app.py``); Django's Tasks framework (django-tasks-db's
database backend) is installed when its packages are.
"""

import json
import os
from importlib.util import find_spec
from urllib.parse import unquote, urlparse

SECRET_KEY = "bench-only-not-secret"
DEBUG = False  # DEBUG would keep every query in memory: no good for timings or RSS
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "djwebhooks",
]
# The Tasks backend's queue (scenarios 6 and 7), when installed: django-tasks-db's table, and
# on Django before 6.0 the django-tasks backport it runs on.
TASKS_INSTALLED = find_spec("django_tasks_db") is not None and (
    find_spec("django.tasks") is not None or find_spec("django_tasks") is not None)
if TASKS_INSTALLED:
    INSTALLED_APPS += [*([] if find_spec("django.tasks") else ["django_tasks"]),
                       "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The inline backend is what some scenarios measure; its warning is for production sites.
SILENCED_SYSTEM_CHECKS = ["djwebhooks.W001"]


def database_from_url(url):
    """Turn ``postgres://user@host:port/name`` or ``sqlite:///path`` into a DATABASES entry.

    The approach of ``tests/settings.py``; SQLite gets a real file, IMMEDIATE transactions
    and a busy timeout, as several processes write to it at once here.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path[1:]),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
        }
    if parsed.scheme == "sqlite":
        if not parsed.path[1:]:
            raise ValueError("the benchmarks need an SQLite file: sqlite:////path/to/file.db")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": parsed.path[1:],
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    raise ValueError(f"database URL scheme {parsed.scheme!r} is not postgres:// or sqlite://")


DATABASES = {"default": database_from_url(os.environ["BENCH_DATABASE_URL"])}

DJWEBHOOKS = {
    "EVENTS": {
        "bench.fan": "One call fanning out to many targets.",
        "bench.one": "One call, one target.",
        "bench.latency": "One call, one target, timed from commit to arrival.",
    },
    "BACKEND": "djwebhooks.backends.database.DatabaseBackend",
    # The benchmark's receiver listens on 127.0.0.1; real targets must be public.
    "ALLOWED_NETWORKS": ["127.0.0.0/8"],
    **json.loads(os.environ.get("BENCH_DJWEBHOOKS") or "{}"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    # Per-delivery INFO lines would cost time in the measurement; failures still show.
    "loggers": {"djwebhooks": {"handlers": ["stderr"], "level": "ERROR", "propagate": False}},
}

# Celery (scenarios 6 and 7), read by bench/celery_app.py; inert without Celery.
CELERY_BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/7")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes every database connection before and after each task
# unless this is set (then it closes them every this many tasks).
CELERY_DB_REUSE_MAX = int(os.environ.get("BENCH_CELERY_DB_REUSE_MAX") or 0) or None
if os.environ.get("BENCH_CONN_MAX_AGE"):
    # A measured process's own choice (scenario 8 measures the worker both ways).
    DATABASES["default"].update(CONN_MAX_AGE=int(os.environ["BENCH_CONN_MAX_AGE"]),
                                CONN_HEALTH_CHECKS=True)
elif CELERY_DB_REUSE_MAX:
    # Kept connections, as the docs pair them: dj-webhooks' tasks close a connection
    # older than CONN_MAX_AGE (0 by default: every task), as Django does after a request.
    DATABASES["default"].update(CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True)
