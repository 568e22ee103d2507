"""The sending API: ``@hook``, ``base_hook``, ``send_event``, and what they refuse."""

import datetime
import decimal
import json
import uuid

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction

import djwebhooks
from djwebhooks import _sql
from djwebhooks.decorators import (
    base_hook,
    basic_hash_function,
    hook,
    orm_callable,
    registry,
    webhook,
)
from djwebhooks.exceptions import (
    DuplicateMessageError,
    OwnerError,
    PayloadError,
    SenderNotCallable,
    UnknownEventError,
    WebhookError,
)
from djwebhooks.models import Delivery


@hook(event="project.update")
def send_project_update(title, owner, identifier=""):
    """Return the payload of a project update."""
    return {"title": title}


@pytest.fixture
def no_dispatch(django_capture_on_commit_callbacks):
    """Keep deliveries from being sent, to look only at what a call writes."""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        yield callbacks


def test_public_names():
    assert djwebhooks.hook is hook
    assert djwebhooks.webhook is hook
    assert webhook is hook
    assert djwebhooks.send_event.__module__ == "djwebhooks.events"
    assert djwebhooks.replay.__module__ == "djwebhooks.events"
    for name in djwebhooks.__all__:
        assert getattr(djwebhooks, name) is not None
    with pytest.raises(AttributeError):
        djwebhooks.nothing_here  # noqa: B018


def test_hook_keeps_the_function_metadata():
    assert send_project_update.__name__ == "send_project_update"
    assert send_project_update.__doc__ == "Return the payload of a project update."
    assert registry[send_project_update.__wrapped__] == "project.update"


def test_call_returns_one_delivery_per_target(
    make_target, user, django_capture_on_commit_callbacks
):
    first = make_target()
    second = make_target(target_url="http://127.0.0.1:9/other/")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        deliveries = send_project_update("Dj", owner=user)

    assert [type(d) for d in deliveries] == [Delivery, Delivery]
    assert {d.webhook_target_id for d in deliveries} == {first.pk, second.pk}
    for delivery in Delivery.objects.all():
        assert delivery.status == Delivery.Status.PENDING
        assert delivery.attempt == 0
        assert delivery.payload == {"title": "Dj"}
        assert delivery.event == "project.update"
    assert len({d.hash_value for d in deliveries}) == 1
    assert deliveries[0].hash_value.startswith("msg_")
    assert len(callbacks) == 1  # one on_commit callback per call, not per target


def test_returned_deliveries_are_the_saved_rows(make_target, user, other_user, no_dispatch):
    targets = [make_target(target_url=f"http://127.0.0.1:9/{n}/") for n in range(3)]
    make_target(is_active=False)
    make_target(owner=other_user)
    make_target(event="project.delete")

    deliveries = send_project_update("Dj", owner=user)

    assert [d.webhook_target_id for d in deliveries] == [t.pk for t in targets]
    for delivery in deliveries:
        assert not delivery._state.adding
        assert delivery._state.db == "default"
        saved = Delivery.objects.get(pk=delivery.pk)
        for field in Delivery._meta.concrete_fields:
            assert getattr(delivery, field.attname) == getattr(saved, field.attname), field
        assert delivery.webhook_target == targets[deliveries.index(delivery)]
    assert len({d.pk for d in deliveries}) == 3


def test_one_statement_finds_the_targets_and_writes_the_deliveries(
    make_target, user, no_dispatch, django_assert_num_queries
):
    for n in range(5):
        make_target(target_url=f"http://127.0.0.1:9/{n}/")
    with transaction.atomic(), django_assert_num_queries(1) as captured:
        deliveries = send_project_update("Dj", owner=user)
    assert len(deliveries) == 5
    assert captured.captured_queries[0]["sql"].startswith("INSERT INTO")


