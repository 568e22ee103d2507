"""The testing tools: the locmem backend's outbox, scripted answers, capture, assertions,
the unittest mixin and the pytest plugin."""


import pytest
from django.test import TestCase
from standardwebhooks import Webhook

from djwebhooks import send_event, testing
from djwebhooks.models import Delivery
from djwebhooks.testing import (
    WebhookTestMixin,
    assert_no_webhooks_sent,
    assert_webhook_sent,
    capture_webhooks,
    fast_forward,
    respond,
)
from djwebhooks.worker import Worker
from tests.helpers import travel


@pytest.fixture
def listen_succeeded():
    from djwebhooks import signals

    calls = []

    def receiver(**kwargs):
        calls.append(kwargs)

    signals.delivery_succeeded.connect(receiver, weak=False, dispatch_uid="test-listen")
    yield calls
    signals.delivery_succeeded.disconnect(dispatch_uid="test-listen")


@pytest.fixture
def target(webhook_target, user):
    """A target at a URL where nothing listens: the outbox must not need the network."""
    return webhook_target(owner=user, event="project.update",
                          target_url="http://127.0.0.1:9/hooks/")


@pytest.mark.django_db(transaction=True)
def test_locmem_records_what_would_be_sent(target, user, webhook_outbox):
    [delivery] = send_event("project.update", {"title": "Dj"}, owner=user)

    [sent] = webhook_outbox
    assert sent.url == "http://127.0.0.1:9/hooks/"
    assert sent.event == "project.update"
    assert sent.data == {"title": "Dj"}
    assert sent.webhook_id == delivery.hash_value
    assert sent.status == 200
    Webhook(target.secret).verify(sent.body, sent.headers)  # signed like a real request
    assert sent.delivery.pk == delivery.pk and sent.delivery.attempt == 0
    # The attempt is recorded like a real send's.
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("succeeded", 1)
    assert delivery.attempts.get().notification == "200 OK"


@pytest.mark.django_db(transaction=True)
def test_outbox_keeps_copies(target, user, webhook_outbox):
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    Delivery.objects.filter(pk=delivery.pk).update(event="changed")
    assert webhook_outbox[0].delivery.event == "project.update"


@pytest.mark.django_db(transaction=True)
def test_scripted_failures(target, user, webhook_outbox):
    respond("http://127.0.0.1:9/hooks/", status=500, body="down")
    respond(timeout=True)
    [first] = send_event("project.update", {"n": 1}, owner=user)
    [second] = send_event("project.update", {"n": 2}, owner=user)
    [third] = send_event("project.update", {"n": 3}, owner=user)

    assert [sent.status for sent in webhook_outbox] == [500, None, 200]
    first.refresh_from_db()
    assert (first.status, first.response_status) == ("pending", 500)
    assert first.attempts.get().response_message == "down"
    assert second.attempts.get().error == ("Timed out waiting for 127.0.0.1:9\n\n"
                                           "Details: Timeout: scripted for "
                                           "http://127.0.0.1:9/hooks/")
    assert third.attempts.get().success


@pytest.mark.django_db(transaction=True)
def test_scripted_410_disables_the_target(target, user, webhook_outbox):
    respond(status=410)
    send_event("project.update", {}, owner=user)
    target.refresh_from_db()
    assert target.is_active is False


@pytest.mark.django_db(transaction=True)
def test_scripted_answers_repeat_and_carry_headers(target, user, webhook_outbox):
    respond(status=429, headers={"Retry-After": "120"}, times=2)
    deliveries = [send_event("project.update", {}, owner=user)[0] for _ in range(3)]
    assert [sent.status for sent in webhook_outbox] == [429, 429, 200]
    deliveries[0].refresh_from_db()
    assert deliveries[0].reason == "attempt 2 of 8: Retry-After 120"


@pytest.mark.django_db(transaction=True)
def test_a_worker_retries_into_the_outbox(target, user, webhook_outbox):
    respond(connection_error=True)
    [delivery] = send_event("project.update", {}, owner=user)
    travel(7)
    Worker(burst=True, interval=0.01).run()
    assert [sent.status for sent in webhook_outbox] == [None, 200]
    assert webhook_outbox[1].delivery.attempt == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("succeeded", 2)


