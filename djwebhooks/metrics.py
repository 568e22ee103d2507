"""Prometheus metrics: attempts, their latency, the worker's claims, and the queue's state.

Needs ``prometheus-client`` (``pip install 'dj-webhooks[prometheus]'``), imported only
here and only when the metrics are used. The counters and histograms listen to
``djwebhooks.signals`` from the moment ``install()`` is first called, in this process;
the gauges (pending deliveries, the oldest due one's age, disabled targets, live workers)
are read from the database at each scrape, with a few cheap queries. Nothing on the
sending path imports this module.
"""

import logging
import threading

from django.db import DatabaseError, connections
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from djwebhooks import _sql, conf, queue, signals
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import DatabaseNow, Delivery, WebhookTarget, WorkerHeartbeat

__all__ = ["Metrics", "install", "metrics_view", "start_server", "status_class"]

logger = logging.getLogger("djwebhooks.metrics")

#: Seconds: from a receiver on the same network to one that uses the whole default
#: TOTAL_TIMEOUT (30 s).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
#: Deliveries per claim: a worker claims between 16 and 512 at once (more with a
#: concurrency above 256).
CLAIM_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_installed = None
_lock = threading.Lock()


def _client():
    """The ``prometheus_client`` module, or an error that says which extra to install."""
    try:
        import prometheus_client
        import prometheus_client.core
        import prometheus_client.exposition
    except ImportError as exc:
        raise WebhookImproperlyConfigured(
            "dj-webhooks' metrics need the prometheus-client package, which is not "
            "installed: pip install 'dj-webhooks[prometheus]'."
        ) from exc
    return prometheus_client


def status_class(status):
    """The label of an HTTP status: ``"2xx"`` ... ``"5xx"``, or ``"none"`` without one."""
    if isinstance(status, int) and 100 <= status <= 999:
        return f"{status // 100}xx"
    return "none"


