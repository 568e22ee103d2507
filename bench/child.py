"""A measured process: ``python -m bench.child '<json config>'``, started by the scenarios.

It sets Django up, prints ``ready``, waits for ``go`` on stdin (so start-up is not
measured), does its work and prints ``result {json}``. Modes:

- ``worker``: ``djwebhooks.worker.Worker`` with the given ``concurrency``, ``interval``,
  ``listen``, ``burst`` and ``send_mode`` (the worker's defaults for those not given);
  without ``burst`` it runs until ``stop`` arrives on stdin. With ``send_mode`` async, the
  HTTP client's module is imported before ``ready``, as ``bare_aio``'s is.
- ``bare``: the ceiling for this HTTP client: ``concurrency`` threads, each with its own
  plain ``requests.Session``, POST the requests listed in ``requests_file`` (JSON lines of
  ``[url, headers, body]``, from ``start`` to ``stop``). No database, no signing. With
  ``"calls": "prepared"``, each request is a ``PreparedRequest`` given to
  ``Session.send``, as dj-webhooks made them before it sent through urllib3 directly,
  instead of ``Session.post``; with ``"calls": "urllib3"``, the calls it makes now: each
  thread has a ``urllib3.PoolManager``, and each request is ``urlopen`` on the pool for
  its host, its body streamed and the first ``body_limit`` bytes read, as the worker does.
- ``bare_aio``: the same with aiohttp, ``concurrency`` requests in flight on one event
  loop: the async mode's ceiling.
- ``inline``: ``calls`` calls of ``send_event`` to one target each (identifiers ``t0`` to
  ``t<targets-1>``), each in its own transaction, with the inline backend: sending in the
  caller's thread.
- ``db_worker``: django-tasks-db's ``db_worker`` command (``interval``, ``worker_id``), which
  runs until ``stop`` arrives on stdin; the result is what ``count`` counted.

``rss_at`` lists numbers of deliveries handled at which to read the process's RSS.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_status(field):
    """A field of /proc/self/status in kB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class RSSMonitor:
    """Reads RSS when ``count()`` first reaches each of ``thresholds``."""

    def __init__(self, thresholds, count):
        self.pending = sorted(thresholds)
        self.count = count
        self.samples = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        if self.pending:
            self._thread.start()
        return self

    def _run(self):
        while self.pending and not self._done.wait(0.01):
            while self.pending and self.count() >= self.pending[0]:
                self.samples[self.pending.pop(0)] = read_status("VmRSS")

    def finish(self):
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        for threshold in self.pending:  # fewer deliveries than asked for: read it now
            if self.count() >= threshold:
                self.samples[threshold] = read_status("VmRSS")
        return {str(k): v for k, v in self.samples.items()}


class Counters:
    """Counts claims, SQL statements and new database connections on every thread.

    A context manager (or ``install()`` for the whole process) that wraps, never changes,
    ``djwebhooks.worker.claim``, Django's cursor ``execute``/``executemany`` and the
    connection's ``connect``: a few hundred nanoseconds per call, next to milliseconds.
    BEGIN and COMMIT do not go through a cursor, so they are not counted.
    """

    def __init__(self):
        self.counts = {"claims": 0, "claimed": 0, "statements": 0, "connects": 0}
        self._lock = threading.Lock()
        self._saved = None

    def _count(self, key, n=1):
        with self._lock:
            self.counts[key] += n

    def install(self):
        from django.db.backends.base.base import BaseDatabaseWrapper
        from django.db.backends.utils import CursorWrapper

        from djwebhooks import queue

        claim, execute = queue.claim, CursorWrapper.execute
        executemany, connect = CursorWrapper.executemany, BaseDatabaseWrapper.connect
        self._saved = (claim, execute, executemany, connect)
        count = self._count

        def counted_claim(*args, **kwargs):
            claimed = claim(*args, **kwargs)
            count("claims")
            count("claimed", len(claimed.ids))
            return claimed

        def counted_execute(cursor, *args, **kwargs):
            count("statements")
            return execute(cursor, *args, **kwargs)

        def counted_executemany(cursor, *args, **kwargs):
            count("statements")
            return executemany(cursor, *args, **kwargs)

        def counted_connect(wrapper):
            count("connects")
            return connect(wrapper)

        queue.claim = counted_claim
        CursorWrapper.execute = counted_execute
        CursorWrapper.executemany = counted_executemany
        BaseDatabaseWrapper.connect = counted_connect
        return self

    def uninstall(self):
        from django.db.backends.base.base import BaseDatabaseWrapper
        from django.db.backends.utils import CursorWrapper

        from djwebhooks import queue

        queue.claim, CursorWrapper.execute, CursorWrapper.executemany, \
            BaseDatabaseWrapper.connect = self._saved

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()


