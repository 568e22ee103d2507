"""The admin in a real browser, at 1280x800: screenshots of the delivery list, a delivery
and a target, and no sideways scrolling on the delivery list.

Uses the browser, page, login and screenshot fixtures of tests/test_browser.py, and skips
(or, with ``DJWEBHOOKS_TEST_BROWSER_REQUIRED=1``, fails) as that module does.
"""
# The fixtures are imported by name, and pytest passes them in as arguments of the same name.
# ruff: noqa: F811

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from djwebhooks import send_event
from tests.receiver import Reply
from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    expect,
    log_in,
    page,
    pages,
    screenshot,
)

pytestmark = pytest.mark.django_db(transaction=True)

VIEWPORT = {"width": 1280, "height": 800}


def scroll_width(page):
    """How wide the page is, or its results table's box if that scrolls sideways itself
    (the admin lets a wide table scroll inside its box, hiding its last columns)."""
    return page.evaluate("""() => {
        const page = document.documentElement.scrollWidth;
        const box = document.querySelector("#changelist .results");
        return box && box.scrollWidth > box.clientWidth ? page + box.scrollWidth
                                                        - box.clientWidth : page;
    }""")


def test_admin_delivery_list_delivery_and_target_fit_1280_pixels(
        pages, page, log_in, user, make_target, receiver, screenshot):
    page.set_viewport_size(VIEWPORT)
    log_in(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))
    receiver.replies = [Reply(status=500, body=b"upstream timed out")]
    # A long URL and identifier, as customers have: cut in the lists, whole in a title.
    target = make_target(identifier="acme-production-eu-west-1",
                         target_url=receiver.url + "/hooks/acme/production/" + "x" * 60)
    [failed] = send_event("project.update", {"project": {"id": 42, "name": "Acme"}},
                          owner=user, identifier="acme-production-eu-west-1")
    for n in range(3):
        send_event("project.update", {"n": n}, owner=user, identifier="acme-production-eu-west-1")

    page.goto(reverse("admin:djwebhooks_delivery_changelist"))
    expect(page.locator(f'a[title="{failed.hash_value}"]')).to_be_visible()
    screenshot(page, "delivery-list")
    assert scroll_width(page) <= VIEWPORT["width"]

    page.get_by_role("link", name=user.username).first.click()
    expect(page.locator("#changelist-filter")).to_contain_text(user.username)
    screenshot(page, "delivery-list-by-owner")
    assert scroll_width(page) <= VIEWPORT["width"]

    page.goto(reverse("admin:djwebhooks_delivery_change", args=[failed.pk]))
    expect(page.get_by_text("upstream timed out")).to_be_visible()
    screenshot(page, "delivery")
    assert scroll_width(page) <= VIEWPORT["width"]
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_text("Replaying 1 delivery.")).to_be_visible()
    screenshot(page, "delivery-replayed")
    assert failed.attempts.get(attempt=2).replayed_by.username == "admin"

    page.goto(reverse("admin:djwebhooks_webhooktarget_changelist"))
    screenshot(page, "target-list")
    assert scroll_width(page) <= VIEWPORT["width"]

    page.goto(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]))
    expect(page.locator("#delivery-chart svg")).to_be_visible()
    screenshot(page, "target")
    assert scroll_width(page) <= VIEWPORT["width"]