class Metrics:
    """dj-webhooks' metrics in one registry (a ``CollectorRegistry`` of their own when
    ``registry`` is None), counted from the signals while connected."""

    def __init__(self, registry=None):
        client = _client()
        self.registry = client.CollectorRegistry() if registry is None else registry
        self.attempts = client.Counter(
            "djwebhooks_attempts", "Delivery attempts made by this process, by outcome "
            "(success, failure) and the response's status class (2xx ... 5xx; none when no "
            "response came back).", ["outcome", "status_class"], registry=self.registry)
        self.latency = client.Histogram(
            "djwebhooks_attempt_duration_seconds", "How long each attempt took, from the "
            "connection to the response's last byte (or the failure).",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.claims = client.Histogram(
            "djwebhooks_worker_claim_size", "How many deliveries each claim of a worker in "
            "this process took (claims that found nothing are not counted).",
            buckets=CLAIM_BUCKETS, registry=self.registry)
        self.registry.register(QueueCollector(client))
        self._uid = f"djwebhooks.metrics.{id(self)}"

    def connect(self):
        """Start counting attempts and claims."""
        signals.attempt_finished.connect(self.attempt_finished, weak=False,
                                         dispatch_uid=self._uid)
        signals.worker_claimed.connect(self.worker_claimed, weak=False, dispatch_uid=self._uid)

    def disconnect(self):
        """Stop counting."""
        signals.attempt_finished.disconnect(dispatch_uid=self._uid)
        signals.worker_claimed.disconnect(dispatch_uid=self._uid)

    def attempt_finished(self, sender, result, **kwargs):
        """Count one attempt and its duration (a receiver of ``attempt_finished``)."""
        outcome = "success" if result.success else "failure"
        self.attempts.labels(outcome, status_class(result.response_status)).inc()
        self.latency.observe(result.duration / 1000)

    def worker_claimed(self, sender, ids, **kwargs):
        """Count one claim's size (a receiver of ``worker_claimed``)."""
        self.claims.observe(len(ids))


class QueueCollector:
    """The gauges read from the database at each scrape: a few queries, each on an index
    (the pending deliveries' partial index for the first two)."""

    def __init__(self, client):
        self.families = client.core

    def describe(self):
        # Registering must not query the database (it may run before migrations).
        return [family for family, _ in self._families()]

    def _families(self):
        core = self.families
        return [
            (core.GaugeMetricFamily(
                "djwebhooks_deliveries_pending", "Deliveries waiting for an attempt: due "
                "now, being sent, or scheduled for a retry."), self._pending),
            (core.GaugeMetricFamily(
                "djwebhooks_oldest_due_delivery_age_seconds", "How long ago the oldest "
                "pending delivery fell due (0 when none is due), by the database's clock: "
                "how far behind sending is."), self._oldest_due_age),
            (core.GaugeMetricFamily(
                "djwebhooks_targets_disabled", "Targets that dj-webhooks disabled (410 "
                "Gone, or failing for longer than DISABLE_AFTER) and no one enabled "
                "again."), self._disabled),
            (core.GaugeMetricFamily(
                "djwebhooks_workers", "Workers whose heartbeat is more recent than one "
                "LEASE and that have not stopped."), self._workers),
        ]

    def collect(self):
        """Yield the gauges; none when the database cannot be read (logged)."""
        using = queue.database()
        families = self._families()
        try:
            values = [(family, read(using)) for family, read in families]
        except DatabaseError:
            logger.exception("dj-webhooks' metrics could not read database %r; the scrape "
                             "has no queue gauges.", using)
            return
        for family, value in values:
            family.add_metric([], value)
            yield family

    def _pending(self, using):
        return Delivery.objects.using(using).pending().count()

    def _oldest_due_age(self, using):
        oldest = (Delivery.objects.using(using)
                  .filter(status=Delivery.Status.PENDING, next_attempt_at__lte=DatabaseNow())
                  .order_by("next_attempt_at").values_list("next_attempt_at", flat=True)
                  .first())
        if oldest is None:
            return 0.0
        return max(0.0, (_sql.db_now(using) - oldest).total_seconds())

    def _disabled(self, using):
        return WebhookTarget.objects.using(using).filter(is_active=False,
                                                         disabled_at__isnull=False).count()

    def _workers(self, using):
        alive = _sql.now_plus(-conf.get_seconds("LEASE"))
        return WorkerHeartbeat.objects.using(using).filter(
            stopped_at__isnull=True, last_seen__gte=alive).count()


def install(registry=None):
    """Create dj-webhooks' metrics (in ``registry``, or a registry of their own) and start
    counting, once per process; return the ``Metrics``."""
    global _installed
    with _lock:
        if _installed is None:
            _installed = Metrics(registry)
            _installed.connect()
        elif registry is not None and registry is not _installed.registry:
            raise WebhookImproperlyConfigured(
                "dj-webhooks' metrics are already installed in another registry. Call "
                "djwebhooks.metrics.install(registry) once, in your AppConfig.ready(), "
                "before anything scrapes or starts a metrics server."
            )
        return _installed


@require_GET
def metrics_view(request):
    """Serve dj-webhooks' metrics in Prometheus' text format (or OpenMetrics, if asked)."""
    client = _client()
    encoder, content_type = client.exposition.choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(install().registry), content_type=content_type)


def start_server(port, address="127.0.0.1"):
    """Serve the metrics at ``http://address:port/metrics`` from a thread of this process;
    return the server (stop it with ``shutdown()``, then ``server_close()``)."""
    client = _client()
    server, _thread = client.start_http_server(port, addr=address,
                                               registry=_ClosingConnections(install().registry))
    return server


class _ClosingConnections:
    """A registry's samples, read on a server's thread, whose database connections are then
    closed: each scrape comes on a new thread, and its connection would outlive it."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        try:
            yield from self.registry.collect()
        finally:
            connections.close_all()

    def restricted_registry(self, names):
        return _ClosingConnections(self.registry.restricted_registry(names))

