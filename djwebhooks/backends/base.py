"""The backend contract: ``enqueue(delivery_ids)``, called once the caller has committed."""


class BaseBackend:
    """Decides when and where deliveries are sent. Subclasses implement ``enqueue()``.

    A backend never builds or sends HTTP itself: whenever and wherever it runs a delivery,
    it calls ``djwebhooks.delivery.deliver(delivery_id)``.
    """

    #: True when ``enqueue()`` has made the first attempt by the time it returns.
    sends_immediately = False
    #: True when failed attempts are retried by the backend's own machinery. (With the
    #: inline backend, retries are made by ``webhooks_worker`` when it runs.)
    retries_failures = False

    def enqueue(self, delivery_ids):
        """Arrange for each delivery in ``delivery_ids`` (a list of ints) to be sent."""
        raise NotImplementedError("Backends must implement enqueue(delivery_ids).")
