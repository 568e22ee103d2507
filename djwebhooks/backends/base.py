"""The backend contract: ``enqueue(delivery_ids)``, called once the caller has committed."""


class BaseBackend:
    """Decides when and where deliveries are sent. Subclasses implement ``enqueue()``.

    A backend never builds or sends HTTP itself: whenever and wherever it runs deliveries,
    it calls ``djwebhooks.sending.send_deliveries(ids)``, which claims, sends and records
    them. It is handed ids, never model instances, so that they can cross a queue.
    """

    #: True when ``enqueue()`` has made the first attempt by the time it returns.
    sends_immediately = False
    #: True when failed attempts are retried by the backend's own machinery. (With the
    #: inline backend, retries are made by ``webhooks_worker`` when it runs.)
    retries_failures = False

    def enqueue(self, delivery_ids):
        """Arrange for each delivery in ``delivery_ids`` (a list of ints) to be sent.

        Called after the transaction that wrote them commits. An exception raised here is
        logged and the deliveries stay due in the database: it never reaches the caller.
        """
        raise NotImplementedError("Backends must implement enqueue(delivery_ids).")
