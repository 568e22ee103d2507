"""Prometheus metrics (the view, the worker's port) and OpenTelemetry spans, after real
deliveries to a receiver on 127.0.0.1."""

import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.db.models import Sum
from django.urls import path
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from djwebhooks import metrics, send_event, signals, tracing
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import DatabaseNow, Delivery, DeliveryAttempt, WorkerHeartbeat
from djwebhooks.worker import Worker
from tests.receiver import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]

# The urls.py snippet of docs/monitoring.rst.
urlpatterns = [path("metrics", metrics.metrics_view)]

FAMILIES = {
    "djwebhooks_attempts", "djwebhooks_attempt_duration_seconds",
    "djwebhooks_worker_claim_size", "djwebhooks_deliveries_pending",
    "djwebhooks_oldest_due_delivery_age_seconds", "djwebhooks_targets_disabled",
    "djwebhooks_workers",
}


@pytest.fixture(autouse=True)
def fresh_metrics(monkeypatch):
    """Each test counts from zero, in metrics installed for it alone."""
    monkeypatch.setattr(metrics, "_installed", None)
    yield
    if metrics._installed is not None:
        metrics._installed.disconnect()


@pytest.fixture
def database_backend(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}


def samples(text):
    """``{(sample name, labels as sorted tuples): value}`` from an exposition."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def families(text):
    """The families' names, without the ``_created`` gauges the text format adds."""
    return {family.name for family in text_string_to_metric_families(text)
            if not family.name.endswith("_created")}


def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def three_outcomes(make_target, user, receiver, closed_port_url):
    """One success, one 500 and one refused connection, sent inline; return the targets."""
    receiver.routes = {"/ok/": Reply(200), "/fail/": Reply(500, b"down")}
    targets = [make_target(target_url=receiver.url + "/ok/?token=s3cret"),
               make_target(target_url=receiver.url + "/fail/"),
               make_target(target_url=closed_port_url)]
    metrics.install()
    send_event("project.update", {"n": 1}, owner=user)
    return targets


def test_the_view_counts_attempts_and_reads_the_queue(client, three_outcomes, user,
                                                      make_target):
    ok, failing, refused = three_outcomes
    # The two retries fell due two minutes and one minute ago.
    Delivery.objects.filter(webhook_target=failing).update(
        next_attempt_at=DatabaseNow() - timedelta(minutes=2))
    Delivery.objects.filter(webhook_target=refused).update(
        next_attempt_at=DatabaseNow() - timedelta(minutes=1))
    make_target(target_url="http://127.0.0.1:1/gone/", is_active=False,
                disabled_at=timezone.now(), disabled_reason="410 Gone")
    # Switched off by its owner: not disabled by dj-webhooks.
    make_target(target_url="http://127.0.0.1:1/off/", is_active=False)
    beat = {"hostname": "h", "pid": 1, "concurrency": 1, "started_at": DatabaseNow()}
    WorkerHeartbeat.objects.create(claimant="alive", worker_id="alive",
                                   last_seen=DatabaseNow(), **beat)
    WorkerHeartbeat.objects.create(claimant="stopped", worker_id="stopped",
                                   last_seen=DatabaseNow(), stopped_at=DatabaseNow(), **beat)
    WorkerHeartbeat.objects.create(claimant="dead", worker_id="dead",
                                   last_seen=DatabaseNow() - timedelta(minutes=5), **beat)

    text = scrape(client)
    found = samples(text)
    assert families(text) == FAMILIES
    attempts = {labels: value for (name, labels), value in found.items()
                if name == "djwebhooks_attempts_total"}
    assert attempts == {
        (("outcome", "success"), ("status_class", "2xx")): 1.0,
        (("outcome", "failure"), ("status_class", "5xx")): 1.0,
        (("outcome", "failure"), ("status_class", "none")): 1.0,
    }
    assert found[("djwebhooks_attempt_duration_seconds_count", ())] == 3.0
    assert found[("djwebhooks_attempt_duration_seconds_bucket", (("le", "30.0"),))] == 3.0
    recorded = DeliveryAttempt.objects.aggregate(ms=Sum("duration"))["ms"]
    assert found[("djwebhooks_attempt_duration_seconds_sum", ())] == pytest.approx(
        recorded / 1000)
    assert found[("djwebhooks_worker_claim_size_count", ())] == 0.0
    assert found[("djwebhooks_deliveries_pending", ())] == 2.0
    assert 120 <= found[("djwebhooks_oldest_due_delivery_age_seconds", ())] < 150
    assert found[("djwebhooks_targets_disabled", ())] == 1.0
    assert found[("djwebhooks_workers", ())] == 1.0
    assert "# HELP djwebhooks_oldest_due_delivery_age_seconds How long ago" in text