def test_databases_that_cannot_return_inserted_rows(
    make_target, user, no_dispatch, monkeypatch
):
    from django.db import connection

    targets = [make_target(target_url=f"http://127.0.0.1:9/{n}/") for n in range(3)]
    make_target(is_active=False)
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)

    deliveries = send_project_update("Dj", owner=user)

    assert [d.webhook_target_id for d in deliveries] == [t.pk for t in targets]
    assert [d.pk for d in deliveries] == list(
        Delivery.objects.order_by("webhook_target_id").values_list("pk", flat=True)
    )
    assert all(not d._state.adding for d in deliveries)
    assert send_project_update("Dj", owner=user, identifier="nobody") == []


def test_each_call_has_its_own_message_id(make_target, user, no_dispatch):
    make_target()
    [first] = send_project_update("a", owner=user)
    [second] = send_project_update("b", owner=user)
    assert first.hash_value != second.hash_value


def test_nobody_subscribed_is_an_empty_list(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert send_project_update("Dj", owner=user) == []
    assert Delivery.objects.count() == 0
    assert callbacks == []


def test_identifier_matches_exactly(make_target, user, no_dispatch):
    acme = make_target(identifier="acme")
    plain = make_target(target_url="http://127.0.0.1:9/plain/")
    assert [d.webhook_target_id for d in send_project_update("x", owner=user,
                                                             identifier="acme")] == [acme.pk]
    assert [d.webhook_target_id for d in send_project_update("x", owner=user)] == [plain.pk]
    upper = send_project_update("x", owner=user, identifier="ACME")
    if connection.vendor == "mysql":
        # MySQL's and MariaDB's default collations compare text without case.
        assert [d.webhook_target_id for d in upper] == [acme.pk]
    else:
        assert upper == []


def test_owner_and_identifier_may_be_positional(make_target, user, no_dispatch):
    target = make_target(identifier="acme")
    [delivery] = send_project_update("Dj", user, "acme")
    assert delivery.webhook_target_id == target.pk


def test_function_without_owner_parameter(make_target, user, no_dispatch):
    @hook(event="invoice.paid")
    def send_invoice(amount):
        return {"amount": amount}

    make_target(event="invoice.paid", identifier="inv")
    [delivery] = send_invoice(decimal.Decimal("9.50"), owner=user, identifier="inv")
    delivery.refresh_from_db()
    assert delivery.payload == {"amount": "9.50"}


def test_function_with_var_kwargs_gets_owner(make_target, user, no_dispatch):
    seen = {}

    @hook(event="project.update")
    def send(**kwargs):
        seen.update(kwargs)
        return {}

    make_target()
    send(owner=user, identifier="")
    assert seen == {"owner": user, "identifier": ""}


def test_methods_can_be_hooked(make_target, user, no_dispatch):
    class Notifier:
        @hook(event="project.update")
        def send(self, title, owner):
            return {"title": title, "by": type(self).__name__}

    make_target()
    [delivery] = Notifier().send("Dj", owner=user)
    assert delivery.payload == {"title": "Dj", "by": "Notifier"}


def test_payload_is_stored_as_json(make_target, user, no_dispatch):
    @hook(event="project.update")
    def send(owner):
        return {
            "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
            "day": datetime.date(2026, 1, 2),
            "price": decimal.Decimal("1.10"),
            "id": uuid.UUID(int=1),
            "tags": ("a", "b"),
            1: "int keys become strings",
        }

    make_target()
    [delivery] = send(owner=user)
    delivery.refresh_from_db()
    assert delivery.payload == {
        "when": "2026-01-02T03:04:05Z",
        "day": "2026-01-02",
        "price": "1.10",
        "id": "00000000-0000-0000-0000-000000000001",
        "tags": ["a", "b"],
        "1": "int keys become strings",
    }


def test_send_event(make_target, user, no_dispatch):
    target = make_target(identifier="acme")
    [delivery] = djwebhooks.send_event("project.update", {"a": 1}, owner=user,
                                       identifier="acme")
    assert delivery.webhook_target_id == target.pk
    assert delivery.payload == {"a": 1}


def test_send_event_with_message_id(make_target, user, no_dispatch):
    make_target()
    [delivery] = djwebhooks.send_event("project.update", {}, owner=user, message_id="msg_fixed")
    assert delivery.hash_value == "msg_fixed"


# Bad input: a clear error at call time, in the caller's stack, and nothing stored.


def test_missing_owner(make_target, no_dispatch):
    make_target()
    with pytest.raises(OwnerError, match=r"pass owner=<user> to .*send_project_update\(\)"):
        send_project_update("Dj")
    assert Delivery.objects.count() == 0


@pytest.mark.parametrize("owner", [None, AnonymousUser()])
def test_unusable_owner(owner, db):
    with pytest.raises(OwnerError):
        send_project_update("Dj", owner=owner)


def test_unsaved_owner(django_user_model, db):
    with pytest.raises(OwnerError, match="saved user"):
        send_project_update("Dj", owner=django_user_model(username="ghost"))


def test_undeclared_event_at_call_time(user, make_target, no_dispatch):
    @hook(event="project.exploded")
    def send(owner):
        return {}

    with pytest.raises(UnknownEventError, match=r"'project.exploded' is not declared.*"
                                                r"DJWEBHOOKS\['EVENTS'\]"):
        send(owner=user)
    with pytest.raises(UnknownEventError):
        djwebhooks.send_event("nope", {}, owner=user)
    assert Delivery.objects.count() == 0


@pytest.mark.parametrize("payload", [None, [1, 2], "text", 3])
def test_payload_must_be_a_dict(payload, make_target, user, no_dispatch):
    @hook(event="project.update")
    def send(owner):
        return payload

    make_target()
    with pytest.raises(PayloadError, match=rf"must be a dict, got {type(payload).__name__} "
                                           r"returned by .*send\(\)"):
        send(owner=user)
    assert Delivery.objects.count() == 0


def test_unserialisable_value_names_key_and_type(make_target, user, no_dispatch):
    make_target()
    with pytest.raises(PayloadError) as info:
        djwebhooks.send_event(
            "project.update", {"project": {"members": ["ok", object()]}}, owner=user
        )
    message = str(info.value)
    assert "payload['project']['members'][1]" in message
    assert "object" in message
    assert info.value.path == "payload['project']['members'][1]"
    assert Delivery.objects.count() == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(value, make_target, user, no_dispatch):
    make_target()
    with pytest.raises(PayloadError, match=r"payload\['ratio'\] is NaN or Infinity"):
        djwebhooks.send_event("project.update", {"ratio": value}, owner=user)


def test_bad_key_type_is_named(make_target, user, no_dispatch):
    make_target()
    with pytest.raises(PayloadError, match="not a valid JSON object key"):
        djwebhooks.send_event("project.update", {(1, 2): "tuple key"}, owner=user)


def nested(depth):
    value = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("payload, path, reason", [
    ({"text": "a\ud800b"}, "payload['text']", "a string with a lone surrogate"),
    ({"\udfff": 1}, "payload key '\\udfff'", "a string with a lone surrogate"),
    ({"n": 10 ** 5000}, "payload['n']", "an integer too long to write as text"),
    ({"a": {1: "one", "1": "un"}}, "payload['a']", "has the keys '1' and 1"),
    ({"a": {True: "yes", "true": "oui"}}, "payload['a']", "has the keys 'true' and True"),
    ({"a": {None: 0, "null": 1}}, "payload['a']", "which are both 'null' in JSON"),
    ({"deep": nested(150)}, "payload['deep']" + "['a']" * 99,
     "nested more than 100 levels deep"),
    ({"deep": nested(5000)}, "payload['deep']" + "['a']" * 99,
     "nested more than 100 levels deep"),
])
def test_payloads_that_cannot_be_sent_faithfully_are_refused(payload, path, reason,
                                                             make_target, user, no_dispatch):
    make_target()
    with pytest.raises(PayloadError) as info:
        djwebhooks.send_event("project.update", payload, owner=user)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path} ")
    assert reason in str(info.value)

    @hook(event="project.update")
    def send(owner):
        return payload

    with pytest.raises(PayloadError) as info:
        send(owner=user)  # the hook path refuses them the same way
    assert info.value.path == path
    assert Delivery.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_json_sent_is_the_json_the_hook_returned(make_target, user, receiver):
    # Key order, number spelling and characters as encoded at call time, whatever the
    # database does with JSON (PostgreSQL's jsonb sorts keys and respells numbers).
    make_target()
    payload = {"zebra": 1, "apple": {"y": 1e16, "x": 0.1, "w": 12345678901234567890},
               "text": "nul \x00 and ✓ and 😀", "b": [3, 1, 2], "a": 1.0}
    djwebhooks.send_event("project.update", payload, owner=user)
    [request] = receiver.requests
    body = request.body.decode()
    data = body[body.index('"data":') + len('"data":'):-1]
    expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if connection.vendor == "mysql" and _sql.astral_unstorable("default"):
        expected = expected.replace("😀", "\\ud83d\\ude00")
    assert data == expected
    assert json.loads(body)["data"]["text"] == "nul \x00 and ✓ and 😀"
    assert list(json.loads(body)["data"]) == ["zebra", "apple", "text", "b", "a"]


