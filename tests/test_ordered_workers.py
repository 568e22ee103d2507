"""Ordered targets under load: four ``webhooks_worker`` processes on one PostgreSQL
database, a receiver that fails at random, and each ordered target's messages checked on
the wire."""

import json
import random
import time
from collections import Counter

import pytest
from django.db import connection

from tests.processes import create_deliveries, statuses, wait_until, worker
from tests.receiver import Reply

MESSAGES = 1000
#: The share of requests the receiver answers with a 500.
FAILING = 0.2
#: How long the receiver takes over each answer: long enough for requests that are in
#: flight together to be seen together.
DELAY = 0.002

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="starts worker processes that share the test database (SKIP LOCKED, rows "
        "committed across processes); run with DATABASE_URL=postgres://...",
    ),
]


def test_ordered_targets_get_their_messages_in_creation_order_from_four_workers(
        tmp_path, settings, receiver, user, make_target):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}
    ordered = [f"/ordered/{n}/" for n in range(3)]
    plain = [f"/plain/{n}/" for n in range(3)]
    for path in ordered:
        make_target(target_url=receiver.url + path, ordered=True)
    for path in plain:
        make_target(target_url=receiver.url + path)
    chance = random.Random(15)
    # Per target: the message numbers of the first successful copies, as they arrived.
    firsts = {path: [] for path in ordered + plain}
    answers = Counter()

    def respond(request):
        # Called under the receiver's lock: the arrival order is the order of these calls.
        if chance.random() < FAILING:
            answers["failed"] += 1
            return Reply(status=500, body=b"not now", delay=DELAY)
        number = json.loads(request.body)["data"]["number"]
        if number not in firsts[request.path]:
            firsts[request.path].append(number)
        answers["succeeded"] += 1
        return Reply(delay=DELAY)

    receiver.respond = respond
    create_deliveries(user, MESSAGES, targets=6)
    overrides = {"RETRY_SCHEDULE": [0.01] * 12, "RETRY_JITTER": 0}
    args = ("--concurrency", "4", "--interval", "0.02")
    with worker(tmp_path, "a", *args, overrides=overrides) as a, \
            worker(tmp_path, "b", *args, overrides=overrides) as b, \
            worker(tmp_path, "c", *args, overrides=overrides) as c, \
            worker(tmp_path, "d", *args, overrides=overrides) as d:
        wait_until(lambda: time.sleep(0.5) or statuses()["succeeded"] == 6 * MESSAGES, 240,
                   lambda: f"{statuses()}, {answers}; " + " ".join(
                       w.describe() for w in (a, b, c, d)))
    for path in ordered:
        assert firsts[path] == list(range(MESSAGES)), path
        # One at a time.
        assert receiver.most_in_flight_by_path[path] == 1, path
    for path in plain:
        assert sorted(firsts[path]) == list(range(MESSAGES)), path
    # The unordered targets got theirs out of order, so the check above can fail.
    assert any(firsts[path] != list(range(MESSAGES)) for path in plain)
    assert max(receiver.most_in_flight_by_path[path] for path in plain) > 1
    # The receiver did fail about as often as it was told to.
    assert answers["failed"] / sum(answers.values()) == pytest.approx(FAILING, abs=0.05)
