"""``DatabaseBackend``: deliveries wait in the ``Delivery`` table for ``webhooks_worker``."""

from djwebhooks.backends.base import BaseBackend


class DatabaseBackend(BaseBackend):
    """Leave deliveries in the database, due now; ``manage.py webhooks_worker`` sends them.

    Needs nothing but the database the site already has. The caller's request never waits
    for a receiver, and a delivery survives any process dying: it is committed before
    anything is sent.
    """

    polls = True

    def enqueue(self, delivery_ids, *, run_after=None):
        """Nothing to do: the rows are due from the moment they are committed (or from
        their retry time), and the worker finds them."""
