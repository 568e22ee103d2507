"""Putting messages in: ``send_event()`` and ``replay()``.

A call checks its event, owner, identifier, message id and payload, and raises before
anything is written if one is wrong. It then writes one pending ``Delivery`` per matching
target in the caller's transaction, and hands their ids to the backend once that
transaction commits.
"""

import inspect
import logging
import re
import uuid
from functools import lru_cache, partial

from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, IntegrityError, models, router, transaction
from django.utils import timezone

from djwebhooks import _sql, conf, queue
from djwebhooks.backends import get_backend
from djwebhooks.encoding import encode_payload
from djwebhooks.exceptions import DuplicateMessageError, OwnerError, UnknownEventError
from djwebhooks.models import Delivery, check_tables, copy_instance

logger = logging.getLogger("djwebhooks.events")

_MISSING = object()
#: The longest message id: the length of ``Delivery.hash_value``.
MESSAGE_ID_MAX_LENGTH = 64
#: What a message id may hold: visible ASCII, so it travels as a header unchanged and every
#: receiver reads it back the same.
_MESSAGE_ID_RE = re.compile(r"^[\x21-\x7e]+$")


class GeneratedMessageId(str):
    """A message id made by ``basic_hash_function``: random, so it cannot have been sent
    before, and its insert needs no savepoint."""

    __slots__ = ()


def basic_hash_function():
    """Return a new message id: ``msg_`` and a random UUID in hex."""
    return GeneratedMessageId(f"msg_{uuid.uuid4().hex}")


def send_event(event, payload, *, owner, identifier="", message_id=None):
    """Send ``payload`` as ``event`` to every active target of ``owner`` and ``identifier``.

    Returns the list of ``Delivery`` rows created (empty when nobody subscribed). The rows
    are written in the caller's transaction and sent once it commits. ``message_id`` (the
    ``webhook-id``; a new random one when None) may be your own, such as your event's
    primary key: one already sent to one of the targets raises ``DuplicateMessageError``,
    and the caller's transaction is left usable.
    """
    check_event(event)
    owner_pk = check_owner(owner)
    identifier = check_identifier(identifier)
    message_id = check_message_id(basic_hash_function() if message_id is None else message_id)
    return create_deliveries(event, payload, owner_pk, identifier, message_id)


def check_event(event):
    """Raise ``UnknownEventError`` unless ``event`` is declared in settings."""
    if not isinstance(event, str):
        raise TypeError(f"An event name must be a string, got {type(event).__name__}.")
    declared = conf.get_events()
    if event not in declared:
        raise UnknownEventError(event, declared)


def check_owner(owner, function=None):
    """Return the primary key of ``owner``, a saved user; raise ``OwnerError`` otherwise."""
    where = f" to {function.__qualname__}()" if function is not None else ""
    if owner is _MISSING or owner is None:
        raise OwnerError(
            f"A webhook needs an owner: pass owner=<user>{where}, the user whose webhook "
            "targets should receive it."
        )
    if getattr(owner, "is_anonymous", False) or getattr(owner, "pk", None) is None:
        raise OwnerError(
            f"owner must be a saved user, got {owner!r}{where}. Anonymous users and unsaved "
            "users cannot own webhook targets."
        )
    user_model = get_user_model()
    if not isinstance(owner, user_model):
        raise OwnerError(
            f"owner must be a {user_model._meta.label} (the user model), got "
            f"{type(owner).__name__} {owner!r}{where}. Webhook targets belong to users: "
            "pass the user whose targets should receive it."
        )
    return owner.pk


def check_identifier(identifier):
    """Return ``identifier`` as a string (``""`` for None)."""
    if identifier is None:
        return ""
    if not isinstance(identifier, (str, int)) or isinstance(identifier, bool):
        raise TypeError(
            f"identifier must be a string (or an integer, used as a string), got "
            f"{type(identifier).__name__} ({identifier!r})."
        )
    return str(identifier)