def run_worker(config):
    from djwebhooks.worker import Worker

    counters = Counters().install() if config.get("count") else None

    options = {name: config[name] for name in ("interval", "listen") if name in config}
    worker = Worker(concurrency=config["concurrency"], burst=config.get("burst", True),
                    worker_id=config.get("worker_id"), mode=config.get("send_mode"),
                    **options)
    monitor = RSSMonitor(config.get("rss_at", []), lambda: worker.processed)
    threads = ThreadCounter().start()
    if not worker.burst:
        def stop_on_request():
            sys.stdin.readline()
            worker.stop()

        threading.Thread(target=stop_on_request, daemon=True).start()
    monitor.start()
    started, cpu = time.monotonic(), time.process_time()
    processed = worker.run()
    finished, cpu = time.monotonic(), time.process_time() - cpu
    result = {"started": started, "finished": finished, "processed": processed,
              "cpu_s": cpu,
              "rss_kb": monitor.finish(), "counts": counters.counts if counters else {},
              "most_threads": threads.finish()}
    if config.get("gc"):
        result["gc"] = gc_state()
    return result


def gc_state():
    """What the garbage collector holds: objects tracked, uncollectable garbage, and the
    collections run per generation."""
    import gc

    gc.collect()
    return {"objects": len(gc.get_objects()), "garbage": len(gc.garbage),
            "collections": [stats["collections"] for stats in gc.get_stats()]}


class ThreadCounter:
    """The most threads the process ran at once, sampled every 50 ms."""

    def __init__(self):
        self.most = threading.active_count()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        while not self._done.wait(0.05):
            self.most = max(self.most, threading.active_count())

    def finish(self):
        self._done.set()
        self._thread.join()
        return self.most - 1  # not this counter's own thread