def test_nothing_due_is_an_age_of_zero(client, make_target, user, receiver):
    receiver.default = Reply(500)
    make_target()
    send_event("project.update", {"n": 1}, owner=user)  # retried later: pending, not due
    found = samples(scrape(client))
    assert found[("djwebhooks_deliveries_pending", ())] == 1.0
    assert found[("djwebhooks_oldest_due_delivery_age_seconds", ())] == 0.0


def test_counting_starts_at_install(client, make_target, user, receiver):
    make_target()
    send_event("project.update", {"n": 1}, owner=user)  # before anything installed them
    found = samples(scrape(client))
    assert ("djwebhooks_attempts_total", (("outcome", "success"), ("status_class", "2xx"))) \
        not in found
    send_event("project.update", {"n": 2}, owner=user)
    found = samples(scrape(client))
    assert found[("djwebhooks_attempts_total",
                  (("outcome", "success"), ("status_class", "2xx")))] == 1.0


def test_an_attempt_failing_before_its_request_is_counted(client, make_target, user,
                                                          receiver):
    def broken(**kwargs):
        raise RuntimeError("a receiver's bug")

    metrics.install()
    make_target()
    signals.delivery_sending.connect(broken, weak=False)
    try:
        send_event("project.update", {"n": 1}, owner=user)
    finally:
        signals.delivery_sending.disconnect(broken)
    assert receiver.requests == []
    found = samples(scrape(client))
    assert found[("djwebhooks_attempts_total",
                  (("outcome", "failure"), ("status_class", "none")))] == 1.0


def test_a_database_error_leaves_the_gauges_out_not_the_counters(client, three_outcomes,
                                                                  monkeypatch, caplog):
    def unreachable(self, using):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(metrics.QueueCollector, "_pending", unreachable)
    text = scrape(client)
    assert families(text) == {"djwebhooks_attempts", "djwebhooks_attempt_duration_seconds",
                              "djwebhooks_worker_claim_size"}
    assert samples(text)[("djwebhooks_attempt_duration_seconds_count", ())] == 3.0
    assert "dj-webhooks' metrics could not read database 'default'" in caplog.text


def test_the_metrics_have_a_registry_of_their_own_or_the_projects():
    installed = metrics.install()
    assert installed.registry is not REGISTRY
    assert REGISTRY.get_sample_value("djwebhooks_deliveries_pending") is None
    assert metrics.install() is installed
    with pytest.raises(WebhookImproperlyConfigured, match=r"already installed in another "
                       r"registry\. Call djwebhooks\.metrics\.install\(registry\) once"):
        metrics.install(CollectorRegistry())


def test_a_project_registry_gets_the_metrics(make_target, user, receiver,
                                             django_assert_num_queries):
    project = CollectorRegistry(auto_describe=True)  # as the global one is
    with django_assert_num_queries(0):  # registering reads nothing: it may precede migrate
        metrics.install(project)
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    found = samples(generate_latest(project).decode())
    assert found[("djwebhooks_attempts_total",
                  (("outcome", "success"), ("status_class", "2xx")))] == 1.0
    assert found[("djwebhooks_deliveries_pending", ())] == 0.0