def test_bad_identifier(user, db):
    with pytest.raises(TypeError, match="identifier must be a string"):
        djwebhooks.send_event("project.update", {}, owner=user, identifier=["a"])


def test_errors_share_a_base_class():
    for error in (OwnerError, PayloadError, UnknownEventError, SenderNotCallable):
        assert issubclass(error, WebhookError)


@pytest.mark.parametrize(
    "usage",
    [lambda: hook(send_project_update), lambda: hook("project.update"), lambda: hook()],
)
def test_hook_misuse_is_explained(usage):
    with pytest.raises(TypeError, match=r"@hook\(event='project.update'\)"):
        usage()


def test_event_must_be_a_string():
    with pytest.raises(TypeError, match="must be a string"):
        hook(event=["project.update"])


def test_base_hook_with_a_custom_sender():
    calls = []

    def sender(wrapped, dkwargs, hash_value, *args, **kwargs):
        calls.append((dkwargs, hash_value, args, kwargs))
        return wrapped(*args, **kwargs)

    @base_hook(sender_callable=sender, hash_function=lambda: "h1", event="x", extra=1)
    def payload(a, b=2):
        return {"a": a, "b": b}

    assert payload(1, b=3) == {"a": 1, "b": 3}
    assert calls == [({"event": "x", "extra": 1}, "h1", (1,), {"b": 3})]


