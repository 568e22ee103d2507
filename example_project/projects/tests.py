"""Tests for the example app: run with ``python example_project/manage.py test projects``."""

import json
import time

from django.contrib.auth import get_user_model
from django.test import LiveServerTestCase, TestCase
from django.urls import reverse

from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.signing import sign
from djwebhooks.transport import close_session
from projects.models import Project, ReceivedWebhook

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
    """Creating and editing projects records deliveries, sent once the edit commits."""

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

    def test_editing_a_project_creates_a_delivery_sent_after_commit(self):
        # execute=False: the delivery is recorded, and sending it (which happens on
        # commit) is left undone, so nothing goes over the network.
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.edit()
        self.assertRedirects(response, self.project.get_absolute_url())
        delivery = Delivery.objects.get()
        self.assertEqual(delivery.webhook_target, self.target)
        self.assertEqual(delivery.event, "project.update")
        self.assertEqual(delivery.status, Delivery.Status.PENDING)
        self.assertTrue(delivery.hash_value.startswith("msg_"))
        self.assertEqual(delivery.payload["title"], "Acme, renamed")
        self.assertEqual(delivery.payload["slug"], "acme")
        self.assertEqual(len(callbacks), 1)

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


class EndToEndTests(LiveServerTestCase):
    """A real delivery over HTTP, from the edit view to the receiver view on 127.0.0.1."""

    def tearDown(self):
        close_session()

    def test_an_edit_reaches_the_receiver_signed(self):
        user = get_user_model().objects.create_user("audreyr")
        project = Project.objects.create(owner=user, slug="acme", title="Acme")
        WebhookTarget.objects.create(
            owner=user,
            event="project.update",
            identifier="acme",
            target_url=self.live_server_url + reverse("projects:receiver"),
        )
        self.client.force_login(user)
        with self.assertLogs("djwebhooks.delivery", "INFO") as logs:
            self.client.post(project.get_absolute_url(), {"title": "Acme 2", "description": ""})
        self.assertIn("200 OK", logs.output[0])

        delivery = Delivery.objects.get()
        self.assertEqual(delivery.status, Delivery.Status.SUCCEEDED)
        self.assertEqual(delivery.response_status, 200)
        received = ReceivedWebhook.objects.get()
        self.assertTrue(received.verified)
        self.assertEqual(received.webhook_id, delivery.hash_value)
        self.assertEqual(received.body["data"]["title"], "Acme 2")
        self.assertEqual(received.body["owner"], "audreyr")
        self.assertEqual(received.body["identifier"], "acme")