def test_without_prometheus_client_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(WebhookImproperlyConfigured, match=r"need the prometheus-client "
                       r"package, which is not installed: pip install "
                       r"'dj-webhooks\[prometheus\]'\."):
        metrics.install()
    with pytest.raises(CommandError, match=r"pip install 'dj-webhooks\[prometheus\]'"):
        call_command("webhooks_worker", "--burst", "--metrics-port", str(free_port()),
                     stdout=StringIO())


def test_a_worker_counts_the_size_of_its_claims(database_backend, make_target, user,
                                                receiver):
    metrics.install()
    make_target()
    for n in range(5):
        send_event("project.update", {"n": n}, owner=user)
    assert Worker(burst=True, interval=0.05).run() == 5
    found = samples(generate_latest(metrics.install().registry).decode())
    assert found[("djwebhooks_worker_claim_size_count", ())] == 1.0
    assert found[("djwebhooks_worker_claim_size_sum", ())] == 5.0
    assert found[("djwebhooks_worker_claim_size_bucket", (("le", "4.0"),))] == 0.0
    assert found[("djwebhooks_worker_claim_size_bucket", (("le", "8.0"),))] == 1.0


def test_the_worker_serves_the_metrics_on_its_port(database_backend, client, make_target,
                                                   user, receiver):
    make_target()
    for n in range(3):
        send_event("project.update", {"n": n}, owner=user)
    port = free_port()
    scraped = []

    def scrape_then_stop():
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=2) as response:
                        text = response.read().decode()
                except OSError:
                    time.sleep(0.05)
                    continue
                found = samples(text)
                if found.get(("djwebhooks_deliveries_pending", ())) == 0.0 and found.get(
                        ("djwebhooks_attempt_duration_seconds_count", ())) == 3.0:
                    scraped.append(text)
                    return
                time.sleep(0.05)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the command's handler stops the worker

    scraper = threading.Thread(target=scrape_then_stop)
    scraper.start()
    call_command("webhooks_worker", "--interval", "0.05", "--metrics-port", str(port),
                 stdout=StringIO(), stderr=StringIO())
    scraper.join()
    assert scraped, "the worker's metrics never showed its three deliveries"
    found = samples(scraped[0])
    assert families(scraped[0]) == families(scrape(client)) == FAMILIES
    assert found[("djwebhooks_attempts_total",
                  (("outcome", "success"), ("status_class", "2xx")))] == 3.0
    assert found[("djwebhooks_worker_claim_size_sum", ())] == 3.0
    assert found[("djwebhooks_workers", ())] == 1.0
    with pytest.raises(OSError):  # the server stopped with the worker
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_a_busy_metrics_port_is_explained():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match=rf"^Cannot serve metrics on 127\.0\.0\.1:"
                           rf"{port} \(.+\); choose another --metrics-port, or stop what "
                           r"listens there\.$"):
            call_command("webhooks_worker", "--burst", "--metrics-port", str(port),
                         stdout=StringIO())


@pytest.mark.parametrize("port", ["0", "65536"])
def test_a_metrics_port_out_of_range_is_refused(port):
    with pytest.raises(CommandError, match=rf"^--metrics-port must be a port number from 1 "
                       rf"to 65535; got {port}\.$"):
        call_command("webhooks_worker", "--burst", "--metrics-port", port, stdout=StringIO())


@pytest.mark.parametrize(("status", "label"), [(None, "none"), (200, "2xx"), (204, "2xx"),
                                                (301, "3xx"), (410, "4xx"), (503, "5xx")])
def test_status_classes(status, label):
    assert metrics.status_class(status) == label