def test_base_hook_without_hash_function():
    seen = []

    @base_hook(lambda wrapped, dkwargs, hash_value: seen.append(hash_value), None)
    def payload():
        return {}

    payload()
    assert seen == [None]


def test_base_hook_refuses_a_sender_that_cannot_be_called():
    with pytest.raises(SenderNotCallable, match="sender_callable must be callable"):
        base_hook(sender_callable="not callable", hash_function=None)
    with pytest.raises(TypeError, match="hash_function"):
        base_hook(sender_callable=orm_callable, hash_function="nope")


def test_orm_callable_needs_an_event(user):
    @base_hook(sender_callable=orm_callable, hash_function=basic_hash_function)
    def payload(owner):
        return {}

    with pytest.raises(TypeError, match="requires an 'event'"):
        payload(owner=user)


def test_deliveries_are_written_in_the_callers_transaction(make_target, user, no_dispatch):
    make_target()
    with pytest.raises(RuntimeError), transaction.atomic():
        send_project_update("Dj", owner=user)
        assert Delivery.objects.count() == 1
        raise RuntimeError("roll back")
    assert Delivery.objects.count() == 0


@pytest.mark.parametrize("message_id", [
    "", " ", "x" * 65, "msg_1\r\nX-Injected: 1", "msg 1", "msg_é", "msg_\u2028", "\x00",
])
def test_a_message_id_that_cannot_be_a_header_is_refused(message_id, make_target, user,
                                                         no_dispatch):
    make_target()
    with pytest.raises(ValueError, match="cannot be a webhook-id: it must be 1 to 64 visible "
                                         "ASCII characters"):
        djwebhooks.send_event("project.update", {}, owner=user, message_id=message_id)
    assert not Delivery.objects.exists()


