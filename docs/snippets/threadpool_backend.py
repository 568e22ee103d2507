"""A backend that sends in background threads of the process that committed."""

from concurrent.futures import ThreadPoolExecutor

from django.db import connections

from djwebhooks.backends.base import BaseBackend


class ThreadPoolBackend(BaseBackend):
    """Send each batch on a pool of threads: the request that committed does not wait."""

    def __init__(self, *, threads=4):
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhooks")

    def enqueue(self, delivery_ids, *, run_after=None):
        self.pool.submit(self.send, delivery_ids)

    def send(self, delivery_ids):
        try:
            self.run(delivery_ids)
        finally:
            connections.close_all()  # the connection this thread opened