def aiohttp_session():
    """An aiohttp session set up as a webhook sender would set it up: no cookies, no
    decompression, nothing from the environment, no connection limit. Make it on the loop
    that uses it."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, use_dns_cache=False)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
        auto_decompress=False, skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"))


def run_bare_aio(config):
    """The async mode's baseline: aiohttp (the fastest general asyncio HTTP client
    measured here) posting the same requests with ``concurrency`` in flight on one event
    loop, with no database, no signing and no guards."""
    import asyncio

    with open(config["requests_file"]) as lines:
        todo = [json.loads(line) for line in lines]
    todo = todo[config.get("start", 0):config.get("stop", len(todo))]
    statuses = []

    async def main():
        async with aiohttp_session() as session:
            iterator = iter(todo)

            async def loop():
                for url, headers, body in iterator:
                    async with session.post(url, data=body.encode(), headers=headers,
                                            allow_redirects=False) as response:
                        await response.content.read(4096)
                        statuses.append(response.status)

            started, cpu = time.monotonic(), time.process_time()
            await asyncio.gather(*(loop() for _ in range(config["concurrency"])))
            return started, time.monotonic(), time.process_time() - cpu

    started, finished, cpu = asyncio.run(main())
    return {"started": started, "finished": finished, "processed": len(statuses),
            "cpu_s": cpu,
            "ok": sum(1 for status in statuses if status == 200), "rss_kb": {}}


def run_bare(config):
    with open(config["requests_file"]) as lines:
        todo = [json.loads(line) for line in lines]
    todo = todo[config.get("start", 0):config.get("stop", len(todo))]
    loop = bare_urllib3 if config.get("calls") == "urllib3" else bare_requests
    iterator, lock = iter(todo), threading.Lock()
    statuses = []
    timeout = tuple(config.get("timeout", (5.0, 15.0)))

    def next_item():
        with lock:
            return next(iterator, None)

    threads = [threading.Thread(target=loop, args=(config, next_item, timeout, statuses))
               for _ in range(config["concurrency"])]
    started, cpu = time.monotonic(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished, cpu = time.monotonic(), time.process_time() - cpu
    return {"started": started, "finished": finished, "processed": len(statuses),
            "cpu_s": cpu,
            "ok": sum(1 for status in statuses if status == 200), "rss_kb": {}}


def bare_requests(config, next_item, timeout, statuses):
    import requests

    prepared = config.get("calls") == "prepared"
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc look-ups, as dj-webhooks
    while (item := next_item()) is not None:
        url, headers, body = item
        if prepared:
            request = requests.PreparedRequest()
            request.prepare(method="POST", url=url, headers=headers, data=body.encode())
            response = session.send(request, timeout=timeout, allow_redirects=False)
        else:
            response = session.post(url, data=body.encode(), headers=headers,
                                    timeout=timeout, allow_redirects=False)
        statuses.append(response.status_code)
    session.close()


def bare_urllib3(config, next_item, timeout, statuses):
    """The calls ``djwebhooks.transport`` makes, with urllib3's own connections (not the
    guarded ones), no deadline and no URL or header checks."""
    from urllib.parse import urlsplit

    import urllib3
    from urllib3.util import Retry, Timeout

    pools = urllib3.PoolManager(num_pools=16, maxsize=16)
    retries = Retry(0, read=False)
    body_limit = config.get("body_limit", 4096)
    while (item := next_item()) is not None:
        url, headers, body = item
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = body.encode()
        headers = {**headers, "Content-Length": str(len(body))}
        pool = pools.connection_from_host(parts.hostname, parts.port, parts.scheme)
        response = pool.urlopen(
            "POST", path, body=body, headers=headers, redirect=False, assert_same_host=False,
            preload_content=False, decode_content=False, retries=retries,
            timeout=Timeout(connect=timeout[0], read=timeout[1]), chunked=False,
        )
        response.read(body_limit, decode_content=True)
        response.close()
        response.release_conn()
        statuses.append(response.status)
    pools.clear()


def run_inline(config):
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from djwebhooks import send_event

    owner = get_user_model().objects.get(username="bench")
    targets = config["targets"]
    handled = 0
    monitor = RSSMonitor(config.get("rss_at", []), lambda: handled)
    monitor.start()
    started = time.monotonic()
    for number in range(config["calls"]):
        with transaction.atomic():
            send_event("bench.one", {"id": number, "title": "Benchmark payload"},
                       owner=owner, identifier=f"t{number % targets}")
        handled += 1
    finished = time.monotonic()
    return {"started": started, "finished": finished, "processed": handled,
            "rss_kb": monitor.finish()}


def run_db_worker(config):
    from django.core.management import call_command

    counters = Counters().install() if config.get("count") else None
    started = time.monotonic()

    def stop_on_request():
        sys.stdin.readline()
        # db_worker has no way to be stopped from another thread: report and leave.
        result = {"started": started, "finished": time.monotonic(), "processed": None,
                  "rss_kb": {}, "counts": counters.counts if counters else {},
                  "rss_end_kb": read_status("VmRSS"), "hwm_kb": read_status("VmHWM"),
                  "cpu_s": time.process_time()}
        print("result " + json.dumps(result), flush=True)
        os._exit(0)

    threading.Thread(target=stop_on_request, daemon=True).start()
    call_command("db_worker", "--no-startup-delay", "--no-reload",
                 "--interval", str(config.get("interval", 1.0)),
                 "--worker-id", config.get("worker_id") or f"bench-{os.getpid()}",
                 verbosity=0)
    raise RuntimeError("db_worker returned")


MODES = {"worker": run_worker, "bare": run_bare, "inline": run_inline,
         "db_worker": run_db_worker, "bare_aio": run_bare_aio}


def main():
    config = json.loads(sys.argv[1])
    if config["mode"] not in ("bare", "bare_aio"):
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
        import django

        django.setup()
        if config.get("send_mode") == "async":
            import djwebhooks.aio  # noqa: F401 - start-up, as the bare loop's import of aiohttp
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    cpu = time.process_time()
    result = MODES[config["mode"]](config)
    result["rss_end_kb"] = read_status("VmRSS")
    result["hwm_kb"] = read_status("VmHWM")
    # This process's CPU for the work measured: over the timed part, where the mode says.
    result.setdefault("cpu_s", time.process_time() - cpu)
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
