"""``manage.py webhooks_demo``: send real webhooks to this project, replay a failure, show all."""

import logging
import threading
from contextlib import contextmanager
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import (
    ThreadedWSGIServer,
    WSGIRequestHandler,
    get_internal_wsgi_application,
)
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.transport import close_session
from projects.models import Project, ReceivedWebhook

USERNAME = "demo"
SLUG = "webhooks-demo"
# Loggers that would report the flaky receiver's intended 503 as a problem; the demo
# tells that story itself. Run with -v 2 to see them anyway.
NOISY_LOGGERS = ["django.request", "django.server", "djwebhooks"]


class Command(BaseCommand):
    help = (
        "Send real, signed webhooks from this project to its own receiver views, replay the "
        "one that failed, and print the delivery log."
    )

    def handle(self, *args, verbosity=1, **options):
        started = timezone.now()
        call_command("migrate", verbosity=0, interactive=False)
        user = self.demo_user()

        self.say(self.style.MIGRATE_HEADING("dj-webhooks demo"))
        self.say("This project sends signed webhooks to its own receiver views over real HTTP:")
        self.say("it creates a project (project.create), edits it (project.update), and")
        self.say("replays the one delivery that failed.")
        self.say()
        self.say(f"Database:  {settings.DATABASES['default']['NAME']} (migrated)")

        with DemoServer() as server, quiet(NOISY_LOGGERS, enabled=verbosity < 2):
            self.say(f"Receiving: {server.url}/ (this project's WSGI app, in a thread)")
            targets = self.subscribe(user, server.url)
            self.show_targets(targets)

            self.heading("1. Create a project")
            self.say("   Project.objects.create() -> post_save receiver -> "
                     "djwebhooks.send_event('project.create')")
            if Project.objects.filter(owner=user, slug=SLUG).delete()[0]:
                self.say(f"   (the {SLUG!r} project of an earlier run was deleted first)")
            step_start = timezone.now()
            project = Project.objects.create(
                owner=user,
                slug=SLUG,
                title="Webhooks demo",
                description="Created by manage.py webhooks_demo.",
            )
            self.show_sent(step_start)

            self.heading("2. Edit it through the form view")
            edit_url = reverse("projects:edit", kwargs={"slug": project.slug})
            self.say(f"   POST {edit_url} -> ProjectUpdateView -> @hook(event='project.update')")
            step_start = timezone.now()
            self.edit_project(user, edit_url)
            self.show_sent(step_start)

            self.heading("3. Replay what failed")
            self.say("   manage.py webhooks_replay: a new attempt, with the same webhook-id")
            self.stdout.write("   ", ending="")
            call_command("webhooks_replay", stdout=self.stdout, stderr=self.stderr)

        deliveries = list(
            Delivery.objects.filter(created__gte=started)
            .select_related("webhook_target")
            .order_by("pk")
        )
        received = list(ReceivedWebhook.objects.filter(received__gte=started).order_by("pk"))
        self.show_deliveries(deliveries)
        self.show_received(received)
        self.conclude(deliveries, received)

    # Setting up
    # ----------

    def demo_user(self):
        """Return the demo user, creating it the first time."""
        user, created = get_user_model().objects.get_or_create(username=USERNAME)
        if created:
            # Nobody signs in as this user: it only owns the demo's project and targets.
            user.set_unusable_password()
            user.save()
        return user

    def subscribe(self, user, base_url):
        """Point the demo's three targets at this run's server; return them."""
        subscriptions = [
            ("project.create", reverse("projects:receiver")),
            ("project.update", reverse("projects:receiver")),
            ("project.update", reverse("projects:flaky-receiver")),
        ]
        targets = []
        for event, path in subscriptions:
            # The server's port changes on every run, so find last run's target by its path
            # and update it: it keeps its secret and its delivery history.
            target = WebhookTarget.objects.filter(
                owner=user, event=event, identifier=SLUG, target_url__endswith=path
            ).first() or WebhookTarget(owner=user, event=event, identifier=SLUG)
            target.target_url = base_url + path
            target.is_active = True
            target.save()
            targets.append(target)
        return targets

    def edit_project(self, user, edit_url):
        """Post the edit form as the project's owner, as a browser would."""
        # The test client runs the real URLconf, middleware, form and view in-process,
        # without needing a password or a CSRF token.
        client = Client(SERVER_NAME="127.0.0.1")
        client.force_login(user)
        response = client.post(
            edit_url,
            {"title": "Webhooks demo", "description": f"Edited at {timezone.now():%H:%M:%S}."},
        )
        if response.status_code != 302:
            raise CommandError(
                f"The edit form answered {response.status_code} instead of redirecting."
            )

    # Reporting
    # ---------

    def say(self, text=""):
        """Print a line."""
        self.stdout.write(text)

    def heading(self, text):
        """Print a blank line, then ``text`` as a heading."""
        self.say()
        self.say(self.style.MIGRATE_HEADING(text))

    def show_targets(self, targets):
        """List the targets, with the URL each one points at."""
        self.say(f"Webhook targets of user {USERNAME!r}, identifier {SLUG!r} (the project's slug):")
        for target in targets:
            note = ""
            if target.target_url.endswith(reverse("projects:flaky-receiver")):
                note = "  (answers 503 the first time it sees a webhook-id)"
            self.say(f"  #{target.pk} {target.event:<15} -> {target.target_url}{note}")

    def show_sent(self, since):
        """List the deliveries created since ``since``, and how their first attempt went."""
        deliveries = (
            Delivery.objects.filter(created__gte=since)
            .select_related("webhook_target")
            .order_by("pk")
        )
        if not deliveries:
            self.say("   nothing was sent: no target matched")
        for d in deliveries:
            path = urlsplit(d.webhook_target.target_url).path
            self.say(f"   delivery #{d.pk} to {path}: {d.status} "
                     f"({d.response_status or 'no response'})")

    def show_deliveries(self, deliveries):
        """Print the delivery log as a table."""
        self.heading("Delivery log (this run; every run is in the admin: Webhooks > Deliveries)")
        rows = [
            [
                d.pk,
                d.event,
                d.webhook_target.target_url,
                d.status,
                d.attempt,
                d.response_status or "-",
                d.hash_value,
            ]
            for d in deliveries
        ]
        headers = ["ID", "EVENT", "TARGET URL", "STATUS", "ATTEMPTS", "LAST HTTP", "WEBHOOK-ID"]
        for line in table(headers, rows):
            self.say("  " + line)

    def show_received(self, received):
        """Print what the receiver views stored, and how many signatures verified."""
        self.heading("What the receivers got (this run; also at /webhooks/received/)")
        rows = [
            [
                r.get_endpoint_display(),
                r.event_type or "?",
                r.webhook_id,
                "valid" if r.verified else "INVALID",
                r.response_status,
            ]
            for r in received
        ]
        for line in table(["RECEIVER", "EVENT", "WEBHOOK-ID", "SIGNATURE", "ANSWERED"], rows):
            self.say("  " + line)
        verified = sum(r.verified for r in received)
        self.say(f"  {len(received)} requests, {verified} with a valid signature, "
                 f"{len(received) - verified} rejected.")

    def conclude(self, deliveries, received):
        """Fail unless everything was delivered and verified; otherwise sum up and sign off."""
        problems = [
            f"delivery #{d.pk} is {d.status}" for d in deliveries if d.status != "succeeded"
        ]
        problems += [
            f"a request to the {r.get_endpoint_display()} had a bad signature"
            for r in received
            if not r.verified
        ]
        if len(deliveries) != 3:
            problems.append(f"expected 3 deliveries, found {len(deliveries)}")
        if problems:
            raise CommandError(
                "The demo did not go as planned: " + "; ".join(problems) + ". Run it again "
                "with -v 2 to see what dj-webhooks and the receivers logged."
            )
        self.say()
        for d in deliveries:
            if d.attempt > 1:
                first = d.attempts.order_by("attempt").first()
                self.say(self.style.SUCCESS(
                    f"Delivery #{d.pk} failed with {first.response_status or first.error} at "
                    f"first, then succeeded on replay (attempt {d.attempt}) with the same "
                    f"webhook-id {d.hash_value}."
                ))
        self.say(self.style.SUCCESS(
            f"All {len(deliveries)} deliveries succeeded, and the receivers verified all "
            f"{len(received)} signatures."
        ))
        self.say()
        self.say("Look around: python example_project/manage.py createsuperuser, then")
        self.say("python example_project/manage.py runserver and open")
        self.say("  http://127.0.0.1:8000/admin/djwebhooks/delivery/  deliveries and attempts")
        self.say("  http://127.0.0.1:8000/webhooks/received/          what the receivers got")


def table(headers, rows):
    """Return ``rows`` as lines of left-aligned columns under ``headers``."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[column]) for row in rows])
        for column, header in enumerate(headers)
    ]

    def line(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return [line(headers).rstrip(), *(line(row).rstrip() for row in rows)]


class QuietRequestHandler(WSGIRequestHandler):
    """Django's development request handler, without its line per request."""

    def log_message(self, format, *args):
        pass


class DemoServer:
    """This project's WSGI app served from a thread on 127.0.0.1, on a free port."""

    def __enter__(self):
        self.httpd = ThreadedWSGIServer(("127.0.0.1", 0), QuietRequestHandler)
        self.httpd.set_app(get_internal_wsgi_application())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self):
        """The server's root URL, without a trailing slash."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc_info):
        # dj-webhooks keeps connections alive for the next delivery; closing them lets the
        # server's request threads finish.
        close_session()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@contextmanager
def quiet(names, enabled=True):
    """Silence the loggers ``names`` inside the block (when ``enabled``)."""
    loggers = [logging.getLogger(name) for name in names] if enabled else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
