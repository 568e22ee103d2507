"""Tests for the example app: run with ``python example_project/manage.py test projects``."""

import json
import time
from io import StringIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.test import LiveServerTestCase, TestCase, override_settings
from django.urls import reverse
from django.utils import timezone

from djwebhooks.backends import get_backend
from djwebhooks.backends.database import DatabaseBackend
from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.signing import sign
from djwebhooks.testing import WebhookTestMixin, capture_webhooks, respond
from djwebhooks.transport import close_session
from djwebhooks.worker import Worker
from projects.models import Project, ReceivedWebhook
from projects.views import FLAKY_RETRY_AFTER

RECEIVER_URL = "http://testserver" + reverse("projects:receiver")
FLAKY_URL = "http://testserver" + reverse("projects:flaky-receiver")


def envelope(event="project.update", **data):
    """Return a webhook body as dj-webhooks would send it."""
    body = {"type": event, "timestamp": "2026-01-01T00:00:00Z", "data": data or {"a": 1}}
    return json.dumps(body, separators=(",", ":")).encode()


class ReceiverViewTests(TestCase):
    """The receiver views: signature checks, what they store, and the flaky one's 503."""

    @classmethod
    def setUpTestData(cls):
        cls.user = get_user_model().objects.create_user("audreyr")
        cls.target = WebhookTarget.objects.create(
            owner=cls.user, event="project.update", identifier="acme", target_url=RECEIVER_URL
        )
        cls.flaky_target = WebhookTarget.objects.create(
            owner=cls.user, event="project.update", identifier="acme", target_url=FLAKY_URL
        )

    def setUp(self):
        # The receiver remembers the webhook-ids it accepted (replay protection).
        cache.clear()

    def post(self, url, body, *, secret, msg_id="msg_test", timestamp=None, signature=None):
        """POST ``body`` to ``url`` with Standard Webhooks headers signed with ``secret``."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        if signature is None:
            signature = sign(secret, msg_id, timestamp, body)
        return self.client.post(
            url,
            body,
            content_type="application/json",
            headers={
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature,
            },
        )

    def test_accepts_a_correctly_signed_webhook(self):
        body = envelope(title="Acme")
        response = self.post(reverse("projects:receiver"), body, secret=self.target.secret)
        self.assertEqual(response.status_code, 200)
        received = ReceivedWebhook.objects.get()
        self.assertTrue(received.verified)
        self.assertEqual(received.webhook_id, "msg_test")
        self.assertEqual(received.event_type, "project.update")
        self.assertEqual(received.body["data"], {"title": "Acme"})
        self.assertEqual(received.response_status, 200)

    def test_rejects_a_bad_signature(self):
        response = self.post(
            reverse("projects:receiver"),
            envelope(),
            secret=self.target.secret,
            signature="v1,bm90IHRoZSByaWdodCBzaWduYXR1cmU=",
        )
        self.assertEqual(response.status_code, 400)
        received = ReceivedWebhook.objects.get()
        self.assertFalse(received.verified)
        self.assertEqual(received.response_status, 400)

    def test_says_why_it_refused(self):
        response = self.post(reverse("projects:receiver"), envelope(), secret="whsec_" + "A" * 32)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.content,
                         b"No signature in the webhook-signature header matches the secret.\n")

    def test_answers_a_replayed_webhook_without_processing_it_again(self):
        url = reverse("projects:receiver")
        timestamp = int(time.time())
        first = self.post(url, envelope(), secret=self.target.secret, timestamp=timestamp)
        self.assertEqual(first.status_code, 200)
        replayed = self.post(url, envelope(), secret=self.target.secret, timestamp=timestamp)
        self.assertEqual(replayed.status_code, 200)
        self.assertEqual(replayed.content,
                         b"The webhook-id 'msg_test' was already received here.\n")
        self.assertEqual(
            [(r.verified, r.response_status) for r in ReceivedWebhook.objects.order_by("pk")],
            [(True, 200)],
        )

    def test_accepts_the_previous_secret_while_a_rotation_lasts(self):
        old = self.target.secret
        self.target.rotate_secret(3600)
        url = reverse("projects:receiver")
        self.assertEqual(self.post(url, envelope(), secret=old).status_code, 200)
        self.assertEqual(
            self.post(url, envelope(), secret=self.target.secret, msg_id="msg_2").status_code,
            200,
        )
        self.target.rotate_secret(0)
        self.assertEqual(self.post(url, envelope(), secret=old, msg_id="msg_3").status_code,
                         400)

    def test_rejects_a_body_changed_after_signing(self):
        signature = sign(self.target.secret, "msg_test", int(time.time()), envelope(a=1))
        response = self.post(
            reverse("projects:receiver"),
            envelope(a=2),
            secret=self.target.secret,
            signature=signature,
        )
        self.assertEqual(response.status_code, 400)

    def test_rejects_a_stale_timestamp(self):
        response = self.post(
            reverse("projects:receiver"),
            envelope(),
            secret=self.target.secret,
            timestamp=int(time.time()) - 10 * 60,
        )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(ReceivedWebhook.objects.get().verified)

    def test_rejects_the_secret_of_another_url(self):
        response = self.post(
            reverse("projects:receiver"), envelope(), secret=self.flaky_target.secret
        )
        self.assertEqual(response.status_code, 400)

    def test_accepts_the_form_content_type(self):
        payload = envelope(title="Acme").decode()
        body = f"payload={payload}"
        timestamp = int(time.time())
        response = self.client.post(
            reverse("projects:receiver"),
            body,
            content_type="application/x-www-form-urlencoded",
            headers={
                "webhook-id": "msg_form",
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.target.secret, "msg_form", timestamp, body),
            },
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(ReceivedWebhook.objects.get().body["data"], {"title": "Acme"})

    def test_only_accepts_post(self):
        self.assertEqual(self.client.get(reverse("projects:receiver")).status_code, 405)

    def test_flaky_receiver_refuses_a_webhook_id_once(self):
        url = reverse("projects:flaky-receiver")
        secret = self.flaky_target.secret
        self.assertEqual(self.post(url, envelope(), secret=secret).status_code, 503)
        self.assertEqual(self.post(url, envelope(), secret=secret).status_code, 200)
        self.assertEqual(self.post(url, envelope(), secret=secret).status_code, 200)
        self.assertEqual(
            self.post(url, envelope(), secret=secret, msg_id="msg_other").status_code, 503
        )

    def test_flaky_receiver_asks_to_be_retried_in_a_second(self):
        url = reverse("projects:flaky-receiver")
        secret = self.flaky_target.secret
        refused = self.post(url, envelope(), secret=secret)
        self.assertEqual(refused.status_code, 503)
        self.assertEqual(refused["Retry-After"], "1")
        self.assertEqual(FLAKY_RETRY_AFTER, 1)
        accepted = self.post(url, envelope(), secret=secret)
        self.assertEqual(accepted.status_code, 200)
        self.assertFalse(accepted.has_header("Retry-After"))

    def test_flaky_receiver_checks_signatures_first(self):
        url = reverse("projects:flaky-receiver")
        response = self.post(url, envelope(), secret=self.target.secret)
        self.assertEqual(response.status_code, 400)

    def test_received_list_shows_what_arrived(self):
        self.post(reverse("projects:receiver"), envelope(), secret=self.target.secret)
        response = self.client.get(reverse("projects:received"))
        self.assertContains(response, "msg_test")
        self.assertContains(response, "project.update")


class ProjectWebhookTests(TestCase):
    """Creating and editing projects records deliveries; the worker sends them later."""

    @classmethod
    def setUpTestData(cls):
        cls.user = get_user_model().objects.create_user("audreyr")
        cls.project = Project.objects.create(owner=cls.user, slug="acme", title="Acme")
        cls.target = WebhookTarget.objects.create(
            owner=cls.user,
            event="project.update",
            identifier="acme",
            target_url="http://127.0.0.1:9/never-called/",
        )

    def setUp(self):
        self.client.force_login(self.user)

    def edit(self, slug="acme", **data):
        """Post the edit form for project ``slug``."""
        data = {"title": "Acme, renamed", "description": "New.", **data}
        return self.client.post(reverse("projects:edit", kwargs={"slug": slug}), data)

    def test_the_example_uses_the_database_backend(self):
        self.assertIsInstance(get_backend(), DatabaseBackend)

    def test_editing_a_project_records_a_delivery_for_the_worker(self):
        # execute=True: the edit commits, and the backend is handed the delivery. The
        # database backend sends nothing: the delivery waits, due now, for the worker (its
        # target's port 9 would refuse a connection anyway).
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            response = self.edit()
        self.assertRedirects(response, self.project.get_absolute_url())
        self.assertEqual(len(callbacks), 1)
        delivery = Delivery.objects.get()
        self.assertEqual(delivery.webhook_target, self.target)
        self.assertEqual(delivery.event, "project.update")
        self.assertEqual(delivery.status, Delivery.Status.PENDING)
        self.assertEqual(delivery.attempt, 0)
        self.assertFalse(delivery.attempts.exists())
        self.assertLessEqual(delivery.next_attempt_at, timezone.now())
        self.assertTrue(delivery.hash_value.startswith("msg_"))
        self.assertEqual(delivery.payload["title"], "Acme, renamed")
        self.assertEqual(delivery.payload["slug"], "acme")

    def test_targets_for_other_identifiers_get_nothing(self):
        WebhookTarget.objects.filter(pk=self.target.pk).update(identifier="other")
        with self.captureOnCommitCallbacks(execute=False):
            self.edit()
        self.assertFalse(Delivery.objects.exists())

    def test_an_invalid_form_sends_nothing(self):
        with self.captureOnCommitCallbacks(execute=False):
            response = self.edit(title="")
        self.assertEqual(response.status_code, 200)
        self.assertFalse(Delivery.objects.exists())

    def test_only_the_owner_can_edit(self):
        other = get_user_model().objects.create_user("pydanny")
        self.client.force_login(other)
        self.assertEqual(self.edit().status_code, 404)
        self.assertFalse(Delivery.objects.exists())

    def test_creating_a_project_sends_project_create(self):
        target = WebhookTarget.objects.create(
            owner=self.user,
            event="project.create",
            identifier="new",
            target_url="http://127.0.0.1:9/never-called/",
        )
        with self.captureOnCommitCallbacks(execute=False):
            Project.objects.create(owner=self.user, slug="new", title="New")
        delivery = Delivery.objects.get()
        self.assertEqual(delivery.webhook_target, target)
        self.assertEqual(delivery.event, "project.create")
        self.assertEqual(delivery.payload["title"], "New")

    def test_saving_an_existing_project_does_not_send_project_create(self):
        WebhookTarget.objects.create(
            owner=self.user,
            event="project.create",
            identifier="acme",
            target_url="http://127.0.0.1:9/never-called/",
        )
        with self.captureOnCommitCallbacks(execute=False):
            self.project.save()
        self.assertFalse(Delivery.objects.exists())


class OutboxTests(WebhookTestMixin, TestCase):
    """The same flows checked through dj-webhooks' test outbox: no network, no worker."""

    @classmethod
    def setUpTestData(cls):
        cls.user = get_user_model().objects.create_user("audreyr")
        cls.project = Project.objects.create(owner=cls.user, slug="acme", title="Acme")
        cls.target = WebhookTarget.objects.create(
            owner=cls.user, event="project.update", identifier="acme",
            target_url="https://hooks.example/acme/",
        )

    def setUp(self):
        super().setUp()
        self.client.force_login(self.user)

    def test_an_edit_sends_project_update(self):
        with capture_webhooks():
            self.client.post(self.project.get_absolute_url(),
                             {"title": "Acme 2", "description": "New."})
        [sent] = self.assertWebhookSent(event="project.update", to=self.target.target_url,
                                        data_contains={"slug": "acme", "title": "Acme 2"})
        self.assertEqual(sent.envelope["identifier"], "acme")
        self.assertEqual(sent.headers["webhook-id"], sent.delivery.hash_value)

    def test_creating_a_project_sends_project_create(self):
        WebhookTarget.objects.create(owner=self.user, event="project.create",
                                     identifier="new", target_url="https://hooks.example/new/")
        with capture_webhooks() as sent:
            Project.objects.create(owner=self.user, slug="new", title="New")
        self.assertWebhookSent(event="project.create", data_contains={"title": "New"},
                               count=1, sent=sent)

    def test_a_receiver_that_is_gone_is_disabled(self):
        respond(self.target.target_url, status=410)
        with capture_webhooks():
            self.client.post(self.project.get_absolute_url(), {"title": "Acme 3"})
        self.target.refresh_from_db()
        self.assertFalse(self.target.is_active)
        self.assertEqual(Delivery.objects.get().status, Delivery.Status.FAILED)

    def test_an_invalid_edit_sends_nothing(self):
        with capture_webhooks():
            self.client.post(self.project.get_absolute_url(), {"title": ""})
        self.assertNoWebhooksSent()