@pytest.fixture
def spans():
    """The spans of webhook attempts, kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.instrument(provider) is True
    yield exporter
    tracing.uninstrument()


def test_each_attempt_is_a_span_that_names_the_host_only(spans, three_outcomes, receiver):
    ok, failing, refused = three_outcomes
    finished = {span.attributes["djwebhooks.delivery.id"]: span
                for span in spans.get_finished_spans()}
    deliveries = {d.webhook_target_id: d.pk for d in Delivery.objects.all()}
    assert set(finished) == set(deliveries.values())
    port = receiver.server.server_address[1]
    success = finished[deliveries[ok.pk]]
    assert success.name == "webhook send"
    assert success.kind == trace.SpanKind.CLIENT
    assert dict(success.attributes) == {
        "djwebhooks.delivery.id": deliveries[ok.pk], "djwebhooks.event": "project.update",
        "http.request.method": "POST", "server.address": "127.0.0.1", "server.port": port,
        "djwebhooks.outcome": "success", "http.response.status_code": 200,
    }
    assert success.status.status_code == trace.StatusCode.UNSET
    failure = finished[deliveries[failing.pk]]
    assert failure.attributes["http.response.status_code"] == 500
    assert failure.attributes["djwebhooks.outcome"] == "failure"
    assert failure.attributes["error.type"] == "500"
    assert (failure.status.status_code, failure.status.description) == (
        trace.StatusCode.ERROR, "500 Internal Server Error")
    unreachable = finished[deliveries[refused.pk]]
    assert "http.response.status_code" not in unreachable.attributes
    assert unreachable.attributes["error.type"] == "DeliveryConnectionError"
    assert unreachable.status.description == "Connection failed"
    for span in finished.values():
        assert not any("s3cret" in str(value) or "/ok/" in str(value)
                       for value in span.attributes.values())
    assert trace.get_current_span() is trace.INVALID_SPAN  # each context was detached


def test_the_span_is_current_while_the_request_is_made(spans, make_target, user, receiver):
    current = []

    def during(**kwargs):
        current.append(trace.get_current_span().get_span_context().span_id)

    make_target()
    signals.attempt_started.connect(during, weak=False)  # after the tracing receiver
    try:
        send_event("project.update", {"n": 1}, owner=user)
    finally:
        signals.attempt_started.disconnect(during)
    [span] = spans.get_finished_spans()
    assert current == [span.context.span_id]


@pytest.fixture
def global_tracing():
    """Spans from the global tracer provider, which is opentelemetry's stand-in until the
    test sets one (``set_global``), as a site would at start-up."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.instrument() is True

    def set_global():
        # opentelemetry lets a process set its provider once; this test undoes it.
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
        tracing._next_look = 0.0  # seen from the next attempt (else within a second)

    monkeypatch = pytest.MonkeyPatch()
    yield exporter, set_global
    monkeypatch.undo()
    tracing.uninstrument()


def test_without_a_tracer_provider_no_span_is_made_until_one_is_set(
        global_tracing, make_target, user, receiver):
    exporter, set_global = global_tracing
    current = []

    def during(**kwargs):
        current.append((trace.get_current_span(),
                        len(tracing._local.__dict__.get("spans") or ())))

    make_target()
    signals.attempt_started.connect(during, weak=False)
    try:
        send_event("project.update", {"n": 1}, owner=user)
        assert current == [(trace.INVALID_SPAN, 0)]  # nothing made, nothing attached
        set_global()
        send_event("project.update", {"n": 2}, owner=user)
    finally:
        signals.attempt_started.disconnect(during)
    [span] = exporter.get_finished_spans()
    assert current[1][0].get_span_context().span_id == span.context.span_id
    assert Delivery.objects.filter(status="succeeded").count() == 2


def test_without_opentelemetry_there_are_no_spans(monkeypatch, make_target, user, receiver,
                                                  caplog):
    tracing.uninstrument()  # as the app instrumented it at start-up
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    caplog.set_level("INFO", logger="djwebhooks.tracing")
    assert tracing.instrument() is False
    assert "pip install 'dj-webhooks[opentelemetry]'" in caplog.text
    assert not any(key == "djwebhooks.tracing"
                   for (key, _), *_ in signals.attempt_started.receivers)
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    assert Delivery.objects.get().status == "succeeded"


def test_the_app_makes_spans_from_the_start_when_opentelemetry_is_installed():
    from django.apps import apps

    from djwebhooks import signals

    def connected():
        return any(key[0] == tracing._UID for key, *_ in signals.attempt_started.receivers)

    tracing.uninstrument()
    assert not connected()
    apps.get_app_config("djwebhooks").ready()
    assert connected()