def test_a_message_id_that_is_not_a_string_is_refused(user, db):
    with pytest.raises(TypeError, match=r"A message id must be a string, got int \(123\)"):
        djwebhooks.send_event("project.update", {}, owner=user, message_id=123)


def test_a_hash_function_making_ids_too_long_is_refused_at_call_time(make_target, user,
                                                                     no_dispatch):
    @base_hook(sender_callable=orm_callable, hash_function=lambda: "h" * 100,
               event="project.update")
    def send(owner):
        return {}

    make_target()
    with pytest.raises(ValueError, match="cannot be a webhook-id"):
        send(owner=user)
    assert not Delivery.objects.exists()


def test_a_message_id_sent_before_raises_and_the_transaction_goes_on(make_target, user,
                                                                     no_dispatch):
    make_target()
    with transaction.atomic():
        djwebhooks.send_event("project.update", {}, owner=user, message_id="order-7")
        with pytest.raises(DuplicateMessageError, match="'order-7' was already sent") as info:
            djwebhooks.send_event("project.update", {}, owner=user, message_id="order-7")
        assert info.value.message_id == "order-7"
        # The transaction is still usable: the savepoint took the failed insert with it.
        djwebhooks.send_event("project.update", {}, owner=user, message_id="order-8")
    assert sorted(Delivery.objects.values_list("hash_value", flat=True)) == ["order-7",
                                                                            "order-8"]


def test_an_owner_of_another_model_is_refused(make_target, user, no_dispatch):
    from django.contrib.auth.models import Group

    make_target()
    group = Group.objects.create(pk=user.pk, name="staff")  # the user would get it otherwise
    with pytest.raises(OwnerError, match="owner must be a auth.User .the user model., got "
                                         "Group"):
        djwebhooks.send_event("project.update", {}, owner=group)
    with pytest.raises(OwnerError, match="got Group"):
        send_project_update("Dj", owner=group)
    assert not Delivery.objects.exists()


def test_identifier_default_of_the_hooked_function_routes(make_target, user, no_dispatch):
    @hook(event="project.update")
    def send(owner, identifier="acme"):
        return {"identifier": identifier}

    target = make_target(identifier="acme")
    [delivery] = send(owner=user)
    assert delivery.webhook_target_id == target.pk
    assert delivery.payload == {"identifier": "acme"}


def test_keyword_only_owner_is_not_taken_from_extra_positionals(make_target, user, no_dispatch):
    @hook(event="project.update")
    def send(a, *rest, owner):
        return {"a": a, "rest": list(rest)}

    make_target()
    [delivery] = send(1, 2, 3, owner=user)
    assert delivery.payload == {"a": 1, "rest": [2, 3]}
    with pytest.raises(OwnerError):
        send(1, 2, 3)


def test_payload_larger_than_the_limit_is_refused(settings, make_target, user, no_dispatch):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "MAX_PAYLOAD_BYTES": 100}
    make_target()
    djwebhooks.send_event("project.update", {"text": "é" * 40}, owner=user)  # 92 bytes
    with pytest.raises(PayloadError, match=r"is 111 bytes of JSON, more than "
                                           r"DJWEBHOOKS\['MAX_PAYLOAD_BYTES'\] \(100\)"):
        djwebhooks.send_event("project.update", {"text": "é" * 50}, owner=user)
    assert Delivery.objects.count() == 1
