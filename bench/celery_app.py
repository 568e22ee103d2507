"""The benchmarks' Celery app (scenarios 6 and 7): ``celery -A bench.celery_app worker``.

Configured from Django's settings (``CELERY_*`` in ``bench/settings.py``) and finding
dj-webhooks' tasks with ``autodiscover_tasks()``, as a site's own ``celery.py`` would. Its
own task, ``bench.post``, is the bare Celery baseline: it posts the ``[url, headers, body]``
requests it is given with a plain ``requests.Session`` (one per process or thread), with
``djwebhooks.send``'s options (``acks_late``), and no database. For the benchmark the app
also prints ``bench-celery-ready`` on stdout once the worker takes tasks,
and, with ``BENCH_COUNT_DIR`` set, counts each process's claims, SQL statements and new
database connections (``bench.child.Counters``) and writes them to
``BENCH_COUNT_DIR/counts-<pid>.json`` when the process stops; with ``BENCH_PROFILE_DIR``
set, every process of the worker runs under ``cProfile`` (its main thread: a prefork
pool's processes, and the worker's own, which receives and acknowledges the messages) and
writes ``BENCH_PROFILE_DIR/<pid>.prof`` when it stops.
"""

import json
import os
import sys
import threading

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

READY = "bench-celery-ready"
POST_TASK = "bench.post"
_local = threading.local()


@app.task(name=POST_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def post(requests_to_send):
    """POST each ``[url, headers, body]``, one after the other, as the bare loop does."""
    session = getattr(_local, "session", None)
    if session is None:
        import requests

        session = _local.session = requests.Session()
        session.trust_env = False  # as dj-webhooks' session
    for url, headers, body in requests_to_send:
        session.post(url, data=body.encode(), headers=headers, timeout=(5.0, 15.0),
                     allow_redirects=False)


_counters = {}  # pid -> Counters installed in that process
_profiles = {}  # pid -> cProfile.Profile running in that process


def _profile():
    if os.environ.get("BENCH_PROFILE_DIR") and os.getpid() not in _profiles:
        import cProfile

        _profiles[os.getpid()] = profile = cProfile.Profile()
        profile.enable()


def _write_profile():
    profile = _profiles.pop(os.getpid(), None)
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.path.join(os.environ["BENCH_PROFILE_DIR"], f"{os.getpid()}.prof"))


def _count():
    if os.environ.get("BENCH_COUNT_DIR") and os.getpid() not in _counters:
        from bench.child import Counters

        _counters[os.getpid()] = Counters().install()


def _write_counts():
    counters = _counters.get(os.getpid())
    if counters is not None and any(counters.counts.values()):
        path = os.path.join(os.environ["BENCH_COUNT_DIR"], f"counts-{os.getpid()}.json")
        with open(path, "w") as out:
            json.dump(counters.counts, out)


@signals.worker_process_init.connect
def _child_started(**kwargs):
    _count()  # a prefork child: its tasks run here
    _profile()


@signals.worker_ready.connect
def _ready(**kwargs):
    if os.environ.get("BENCH_CELERY_POOL") != "prefork":
        _count()  # threads or solo: the tasks run in this process
    _profile()
    # Straight to the real stdout: the worker redirects sys.stdout to its logger.
    sys.__stdout__.write(READY + "\n")
    sys.__stdout__.flush()


@signals.worker_process_shutdown.connect
def _child_stopping(**kwargs):
    _write_counts()
    _write_profile()


@signals.worker_shutdown.connect
def _stopping(**kwargs):
    _write_counts()
    _write_profile()
