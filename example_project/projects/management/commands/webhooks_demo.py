"""``manage.py webhooks_demo``: record webhooks in requests, send them with the worker, show all."""

import io
import logging
import threading
import time
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
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from djwebhooks import conf
from djwebhooks.backends import get_backend
from djwebhooks.backends.database import DatabaseBackend
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget
from djwebhooks.transport import close_session
from djwebhooks.worker import Worker
from projects.models import Project, ReceivedWebhook
from projects.views import FLAKY_RETRY_AFTER

USERNAME = "demo"
SLUG = "webhooks-demo"
# Loggers that would report the flaky receiver's intended 503 as a problem; the demo
# tells that story itself. Run with -v 2 to see them anyway.
NOISY_LOGGERS = ["django.request", "django.server", "djwebhooks"]
#: Seconds the worker has to finish this run's deliveries before the demo gives up.
WORKER_DEADLINE = 15.0
#: The first wait of RETRY_SCHEDULE during the demo: shorter than the flaky receiver's
#: Retry-After, which therefore decides when the retry is made.
DEMO_FIRST_RETRY = 0.5
#: The widest line the demo prints.
WIDTH = 100


class Command(BaseCommand):
    help = (
        "Send real, signed webhooks from this project to its own receiver views: the "
        "requests only record them, the app's worker sends them and retries the one that "
        "failed. Prints the delivery log."
    )

    def handle(self, *args, verbosity=1, **options):
        started = timezone.now()
        call_command("migrate", verbosity=0, interactive=False)
        backend = get_backend()
        if not isinstance(backend, DatabaseBackend):
            raise CommandError(
                f"This demo shows the database backend, but DJWEBHOOKS['BACKEND'] is "
                f"{conf.get_setting('BACKEND')!r}. Set it to "
                "'djwebhooks.backends.database.DatabaseBackend' in example/settings.py."
            )
        user = self.demo_user()

        self.say(self.style.MIGRATE_HEADING("dj-webhooks demo"))
        self.say("This project sends signed webhooks to its own receiver views over real HTTP.")
        self.say("It creates a project (project.create) and edits it (project.update): each")
        self.say("request only records its deliveries, and the app's worker sends them,")
        self.say("retrying the one the flaky receiver refuses.")
        self.say()
        self.say(f"Database:  {settings.DATABASES['default']['NAME']} (migrated)")
        self.say(f"Backend:   {type(backend).__module__}.{type(backend).__name__}")

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
            self.say("   recorded, not sent:")
            self.show_recorded(step_start)

            self.heading("2. Edit it through the form view")
            edit_url = reverse("projects:edit", kwargs={"slug": project.slug})
            self.say(f"   POST {edit_url} -> ProjectUpdateView -> @hook(event='project.update')")
            step_start = timezone.now()
            took = self.edit_project(user, edit_url)
            self.say(f"   the view answered 302 in {took * 1000:.0f} ms, without waiting for "
                     "any receiver:")
            self.show_recorded(step_start)

            ids = list(
                Delivery.objects.filter(created__gte=started).order_by("pk")
                .values_list("pk", flat=True)
            )
            self.heading("3. Run the worker")
            self.say("   A deployment runs the worker as a process of its own, beside the web "
                     "server:")
            self.say("       python example_project/manage.py webhooks_worker")
            self.say("   It sends the due deliveries and makes the retries. Here the same Worker "
                     "runs in a")
            self.say("   thread, and is stopped once this run's deliveries are finished.")
            first_wait = conf.get_retry_policy().schedule[:1]
            if first_wait:
                self.say(f"   (RETRY_SCHEDULE's first wait, {first_wait[0]:g} s, is "
                         f"{DEMO_FIRST_RETRY:g} s here, so the receiver's Retry-After decides.)")
            demo_settings = {
                **conf.user_settings(),
                "RETRY_SCHEDULE": [DEMO_FIRST_RETRY, *conf.get_setting("RETRY_SCHEDULE")[1:]],
            }
            with override_settings(DJWEBHOOKS=demo_settings):
                finished = self.run_worker(ids)

        deliveries = list(
            Delivery.objects.filter(pk__in=ids)
            .select_related("webhook_target")
            .prefetch_related("attempts")
            .order_by("pk")
        )
        received = list(
            ReceivedWebhook.objects.filter(
                received__gte=started, webhook_id__in={d.hash_value for d in deliveries}
            ).order_by("pk")
        )
        self.show_deliveries(deliveries)
        self.show_received(received)
        self.show_request(server.requests)
        self.conclude(deliveries, received, finished)

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
        """Post the edit form as the project's owner, as a browser would; return the seconds."""
        # The test client runs the real URLconf, middleware, form and view in-process,
        # without needing a password or a CSRF token.
        client = Client(SERVER_NAME="127.0.0.1")
        client.force_login(user)
        start = time.monotonic()
        response = client.post(
            edit_url,
            {"title": "Webhooks demo", "description": f"Edited at {timezone.now():%H:%M:%S}."},
        )
        took = time.monotonic() - start
        if response.status_code != 302:
            raise CommandError(
                f"The edit form answered {response.status_code} instead of redirecting."
            )
        return took

    # Sending
    # -------

    def run_worker(self, ids):
        """Run the app's ``Worker`` in a thread until ``ids`` are finished; return True if so.

        Prints each attempt as the worker records it.
        """
        worker = Worker(concurrency=4, interval=0.2)
        failure = []

        def work():
            try:
                worker.run()
            except BaseException as exc:  # reported below, from the main thread
                failure.append(exc)

        start = timezone.now()
        deadline = time.monotonic() + WORKER_DEADLINE
        thread = threading.Thread(target=work, name="demo-worker", daemon=True)
        thread.start()
        reported = {}  # delivery id -> attempts printed
        finished = False
        try:
            while not (finished or failure or time.monotonic() > deadline):
                time.sleep(0.05)
                finished = self.report_attempts(ids, reported, start)
        finally:
            # Lets the deliveries in flight finish; each of the worker's threads then closes
            # its HTTP session and database connection.
            worker.stop()
            thread.join(timeout=WORKER_DEADLINE)
        if failure:
            raise CommandError(f"The worker stopped with an error: {failure[0]!r}")
        if finished:
            self.say(f"   Finished: {sum(reported.values())} attempts for {len(ids)} "
                     "deliveries; the worker is stopped.")
        else:
            self.say(self.style.ERROR(
                f"   The worker did not finish this run's deliveries within "
                f"{WORKER_DEADLINE:g} s."
            ))
        return finished

    def report_attempts(self, ids, reported, start):
        """Print the attempts recorded since the last call, with where each delivery stands.

        Returns True once none of the deliveries ``ids`` is pending.
        """
        # The attempts first: a delivery row is then at least as recent as its attempts.
        attempts = list(
            DeliveryAttempt.objects.filter(delivery_id__in=ids).order_by("created", "pk")
        )
        deliveries = {
            d.pk: d for d in Delivery.objects.filter(pk__in=ids).select_related("webhook_target")
        }
        for attempt in attempts:
            if attempt.attempt <= reported.get(attempt.delivery_id, 0):
                continue
            delivery = deliveries[attempt.delivery_id]
            reported[attempt.delivery_id] = attempt.attempt
            outcome = attempt.notification or attempt.error or "no response"
            offset = (attempt.created - start).total_seconds()
            self.say(f"   +{offset:.2f} s  #{delivery.pk} to {path_of(delivery)}: "
                     f"attempt {attempt.attempt} answered {outcome}")
            if attempt.attempt != delivery.attempt:
                continue  # a later attempt is already recorded; it says where things stand
            if delivery.status == Delivery.Status.PENDING and delivery.next_attempt_at:
                wait = (delivery.next_attempt_at - delivery.modified).total_seconds()
                self.say(f"            still pending, {delivery.reason} "
                         f"(the worker tries again in {wait:.1f} s)")
            else:
                self.say(f"            {delivery.status}"
                         + (f": {delivery.reason}" if delivery.reason else ""))
        return all(
            d.status != Delivery.Status.PENDING
            and d.attempt <= reported.get(d.pk, 0)  # and its last attempt was printed
            for d in deliveries.values()
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
            self.say(f"  #{target.pk} {target.event:<15} -> {target.target_url}")
            if target.target_url.endswith(reverse("projects:flaky-receiver")):
                self.say(f"     (answers 503 with Retry-After: {FLAKY_RETRY_AFTER} the first time "
                         "it sees a webhook-id)")

    def show_recorded(self, since):
        """List the deliveries created since ``since``, and where they stand."""
        deliveries = (
            Delivery.objects.filter(created__gte=since)
            .select_related("webhook_target")
            .order_by("pk")
        )
        if not deliveries:
            self.say("   nothing was recorded: no target matched")
        for d in deliveries:
            self.say(f"   delivery #{d.pk} to {path_of(d)}: {d.status}, {d.attempt} attempts")

    def show_deliveries(self, deliveries):
        """Print the delivery log as a table."""
        self.heading("Delivery log (this run; every run is in the admin: Webhooks > Deliveries)")
        rows = [
            [
                d.pk,
                d.event,
                path_of(d),
                d.status,
                d.attempt,
                ",".join(str(a.response_status or "-") for a in d.attempts.all()) or "-",
                short_id(d.hash_value),
                next_step(d),
            ]
            for d in deliveries
        ]
        headers = ["ID", "EVENT", "TARGET", "STATUS", "TRIES", "HTTP", "WEBHOOK-ID", "REASON"]
        for line in table(headers, rows):
            self.say("  " + line)

    def show_received(self, received):
        """Print what the receiver views stored, and how many signatures verified."""
        self.heading("What the receivers got (this run; also at /webhooks/received/)")
        rows = [
            [
                r.get_endpoint_display(),
                r.event_type or "?",
                short_id(r.webhook_id),
                "valid" if r.verified else "INVALID",
                r.response_status,
                f"{r.received:%H:%M:%S.%f}"[:-3],
            ]
            for r in received
        ]
        headers = ["RECEIVER", "EVENT", "WEBHOOK-ID", "SIGNATURE", "ANSWERED", "AT (UTC)"]
        for line in table(headers, rows):
            self.say("  " + line)
        verified = sum(r.verified for r in received)
        self.say(f"  {len(received)} requests, {verified} with a valid signature, "
                 f"{len(received) - verified} rejected. (Webhook-ids are cut to "
                 f"{len(short_id('msg_0' * 9))} characters here.)")

    def show_request(self, requests):
        """Print one request as the receiver got it: request line, headers and body."""
        receiver = reverse("projects:receiver")
        request = next((r for r in requests if r.path == receiver), None)
        if request is None:
            return
        self.heading(f"One request, as the receiver got it ({request.line.split()[0]} "
                     f"{request.path})")
        self.say(f"  {request.line}")
        for name, value in request.headers:
            line = f"  {name}: {value}"
            self.say(line if len(line) <= WIDTH else f"{line[:WIDTH - 3]}...")
        self.say()
        body = request.body.decode("utf-8", errors="replace")
        # Cut into lines to fit; the receiver got one line of compact JSON.
        for start in range(0, len(body), WIDTH - 4):
            self.say(f"  {body[start:start + WIDTH - 4]}")
        self.say(f"  ({len(request.body)} bytes; folded at {WIDTH - 4} characters here, sent "
                 "as one line)")

    def conclude(self, deliveries, received, finished):
        """Fail unless the story went as told; otherwise sum up and sign off."""
        problems = []
        if not finished:
            problems.append(f"the worker did not finish within {WORKER_DEADLINE:g} s")
        if len(deliveries) != 3:
            problems.append(f"expected 3 deliveries, found {len(deliveries)}")
        problems += [
            f"delivery #{d.pk} is {d.status} ({next_step(d)})"
            for d in deliveries
            if d.status != Delivery.Status.SUCCEEDED
        ]
        problems += [
            f"a request to the {r.get_endpoint_display()} had a bad signature"
            for r in received
            if not r.verified
        ]
        flaky = [d for d in deliveries if path_of(d) == reverse("projects:flaky-receiver")]
        retried = None
        if len(flaky) == 1:
            retried, problem = check_retry(flaky[0])
            if problem:
                problems.append(problem)
        if problems:
            raise CommandError(
                "The demo did not go as planned: " + "; ".join(problems) + ". Run it again "
                "with -v 2 to see what dj-webhooks and the receivers logged."
            )
        self.say()
        if retried:
            d, gap = retried
            self.say(self.style.SUCCESS(
                f"Delivery #{d.pk} got 503 (Retry-After: {FLAKY_RETRY_AFTER}) on attempt 1; "
                f"the worker retried it {gap:.1f} s later"
            ))
            self.say(self.style.SUCCESS(
                f"with the same webhook-id {d.hash_value}, and attempt 2 succeeded."
            ))
        self.say(self.style.SUCCESS(
            f"All {len(deliveries)} deliveries succeeded, and the receivers verified all "
            f"{len(received)} signatures."
        ))
        self.say()
        self.say("Look around: python example_project/manage.py createsuperuser, then run")
        self.say("python example_project/manage.py runserver and, in another terminal,")
        self.say("python example_project/manage.py webhooks_worker; then open")
        self.say("  http://127.0.0.1:8000/admin/djwebhooks/delivery/  deliveries and attempts")
        self.say("  http://127.0.0.1:8000/webhooks/received/          what the receivers got")
        self.say("A delivery that fails for good (its retries used up) can be sent again with")
        self.say("python example_project/manage.py webhooks_replay.")
        self.say(f"Your users' webhook pages, with runserver: "
                 f"http://127.0.0.1:8000{reverse('djwebhooks:targets')}")


def short_id(webhook_id):
    """The start of a webhook-id, enough to tell this run's apart."""
    return webhook_id[:16]


def path_of(delivery):
    """The path of the URL ``delivery`` goes to."""
    return urlsplit(delivery.webhook_target.target_url).path


def next_step(delivery):
    """Why ``delivery`` is in its status, and when it is tried next; "-" when nothing to say."""
    if delivery.status != Delivery.Status.PENDING:
        return delivery.reason or "-"
    if delivery.claimed_by:
        # A worker took it and has not recorded an attempt (yet): it is sent again once
        # the claim expires.
        return f"claimed by {delivery.claimed_by} until {delivery.claimed_until:%H:%M:%S}"
    if delivery.next_attempt_at:
        return f"{delivery.reason or 'due'} (next attempt {delivery.next_attempt_at:%H:%M:%S})"
    return delivery.reason or "-"


def check_retry(delivery):
    """Return ``((delivery, seconds between its attempts), problem)`` for the flaky delivery.

    The story: attempt 1 answered 503, attempt 2 (made by the worker no sooner than the
    receiver's Retry-After asked) answered 200. ``problem`` says what went otherwise.
    """
    attempts = sorted(delivery.attempts.all(), key=lambda a: a.attempt)
    statuses = [a.response_status for a in attempts]
    if statuses != [503, 200]:
        return None, (f"the flaky delivery #{delivery.pk} answered {statuses or 'nothing'}, "
                      "not 503 then 200")
    gap = (attempts[1].created - attempts[0].created).total_seconds()
    if gap < FLAKY_RETRY_AFTER - 0.1:
        return None, (f"delivery #{delivery.pk} was retried {gap:.2f} s after its 503, sooner "
                      f"than the receiver's Retry-After: {FLAKY_RETRY_AFTER}")
    return (delivery, gap), None


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
    """Django's development request handler, without its line per request; it hands the
    request line and headers, as they came, to the app in the environ."""

    def log_message(self, format, *args):
        pass

    def get_environ(self):
        environ = super().get_environ()
        environ["demo.request"] = (self.requestline, list(self.headers.items()))
        return environ


class Received:
    """One request as it reached the server: request line, headers in order, body."""

    def __init__(self, line, path, headers, body):
        self.line, self.path, self.headers, self.body = line, path, headers, body


class Recorder:
    """A WSGI app that keeps every POST it passes on to ``app``."""

    def __init__(self, app):
        self.app = app
        self.requests = []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and "demo.request" in environ:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)  # the view reads it again
            line, headers = environ["demo.request"]
            self.requests.append(Received(line, environ["PATH_INFO"], headers, body))
        return self.app(environ, start_response)


class DemoServer:
    """This project's WSGI app served from a thread on 127.0.0.1, on a free port."""

    def __enter__(self):
        self.httpd = ThreadedWSGIServer(("127.0.0.1", 0), QuietRequestHandler)
        self.app = Recorder(get_internal_wsgi_application())
        self.httpd.set_app(self.app)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def requests(self):
        """The POST requests the server received, as they came."""
        return self.app.requests

    @property
    def url(self):
        """The server's root URL, without a trailing slash."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc_info):
        # dj-webhooks keeps connections alive for the next delivery; closing them lets the
        # server's request threads finish. The worker's threads closed their sessions when
        # it stopped; this closes this thread's, should anything have sent from here.
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
