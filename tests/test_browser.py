"""The self-service pages in a real browser: Debian's Chromium driven by Playwright, against
pytest-django's live server, sending to a real receiver on 127.0.0.1.

Needs ``pip install -e ".[dev,browser]"`` and Chromium at /usr/bin/chromium
(``apt-get install chromium``); Playwright never downloads a browser of its own here. Without
either the module skips, saying which is missing, unless
``DJWEBHOOKS_TEST_BROWSER_REQUIRED=1`` (set by CI) makes that a failure.

Each test saves full-page screenshots of the steps that matter into
``DJWEBHOOKS_TEST_ARTIFACTS`` (pytest's ``tmp_path`` when it is not set), named after the
test, and prints their paths.
"""

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.urls import reverse

from djwebhooks import signing
from djwebhooks.models import Delivery, WebhookTarget

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu"]
#: CI sets this: a missing Playwright or Chromium is then a failure, not a skip.
BROWSER_REQUIRED = os.environ.get("DJWEBHOOKS_TEST_BROWSER_REQUIRED") == "1"
#: Milliseconds Playwright waits for an element or a navigation before failing.
TIMEOUT_MS = 10_000
INLINE_BACKEND = "djwebhooks.backends.inline.InlineBackend"


def missing_browser():
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f'Playwright is not installed ({exc}); pip install -e ".[dev,browser]"'
    if not os.access(CHROMIUM, os.X_OK):
        return (f"{CHROMIUM} is missing; install Debian's Chromium (apt-get install chromium). "
                "These tests never download a browser")
    return None


MISSING = missing_browser()
if MISSING and BROWSER_REQUIRED:
    pytest.fail(f"DJWEBHOOKS_TEST_BROWSER_REQUIRED=1, but {MISSING}.", pytrace=False)
if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=TIMEOUT_MS)


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(django_db_setup):
    """One headless Chromium, /usr/bin/chromium, for all the tests of this module.

    Playwright's sync API keeps an asyncio loop running on this thread while it is started,
    and Django's ORM takes any code beside a running loop for async code and refuses to
    run. So the test databases are made first; while the browser runs, the ORM calls of
    these tests (plain synchronous code) are let through with DJANGO_ALLOW_ASYNC_UNSAFE;
    and the browser stops with this module, not at the end of the session, where it would
    make every later module's ORM calls fail.
    """
    with pytest.MonkeyPatch.context() as patch:
        playwright = sync_playwright().start()
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        try:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
        finally:
            playwright.stop()


@pytest.fixture
def page(browser, live_server):
    """A page in a fresh browser context whose relative URLs go to the live server.

    Dialogs (a ``confirm()`` before a destructive button) are accepted, as a user would.
    """
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280,
                                                                      "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


@pytest.fixture
def log_in(page, live_server):
    """``log_in(user)``: sign ``user`` in, by its session cookie, in the page's context."""

    def log_in(user):
        client = Client()
        client.force_login(user)
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
        page.context.add_cookies([{
            "name": django_settings.SESSION_COOKIE_NAME,
            "value": cookie.value,
            "domain": urlsplit(live_server.url).hostname,
            "path": "/",
            "httpOnly": True,
        }])
        return user

    return log_in