def check_message_id(message_id):
    """Return ``message_id``, or raise ``ValueError`` unless it can be a ``webhook-id``:
    1 to 64 visible ASCII characters (no spaces, no line breaks)."""
    if not isinstance(message_id, str):
        raise TypeError(f"A message id must be a string, got {type(message_id).__name__} "
                        f"({message_id!r}).")
    if not 1 <= len(message_id) <= MESSAGE_ID_MAX_LENGTH or not _MESSAGE_ID_RE.match(
            message_id):
        raise ValueError(
            f"The message id {message_id[:80]!r} cannot be a webhook-id: it must be 1 to "
            f"{MESSAGE_ID_MAX_LENGTH} visible ASCII characters (letters, digits and "
            "punctuation; no spaces, line breaks or other characters), as it is sent as a "
            "header."
        )
    return message_id


def create_deliveries(event, payload, owner_pk, identifier, message_id, *, function=None):
    """Write one pending ``Delivery`` of ``payload`` per matching target; enqueue them once
    the caller's transaction commits. Return the deliveries.

    A message id not made by ``basic_hash_function`` may have been sent before: its insert
    runs in a savepoint, and a duplicate raises ``DuplicateMessageError`` without breaking
    the caller's transaction.
    """
    using = router.db_for_write(Delivery)
    source = f" returned by {function.__qualname__}()" if function is not None else ""
    payload_json = encode_payload(
        payload, encoder=DjangoJSONEncoder, max_bytes=conf.get_setting("MAX_PAYLOAD_BYTES"),
        escape_astral=_sql.astral_unstorable(using), source=source,
    )
    now = timezone.now()
    template = Delivery(event=event, payload_json=payload_json, hash_value=message_id,
                        next_attempt_at=now, queued_at=now, created=now, modified=now)
    try:
        if not isinstance(message_id, GeneratedMessageId):
            try:
                with transaction.atomic(using=using):
                    rows = _sql.insert_deliveries(using, template, owner_pk, identifier)
            except IntegrityError as exc:
                raise DuplicateMessageError(message_id) from exc
        else:
            rows = _sql.insert_deliveries(using, template, owner_pk, identifier)
    except DatabaseError as exc:
        check_tables(using, cause=exc)  # the first query: say so if migrate was not run
        raise
    if not rows:
        return []
    rows = sorted(rows, key=lambda row: row[1])  # in target order, as they were created
    deliveries = [_saved_copy(template, pk, target_id, due, using)
                  for pk, target_id, due in rows]
    enqueue_on_commit([row[0] for row in rows], using=using)
    return deliveries


def _saved_copy(template, pk, target_id, due, using):
    delivery = copy_instance(template)
    # Straight into the instance's dict: the template has no related object cached, so the
    # foreign key's descriptor has nothing to clear.
    delivery.__dict__[template._meta.pk.attname] = pk
    delivery.__dict__["webhook_target_id"] = target_id
    delivery.__dict__["next_attempt_at"] = delivery.__dict__["queued_at"] = due
    delivery._state.adding, delivery._state.db = False, using
    return delivery


def enqueue_on_commit(delivery_ids, *, using):
    """Hand ``delivery_ids`` to the backend once the transaction on ``using`` commits.

    A backend that fails (a broker that is down) is logged: it never turns the committed
    request into an error, nor stops the project's own later on-commit callbacks. The
    deliveries stay due, for a worker or a sweep.
    """
    transaction.on_commit(partial(_enqueue, delivery_ids), using=using, robust=True)


def _enqueue(delivery_ids):
    try:
        get_backend().enqueue(delivery_ids)
    except Exception:
        logger.exception("The webhook backend could not take deliveries %s; they stay due "
                         "in the database, for webhooks_sweep or a worker.",
                         _shorten(delivery_ids))
        try:
            queue.unqueued(delivery_ids)  # so the next sweep hands them over at once
        except Exception:
            logger.exception("Could not mark deliveries %s as not queued; the sweep hands "
                             "them over after REQUEUE_AFTER.", _shorten(delivery_ids))


def _shorten(ids, limit=20):
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def replay(deliveries, *, replayed_by=None):
    """Send ``deliveries`` (a queryset, or an iterable of deliveries or ids) again; return
    the ids of those replayed.

    ``replayed_by``, the user who asked (or None), is kept on the next attempt of each.

    Each replay is a new attempt on the same ``Delivery``, with the same ``webhook-id``.
    The deliveries are made pending and due now, and handed to the backend after commit;
    one that a worker holds at this moment is left alone (and not in the list returned).
    A replayed delivery that fails again is retried only while its attempts are within
    ``RETRY_SCHEDULE``.
    """
    ids = _ids_of(deliveries)
    if not ids:
        return []
    ids = queue.make_due(ids, replayed_by=replayed_by)
    if ids:
        enqueue_on_commit(ids, using=queue.database())
    return ids