def test_outbox_and_answers_are_reset_between_tests(pytester):
    pytester.makepyfile(
        """
        from djwebhooks import testing

        def test_leaves_things_behind():
            testing.outbox.append("left behind")
            testing.respond(status=500)

        def test_starts_clean():
            assert testing.outbox == []
            assert testing.outbox_session._answers == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:django", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_plugin_is_registered_by_entry_point(request):
    assert request.config.pluginmanager.hasplugin("djwebhooks")


@pytest.mark.django_db
def test_capture_webhooks_runs_on_commit_callbacks(target, user):
    # Inside this test's transaction, on-commit callbacks would never run.
    with capture_webhooks() as sent:
        send_event("project.update", {"n": 1}, owner=user)
        assert sent == []  # filled when the block ends
    assert_webhook_sent(event="project.update", to=target.target_url,
                        data_contains={"n": 1}, count=1, sent=sent)


@pytest.mark.django_db
def test_without_capture_nothing_is_sent_inside_a_test_transaction(target, user,
                                                                     webhook_outbox):
    send_event("project.update", {}, owner=user)
    assert_no_webhooks_sent()


def test_assert_webhook_sent_explains_what_was_sent_instead():
    sent = [testing.SentWebhook(url="https://a.example/", headers={"webhook-id": "m"},
                                body=b'{"type":"invoice.paid","data":{"amount":3}}',
                                delivery=None, status=200)]
    assert assert_webhook_sent(event="invoice.paid", sent=sent) == sent
    with pytest.raises(AssertionError) as info:
        assert_webhook_sent(event="project.update", data_contains={"n": 1}, sent=sent)
    assert str(info.value) == (
        "Expected event='project.update', data_contains={'n': 1} to be sent at least once, "
        "found 0. 1 webhook was sent:\n"
        "  1. invoice.paid to https://a.example/ (200): data={'amount': 3}"
    )
    with pytest.raises(AssertionError, match="exactly 2 times, found 1"):
        assert_webhook_sent(to="https://a.example/", count=2, sent=sent)
    with pytest.raises(AssertionError, match="Expected no webhook to be sent. 1 webhook"):
        assert_no_webhooks_sent(sent)
    with pytest.raises(AssertionError, match="found 0. No webhook was sent."):
        assert_webhook_sent(sent=[])


def test_form_mode_envelope():
    sent = testing.SentWebhook(
        url="u", headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"payload=%7B%22type%22%3A%22a%22%2C%22data%22%3A%7B%7D%7D", delivery=None,
        status=200)
    assert (sent.event, sent.data) == ("a", {})


class MixinTests(WebhookTestMixin, TestCase):
    """The unittest way: the mixin empties the outbox and routes sending to it."""

    @classmethod
    def setUpTestData(cls):
        from django.contrib.auth import get_user_model

        from djwebhooks.models import WebhookTarget

        cls.user = get_user_model().objects.create_user("mixin")
        WebhookTarget.objects.create(owner=cls.user, event="project.update",
                                     target_url="http://127.0.0.1:9/mixin/")

    def test_capture_in_a_testcase(self):
        with capture_webhooks():
            send_event("project.update", {"via": "mixin"}, owner=self.user)
        [sent] = self.assertWebhookSent(event="project.update",
                                        data_contains={"via": "mixin"})
        self.assertEqual(sent.url, "http://127.0.0.1:9/mixin/")

    def test_scripted_failure_in_a_testcase(self):
        respond(status=503)
        with capture_webhooks() as sent:
            [delivery] = send_event("project.update", {}, owner=self.user)
        self.assertEqual([item.status for item in sent], [503])
        delivery.refresh_from_db()
        self.assertEqual(delivery.status, "pending")

    def test_nothing_sent(self):
        self.assertNoWebhooksSent()


def recipe(user, sent):
    """The docs' recipe: a first attempt that fails, then a worker making the retry."""
    respond(status=503)
    with capture_webhooks() as first:
        send_event("project.update", {"n": 1}, owner=user)
    assert [item.status for item in first] == [503]
    assert fast_forward(10) == 1  # the retry is due 5 s after the failure (± 20 %)
    with capture_webhooks() as retried:
        assert Worker(burst=True, interval=0.01).run() == 1
    sent.extend(first + retried)


def test_a_worker_runs_inside_a_plain_django_db_test(target, user, db, listen_succeeded):
    sent = []
    recipe(user, sent)
    assert [item.status for item in sent] == [503, 200]
    assert sent[0].webhook_id == sent[1].webhook_id
    assert Delivery.objects.get().status == "succeeded"
    assert len(listen_succeeded) == 1  # signals are sent: capture_webhooks runs on-commit


class WorkerInTestCase(TestCase):
    def test_a_worker_runs_inside_a_test_case(self):
        from django.contrib.auth import get_user_model

        from djwebhooks.models import WebhookTarget

        user = get_user_model().objects.create_user("danny")
        WebhookTarget.objects.create(owner=user, event="project.update",
                                     target_url="https://hooks.example/x/")
        sent = []
        recipe(user, sent)
        self.assertEqual([item.status for item in sent], [503, 200])
        self.assertEqual(Delivery.objects.get().status, "succeeded")