@pytest.fixture
def screenshot(request, tmp_path):
    """``screenshot(page, label)``: save a full-page PNG named after the test; return its
    path. Into ``DJWEBHOOKS_TEST_ARTIFACTS`` when set, else this test's ``tmp_path``."""
    directory = Path(os.environ.get("DJWEBHOOKS_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    test_name = re.sub(r"[^\w.-]+", "_", request.node.name)
    taken = []

    def screenshot(page, label):
        taken.append(label)
        path = directory / f"{test_name}-{len(taken):02d}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    return screenshot


@pytest.fixture
def pages(settings):
    """The pages mounted at /webhooks/, sending inline (during the request), no rate
    limits: the tests press the same buttons many times a minute."""
    settings.DJWEBHOOKS = {
        **settings.DJWEBHOOKS,
        "BACKEND": INLINE_BACKEND,
        # The receiver runs on 127.0.0.1 (already allowed in tests/settings.py).
        "ALLOWED_NETWORKS": ["127.0.0.0/8", "::1/128"],
        "RATE_LIMITS": {"send_test": None, "replay": None, "rotate_secret": None},
    }


def wait_for_requests(receiver, count, timeout=5.0):
    """The receiver's requests once it has ``count`` (or more), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return receiver.requests


def heading(page):
    return page.get_by_role("heading", level=1)


def section(page, name):
    """The part of the page titled ``name``: a region of that name, or a <section> with
    that heading."""
    return page.get_by_role("region", name=name).or_(
        page.locator("section").filter(has=page.get_by_role("heading", name=name)))


def table(page, name):
    """The table named ``name`` (by its caption or aria-label), or the table in the
    section with that heading."""
    return page.get_by_role("table", name=name).or_(section(page, name).locator("table"))


# The harness itself: runs on the test URLs alone (the admin) -----------------------------


@pytest.mark.django_db(transaction=True)
def test_harness_admin_login_page_and_session_cookie(page, log_in, screenshot):
    page.goto("/admin/login/")
    expect(page).to_have_title(re.compile("Log in"))
    screenshot(page, "admin-login")

    # The session cookie copied from a test client signs the browser in.
    log_in(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))
    page.goto("/admin/")
    expect(page).to_have_title(re.compile("Site administration"))
    screenshot(page, "admin-index")


# The pages ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_add_a_webhook_send_a_test_event_and_read_its_delivery(
        pages, page, log_in, user, receiver, screenshot):
    log_in(user)
    target_url = receiver.url + "/hook/"

    page.goto(reverse("djwebhooks:targets"))
    expect(heading(page)).to_have_text("Your webhooks")
    screenshot(page, "targets")

    page.get_by_role("link", name="Add a webhook").click()
    page.get_by_label("Event").select_option("project.update")
    page.get_by_label("Target URL").fill(target_url)
    screenshot(page, "add-filled")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_text("Webhook saved.")).to_be_visible()
    expect(heading(page)).to_have_text(target_url)
    target = WebhookTarget.objects.get(owner=user)
    assert (target.event, target.target_url) == ("project.update", target_url)
    screenshot(page, "target-saved")

    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_text("Test event sent.")).to_be_visible()
    requests = wait_for_requests(receiver, 1)
    assert len(requests) == 1, requests
    received = requests[0]
    assert json.loads(received.body)["data"]["test"] is True
    message_id = received.headers["webhook-id"]
    screenshot(page, "test-event-sent")

    section(page, "Recent deliveries").get_by_role("link", name=message_id, exact=True).click()
    expect(heading(page)).to_have_text(f"Delivery {message_id}")
    attempts = table(page, "Attempts")
    expect(attempts.get_by_role("row").filter(
        has=page.get_by_role("cell", name=re.compile(r"^200\b")))).to_have_count(1)
    screenshot(page, "delivery")
    assert len(receiver.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_rotate_secret_then_a_test_event_is_signed_with_both_secrets(
        pages, page, log_in, user, make_target, receiver, screenshot):
    log_in(user)
    target = make_target()
    old_secret = target.secret

    page.goto(reverse("djwebhooks:target", args=[target.pk]))
    screenshot(page, "target")
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_text(re.compile(r"^\s*Secret rotated\."))).to_be_visible()
    target.refresh_from_db()
    new_secret = target.secret
    assert new_secret != old_secret and target.previous_secret == old_secret
    screenshot(page, "secret-rotated")

    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_text("Test event sent.")).to_be_visible()
    requests = wait_for_requests(receiver, 1)
    assert len(requests) == 1, requests
    headers, body = requests[0].headers, requests[0].body
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures), signatures
    for secret in (new_secret, old_secret):
        assert signing.verify(secret, headers["webhook-id"], headers["webhook-timestamp"],
                              body, headers["webhook-signature"])
    screenshot(page, "test-event-sent")


@pytest.mark.django_db(transaction=True)
def test_add_page_by_keyboard_and_an_invalid_url_is_flagged_on_its_field(
        pages, page, log_in, user, screenshot):
    log_in(user)
    page.goto(reverse("djwebhooks:target-add"))
    event = page.get_by_label("Event")
    url = page.get_by_label("Target URL")
    save = page.get_by_role("button", name="Save")
    fields = {"event": event, "target url": url, "save": save}

    reached = []
    for _ in range(50):
        page.keyboard.press("Tab")
        for name, locator in fields.items():
            if name not in reached and locator.evaluate("el => el === document.activeElement"):
                reached.append(name)
                if name == "event":
                    event.select_option("project.update")
                elif name == "target url":
                    page.keyboard.type("not a url")
        if "save" in reached:
            break
    assert reached == ["event", "target url", "save"], f"Tab reached {reached}"
    screenshot(page, "focused-save")

    # A type="url" input would have the browser refuse "not a url" before the server sees
    # it; the server's own error, and how it marks the field, is what is tested here.
    page.locator("form").filter(has=save).evaluate("form => { form.noValidate = true; }")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert not WebhookTarget.objects.filter(owner=user).exists()

    marked = url.evaluate("""el => {
        const described = (el.getAttribute("aria-describedby") || "").split(/\\s+/)
            .map(id => id && document.getElementById(id)).filter(Boolean);
        const near = el.closest("p, div, li, tr, fieldset") || el.parentElement;
        return {
            invalid: el.getAttribute("aria-invalid"),
            described: described.map(node => node.innerText.trim()),
            describedErrors: described.filter(node => node.matches(
                ".errorlist, .errorlist *, [role=alert], [id*=error]")).length,
            nearErrors: [...near.querySelectorAll(".errorlist, [role=alert]")]
                .map(node => node.innerText.trim()).filter(Boolean),
        };
    }""")
    screenshot(page, "invalid-url")
    assert marked["invalid"] == "true" or marked["describedErrors"], marked
    assert marked["nearErrors"] or any(marked["described"]), marked


@pytest.mark.django_db(transaction=True)
def test_screenshots_of_the_target_list_a_target_and_a_delivery(
        pages, page, log_in, user, make_target, receiver, screenshot):
    from djwebhooks.events import send_test_event

    log_in(user)
    target = make_target()
    make_target(event="project.delete", identifier="acme")
    with transaction.atomic():
        delivery = send_test_event(target)
    assert len(wait_for_requests(receiver, 1)) == 1
    delivery = Delivery.objects.get(pk=delivery.pk)

    page.goto(reverse("djwebhooks:targets"))
    expect(heading(page)).to_have_text("Your webhooks")
    expect(page.get_by_role("link", name="Add a webhook")).to_be_visible()
    screenshot(page, "target-list")

    page.goto(reverse("djwebhooks:target", args=[target.pk]))
    expect(heading(page)).to_have_text(target.target_url)
    screenshot(page, "target")

    page.goto(reverse("djwebhooks:delivery", args=[delivery.pk]))
    expect(heading(page)).to_have_text(f"Delivery {delivery.hash_value}")
    screenshot(page, "delivery")


@pytest.mark.django_db(transaction=True)
def test_set_an_api_key_header_keep_it_masked_and_the_receiver_gets_it(
        pages, page, log_in, user, receiver, screenshot):
    log_in(user)
    key = "Bearer k-0123456789abcdefghij"
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url=receiver.url + "/hook/")

    page.goto(reverse("djwebhooks:target-edit", args=[target.pk]))
    page.get_by_label("Headers").fill(f"Authorization: {key}")
    page.get_by_label("Retry schedule").fill("5s, 1m")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Webhook saved.")).to_be_visible()
    expect(page.get_by_text("Authorization: ••••••ghij")).to_be_visible()
    assert key not in page.content()
    screenshot(page, "target-with-header")

    # Edited again without touching the masked value: the key is kept.
    page.goto(reverse("djwebhooks:target-edit", args=[target.pk]))
    expect(page.get_by_label("Headers")).to_have_value("Authorization: ••••••ghij")
    page.get_by_label("Timeout").fill("5")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Webhook saved.")).to_be_visible()
    target.refresh_from_db()
    assert (target.headers, target.timeout, target.retry_schedule) == (
        {"Authorization": key}, 5, [5, 60])

    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_text("Test event sent.")).to_be_visible()
    [received] = wait_for_requests(receiver, 1)
    assert received.headers["authorization"] == key

    # A header that would replace the signature is refused beside its field.
    page.goto(reverse("djwebhooks:target-edit", args=[target.pk]))
    page.get_by_label("Headers").fill("webhook-signature: v1,forged")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("is set by the sender itself")).to_be_visible()
    screenshot(page, "reserved-header-refused")
    target.refresh_from_db()
    assert target.headers == {"Authorization": key}


@pytest.mark.django_db(transaction=True)
def test_tick_ordered_on_the_edit_page_and_see_it_on_the_webhook_s_page(
        pages, page, log_in, user, receiver, screenshot):
    log_in(user)
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url=receiver.url + "/hook/")

    page.goto(reverse("djwebhooks:target", args=[target.pk]))
    expect(page.locator("#ordered")).to_have_text("no")

    page.goto(reverse("djwebhooks:target-edit", args=[target.pk]))
    box = page.get_by_label("Ordered")
    expect(box).not_to_be_checked()
    expect(box).to_have_accessible_description(re.compile(
        "^Send its deliveries one at a time, in the order they were created"))
    box.check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Webhook saved.")).to_be_visible()
    expect(page.locator("#ordered")).to_have_text("yes")
    screenshot(page, "target-ordered")
    target.refresh_from_db()
    assert target.ordered is True

    # Back on the edit page it is still ticked; unticked and saved, it is off again.
    page.goto(reverse("djwebhooks:target-edit", args=[target.pk]))
    expect(page.get_by_label("Ordered")).to_be_checked()
    page.get_by_label("Ordered").uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#ordered")).to_have_text("no")
    target.refresh_from_db()
    assert target.ordered is False


@pytest.mark.django_db(transaction=True)
def test_set_max_in_flight_and_a_rate_limit_and_see_them_on_the_webhook_s_page(
        pages, page, log_in, user, receiver, screenshot):
    log_in(user)
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url=receiver.url + "/hook/")

    page.goto(reverse("djwebhooks:target", args=[target.pk]))
    expect(page.locator("#max-in-flight")).to_have_text("the sender's default")
    expect(page.locator("#rate-limit")).to_have_text("none")

    page.goto(reverse("djwebhooks:target-edit", args=[target.pk]))
    most, rate = page.get_by_label("Most requests at once"), page.get_by_label("Rate limit")
    expect(most).to_have_value("")
    expect(most).to_have_accessible_description(re.compile(
        "^The most requests each sending process makes to it at once"))
    expect(rate).to_have_accessible_description(re.compile("^The most requests a second"))
    most.fill("4")
    rate.fill("20")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Webhook saved.")).to_be_visible()
    expect(page.locator("#max-in-flight")).to_have_text("4")
    expect(page.locator("#rate-limit")).to_have_text("20 a second")
    screenshot(page, "target-pacing")
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (4, 20)

    # Out of range, it is refused beside its field and the stored value is kept.
    page.goto(reverse("djwebhooks:target-edit", args=[target.pk]))
    expect(page.get_by_label("Most requests at once")).to_have_value("4")
    page.get_by_label("Most requests at once").fill("1001")
    page.get_by_role("button", name="Save").click()
    message = "Give a whole number from 1 to 1000, or leave it blank for the sender's default."
    expect(page.get_by_text(message)).to_be_visible()
    expect(page.get_by_label("Most requests at once")).to_have_accessible_description(
        re.compile(re.escape(message)))
    target.refresh_from_db()
    assert target.max_in_flight == 4

    # Emptied, both go back to the defaults.
    page.get_by_label("Most requests at once").fill("")
    page.get_by_label("Rate limit").fill("")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Webhook saved.")).to_be_visible()
    expect(page.locator("#max-in-flight")).to_have_text("the sender's default")
    expect(page.locator("#rate-limit")).to_have_text("none")
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (None, None)