def skip(deliveries, *, skipped_by=None):
    """Cancel the pending ``deliveries`` (a queryset, or an iterable of deliveries or ids)
    that no worker is sending at this moment; return the ids cancelled.

    At an ordered target this skips the delivery the others wait for: the next one's turn
    comes, and it is handed to the backend after commit. ``skipped_by``, the user who
    asked (or None), is named in the deliveries' reason.
    """
    ids = _ids_of(deliveries)
    if not ids:
        return []
    who = skipped_by.get_username() if skipped_by is not None else ""
    ids, targets = queue.cancel(ids, f"skipped by {who}" if who else "skipped")
    if targets:
        transaction.on_commit(partial(_hand_over_turns, targets), using=queue.database(),
                              robust=True)
    return ids


def _ids_of(deliveries):
    """The ids of ``deliveries``: a queryset, or an iterable of deliveries or ids."""
    if isinstance(deliveries, models.QuerySet):
        return list(deliveries.values_list("pk", flat=True))
    return [getattr(item, "pk", item) for item in deliveries]


def _hand_over_turns(targets):
    try:
        get_backend().hand_over_turns(targets)
    except Exception:
        logger.exception("Could not hand the next deliveries of ordered targets %s to the "
                         "backend; they stay due, for webhooks_sweep or a worker.",
                         sorted(targets))


def split_call(wrapped, args, kwargs):
    """Find ``owner`` and ``identifier`` in a call, and the arguments ``wrapped`` accepts.

    ``owner`` and ``identifier`` may be given by keyword or, when the hooked function
    declares them, by position; an ``identifier`` the function declares with a default
    routes by that default when the caller leaves it out. They are passed on only to
    functions that declare them (or take ``**kwargs``).
    """
    positional, defaults, keywords, var_kwargs = _signature(wrapped)
    kwargs = dict(kwargs)
    found = {}
    for name, fallback in (("owner", _MISSING), ("identifier", "")):
        if name in kwargs:
            found[name] = kwargs[name] if name in keywords or var_kwargs else kwargs.pop(name)
        elif name in positional and positional.index(name) < len(args):
            found[name] = args[positional.index(name)]
        else:
            found[name] = defaults.get(name, fallback)
    return found["owner"], found["identifier"], args, kwargs


@lru_cache(maxsize=512)
def _signature(function):
    """Return (positional names, defaults, keyword names, takes **kwargs) of ``function``."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return (), {}, frozenset(), True
    positional = tuple(
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
    keywords = frozenset(
        p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    var_kwargs = any(p.kind == p.VAR_KEYWORD for p in parameters)
    return positional, defaults, keywords, var_kwargs


#: The data of a test event: the receiver can tell it from a real one by ``test``.
TEST_PAYLOAD = {"test": True,
                "message": "A test event, sent on request from the webhook pages."}


def send_test_event(target):
    """Send one test delivery of ``target``'s event to ``target`` alone; return it.

    Its data is ``TEST_PAYLOAD`` and its message id begins ``msg_test_``; it is written in
    the caller's transaction and sent once it commits, as any delivery is. An inactive
    target gets none: ``ValueError`` says to enable it first.
    """
    if not target.is_active:
        raise ValueError("This target is disabled: enable it before sending it a test "
                         "event.")
    using = router.db_for_write(Delivery)
    now = timezone.now()
    delivery = Delivery(
        webhook_target=target, event=target.event,
        hash_value=f"msg_test_{uuid.uuid4().hex}", next_attempt_at=now, queued_at=now,
        payload_json=encode_payload(TEST_PAYLOAD, encoder=DjangoJSONEncoder,
                                    max_bytes=conf.get_setting("MAX_PAYLOAD_BYTES")))
    delivery.save(using=using, force_insert=True)
    enqueue_on_commit([delivery.pk], using=using)
    return delivery
