"""Who may see what, across the pages and the API together: one user's every link and API
URL, crawled, then asked for by another user (a 404, never their data) and by nobody (the
login page, or a 401)."""

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from djwebhooks import send_event
from djwebhooks.models import ApiToken, Delivery
from tests.receiver import Reply

ROOT = "/webhooks/"


class Links(HTMLParser):
    """The hrefs of a page's links and the actions (and methods) of its forms."""

    def __init__(self):
        super().__init__()
        self.links, self.forms = set(), set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.add(attrs["href"])
        elif tag == "img" and attrs.get("src"):
            self.links.add(attrs["src"])
        elif tag == "form":
            self.forms.add((attrs.get("action") or "", (attrs.get("method") or "get").lower()))


def ours(base, href):
    """The path of ``href`` (relative to ``base``) when it is one of the portal's, else None."""
    path = urlsplit(urljoin(base, href))
    if path.netloc not in ("", "testserver") or not path.path.startswith(ROOT):
        return None
    return path.path + (f"?{path.query}" if path.query else "")


def crawl(client):
    """Every portal page reachable from the list for ``client``'s user; return
    ``(pages, posts)``: the GET URLs seen and the form actions that POST."""
    pages, posts, todo = set(), set(), [ROOT]
    while todo:
        url = todo.pop()
        if url in pages:
            continue
        pages.add(url)
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        if not response["Content-Type"].startswith("text/html"):
            continue
        parser = Links()
        parser.feed(response.content.decode())
        todo.extend(found for href in parser.links if (found := ours(url, href)))
        for action, method in parser.forms:
            found = ours(url, action or url)
            if found and method == "post":
                posts.add(found.split("?")[0])
            elif found:
                todo.append(found.split("?")[0])
    return pages, posts


def route(name):
    """A pattern matching the URL of the portal's route ``name`` for any id."""
    return re.compile(re.escape(reverse(f"djwebhooks:{name}", args=[9999])).replace(
        "9999", r"\d+"))


def api_urls(client, token):
    """Every API URL of the token's user: the lists, and each target and delivery in them."""
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    urls = {f"{ROOT}api/targets/", f"{ROOT}api/deliveries/"}
    for kind in ("targets", "deliveries"):
        body = client.get(f"{ROOT}api/{kind}/", **auth).json()
        urls.update(f"{ROOT}api/{kind}/{item['id']}/" for item in body["results"])
    return urls


@pytest.fixture
def owned(user, make_target, receiver):
    """A user with two targets (one failing), deliveries of each, and an API token."""
    receiver.routes["/failing/"] = Reply(status=500)
    make_target()
    make_target(target_url=receiver.url + "/failing/", identifier="acme")
    send_event("project.update", {"n": 1}, owner=user)
    [failed] = send_event("project.update", {"n": 2}, owner=user, identifier="acme")
    Delivery.objects.filter(pk=failed.pk).update(status=Delivery.Status.FAILED)
    ApiToken.create(user, "ci")
    _, key = ApiToken.create(user, "zapier")
    return key


@pytest.mark.django_db
def test_another_user_finds_none_of_a_user_s_pages_posts_or_api_urls(owned, user,
                                                                     other_user):
    assert Delivery.objects.filter(webhook_target__owner=user).count() == 2
    mine = Client()
    mine.force_login(user)
    pages, posts = crawl(mine)
    # Every kind of page was found: targets, deliveries, tokens, and their actions.
    for name in ("target", "delivery", "target-chart", "target-edit", "target-delete"):
        assert any(route(name).match(url.split("?")[0]) for url in pages), name
    for name in ("target-secret", "target-rotate", "target-test", "target-active",
                 "delivery-replay", "token-revoke"):
        assert any(route(name).fullmatch(url) for url in posts), name
    apis = api_urls(mine, owned)
    assert len(apis) == 2 + 2 + 2

    theirs = Client()
    theirs.force_login(other_user)
    other_token = ApiToken.create(other_user, "theirs")[1]
    for url in sorted(pages):
        response = theirs.get(url)
        if re.search(r"/\d+/", url):
            assert response.status_code == 404, url
        else:  # a list: theirs, empty of the first user's things
            assert response.status_code == 200, url
            assert b"/failing/" not in response.content, url
    for url in sorted(posts):
        if re.search(r"/\d+/", url):  # one of the first user's things
            assert theirs.post(url).status_code == 404, url
    for url in sorted(apis):
        response = theirs.get(url, HTTP_AUTHORIZATION=f"Bearer {other_token}")
        if re.search(r"/\d+/", url):
            assert response.status_code == 404, url
            assert response.json().get("error"), url
        else:
            assert response.status_code == 200, url
            assert response.json()["results"] == [], url
        for method in ("patch", "delete") if "/targets/" in url and re.search(
                r"/\d+/", url) else ():
            response = getattr(theirs, method)(url, b"{}", content_type="application/json",
                                               HTTP_AUTHORIZATION=f"Bearer {other_token}")
            assert response.status_code == 404, (method, url)

    nobody = Client()
    for url in sorted(pages):
        response = nobody.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/") or "login" in \
            response["Location"], url
    for url in sorted(posts):
        assert nobody.post(url).status_code == 302, url
    for url in sorted(apis):
        assert nobody.get(url).status_code == 401, url
    # Nothing was changed by any of it.
    assert Delivery.objects.filter(webhook_target__owner=user).count() == 2
    assert ApiToken.objects.filter(user=user).count() == 2


@pytest.mark.django_db
def test_a_user_the_permission_refuses_gets_403_everywhere(owned, user, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "MANAGE_PERMISSION": "tests.test_portal_access.staff_only"}
    client = Client()
    client.force_login(user)
    assert client.get(ROOT).status_code == 403
    assert client.get(f"{ROOT}deliveries/").status_code == 403
    assert client.get(f"{ROOT}api/targets/", HTTP_AUTHORIZATION=f"Bearer {owned}") \
        .status_code == 403
    user.is_staff = True
    user.save()
    assert client.get(ROOT).status_code == 200


def staff_only(user):
    return user.is_staff