class EndToEndTests(LiveServerTestCase):
    """Real deliveries over HTTP, from the edit view through the worker to the receiver
    views on 127.0.0.1."""

    def tearDown(self):
        close_session()

    def subscribe(self, user, url_name):
        """Subscribe ``user``'s project "acme" to project.update at ``url_name``."""
        return WebhookTarget.objects.create(
            owner=user,
            event="project.update",
            identifier="acme",
            target_url=self.live_server_url + reverse(url_name),
        )

    def test_an_edit_reaches_the_receiver_signed(self):
        user = get_user_model().objects.create_user("audreyr")
        project = Project.objects.create(owner=user, slug="acme", title="Acme")
        self.subscribe(user, "projects:receiver")
        self.client.force_login(user)
        self.client.post(project.get_absolute_url(), {"title": "Acme 2", "description": ""})
        # The request only recorded the delivery; the worker sends it.
        self.assertEqual(Delivery.objects.get().status, Delivery.Status.PENDING)
        self.assertFalse(ReceivedWebhook.objects.exists())

        out = StringIO()
        with self.assertLogs("djwebhooks", "INFO") as logs:
            call_command("webhooks_worker", "--burst", stdout=out)
        self.assertTrue(any("attempt 1: 200 OK" in line for line in logs.output), logs.output)
        self.assertIn("stopped after 1 delivery.", out.getvalue())

        delivery = Delivery.objects.get()
        self.assertEqual(delivery.status, Delivery.Status.SUCCEEDED)
        self.assertEqual(delivery.response_status, 200)
        received = ReceivedWebhook.objects.get()
        self.assertTrue(received.verified)
        self.assertEqual(received.webhook_id, delivery.hash_value)
        self.assertEqual(received.body["data"]["title"], "Acme 2")
        self.assertEqual(received.body["owner"], "audreyr")
        self.assertEqual(received.body["identifier"], "acme")

    def test_the_worker_retries_the_flaky_receiver_when_it_asks(self):
        user = get_user_model().objects.create_user("audreyr")
        project = Project.objects.create(owner=user, slug="acme", title="Acme")
        self.subscribe(user, "projects:flaky-receiver")
        self.client.force_login(user)
        self.client.post(project.get_absolute_url(), {"title": "Acme 2", "description": ""})

        # A first wait shorter than the receiver's Retry-After, which therefore decides.
        schedule = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": [0.5, 300], "RETRY_JITTER": 0}
        with override_settings(DJWEBHOOKS=schedule), self.assertLogs("djwebhooks", "INFO"):
            Worker(burst=True).run()
            delivery = Delivery.objects.get()
            self.assertEqual(delivery.status, Delivery.Status.PENDING)
            self.assertEqual(delivery.response_status, 503)
            self.assertEqual(delivery.reason, "attempt 2 of 3: Retry-After 1")
            wait = delivery.next_attempt_at - delivery.attempts.get().created
            self.assertAlmostEqual(wait.total_seconds(), 1, delta=0.2)

            # Not due before the time Retry-After asked for; due, and sent again, after it.
            self.assertEqual(Worker(burst=True).run(), 0)
            time.sleep(max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds())
                       + 0.1)
            self.assertEqual(Worker(burst=True).run(), 1)

        delivery.refresh_from_db()
        self.assertEqual(delivery.status, Delivery.Status.SUCCEEDED)
        self.assertEqual(
            [a.response_status for a in delivery.attempts.all()], [503, 200]
        )
        received = ReceivedWebhook.objects.order_by("pk")
        self.assertEqual([r.response_status for r in received], [503, 200])
        self.assertEqual({r.webhook_id for r in received}, {delivery.hash_value})
