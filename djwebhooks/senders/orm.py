"""The Django side of sending: resolve targets, write deliveries, dispatch after commit.

``orm_callable`` is the seed's ``sender_callable`` for the ORM; ``send_event`` is the same
thing as a plain function; ``DjangoSenderable`` is the ``Senderable`` that records each
attempt in the database.
"""

import inspect
import json
import math
from functools import cache, lru_cache

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, router, transaction
from django.utils import timezone

from djwebhooks import conf
from djwebhooks.exceptions import OwnerError, PayloadError, UnknownEventError
from djwebhooks.senders.base import Senderable, basic_hash_function

_MISSING = object()
#: The length of ``Delivery.hash_value``.
MESSAGE_ID_MAX_LENGTH = 64


def send_event(event, payload, *, owner, identifier="", message_id=None):
    """Send ``payload`` as ``event`` to every active target of ``owner`` and ``identifier``.

    Returns the list of ``Delivery`` rows created (empty when nobody subscribed). The rows
    are written in the caller's transaction and sent once it commits.
    """
    check_event(event)
    owner_pk = check_owner(owner)
    identifier = check_identifier(identifier)
    data = normalise_payload(payload)
    if message_id is None:
        message_id = basic_hash_function()
    elif not isinstance(message_id, str) or not 1 <= len(message_id) <= MESSAGE_ID_MAX_LENGTH:
        raise TypeError(
            f"message_id must be a string of 1 to {MESSAGE_ID_MAX_LENGTH} characters, "
            f"got {message_id!r}."
        )
    return create_deliveries(event, data, owner_pk, identifier, message_id)


def orm_callable(wrapped, dkwargs, hash_value=None, *args, **kwargs):
    """Call the hooked function for its payload and send it to every matching target."""
    event = dkwargs.get("event")
    if not event:
        raise TypeError(
            "djwebhooks.decorators.hook requires an 'event' argument in the decorator, "
            "e.g. @hook(event='project.update')."
        )
    check_event(event)
    owner, identifier, call_args, call_kwargs = split_call(wrapped, args, kwargs)
    owner_pk = check_owner(owner, function=wrapped)
    identifier = check_identifier(identifier)
    data = normalise_payload(wrapped(*call_args, **call_kwargs), function=wrapped)
    return create_deliveries(event, data, owner_pk, identifier, hash_value or basic_hash_function())


def create_deliveries(event, data, owner_pk, identifier, message_id):
    """Write one pending ``Delivery`` per matching target; enqueue them after commit.

    Where the database can return rows from an insert (PostgreSQL, SQLite 3.35+, MariaDB
    10.5+), finding the targets and writing the deliveries is one ``INSERT ... SELECT``
    statement, whatever the number of targets; elsewhere, a query and a bulk insert.
    """
    from djwebhooks.backends import get_backend
    from djwebhooks.models import Delivery

    using = router.db_for_write(Delivery)
    now = timezone.now()
    template = Delivery(event=event, payload=data, hash_value=message_id, next_attempt_at=now,
                        created=now, modified=now)
    if connections[using].features.can_return_rows_from_bulk_insert:
        rows = _insert_for_targets(using, template, owner_pk, identifier)
    else:
        rows = _insert_then_read(using, template, owner_pk, identifier)
    if not rows:
        return []
    rows = sorted(rows, key=lambda row: row[1])  # in target order, as they were created
    deliveries = [_copy(template, pk, target_id, using) for pk, target_id in rows]
    delivery_ids = [pk for pk, _ in rows]
    transaction.on_commit(lambda: get_backend().enqueue(delivery_ids), using=using)
    return deliveries


def _insert_for_targets(using, template, owner_pk, identifier):
    """Insert a copy of ``template`` for every active target of the event, owner and
    identifier, in one statement; return ``[(delivery id, target id)]``."""
    connection = connections[using]
    sql, fields = _insert_select_sql(using)
    params = [field.get_db_prep_save(getattr(template, field.attname), connection)
              for field in fields]
    params += [template.event, owner_pk, identifier, True]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@cache
def _insert_select_sql(using):
    """Return the ``INSERT ... SELECT ... RETURNING`` statement and the fields it binds.

    Every concrete column the delivery sets is written, except the target (taken from the
    SELECT) and those left NULL (so no untyped NULL needs a cast).
    """
    from djwebhooks.models import Delivery, WebhookTarget

    quote = connections[using].ops.quote_name
    meta, target_meta = Delivery._meta, WebhookTarget._meta
    target_fk = meta.get_field("webhook_target")
    example = Delivery(event="", payload={}, hash_value="", next_attempt_at=timezone.now(),
                       created=timezone.now(), modified=timezone.now())
    fields = [
        field for field in meta.concrete_fields
        if field is not meta.pk and field is not target_fk
        and getattr(example, field.attname) is not None
    ]
    columns = ", ".join(quote(field.column) for field in [*fields, target_fk])
    placeholders = ", ".join(["%s"] * len(fields))
    table, target_table = quote(meta.db_table), quote(target_meta.db_table)
    target_pk = f"{target_table}.{quote(target_meta.pk.column)}"
    conditions = " AND ".join(
        f"{target_table}.{quote(target_meta.get_field(name).column)} = %s"
        for name in ("event", "owner", "identifier", "is_active")
    )
    sql = (
        f"INSERT INTO {table} ({columns}) SELECT {placeholders}, {target_pk} "
        f"FROM {target_table} WHERE {conditions} "
        f"RETURNING {quote(meta.pk.column)}, {quote(target_fk.column)}"
    )
    return sql, fields


def _insert_then_read(using, template, owner_pk, identifier):
    """The same as ``_insert_for_targets`` where an insert cannot return rows (MySQL): find
    the targets, bulk-insert, and read the ids back by the unique (message id, target)."""
    from djwebhooks.models import Delivery, WebhookTarget

    target_ids = list(
        WebhookTarget.objects.using(using).filter(
            event=template.event, owner_id=owner_pk, identifier=identifier, is_active=True
        ).values_list("pk", flat=True)
    )
    if not target_ids:
        return []
    Delivery.objects.using(using).bulk_create(
        [_copy(template, None, pk, using) for pk in target_ids]
    )
    return list(
        Delivery.objects.using(using).filter(
            hash_value=template.hash_value, webhook_target_id__in=target_ids
        ).values_list("pk", "webhook_target_id")
    )


def _copy(template, pk, target_id, using):
    """Return ``template`` as a new ``Delivery`` with ``pk`` and ``target_id``, saved to
    ``using`` when ``pk`` is set."""
    from djwebhooks.delivery import copy_instance

    delivery = copy_instance(template)
    # Straight into the instance's dict: the template has no related object cached, so the
    # foreign key's descriptor has nothing to clear.
    delivery.__dict__[template._meta.pk.attname] = pk
    delivery.__dict__["webhook_target_id"] = target_id
    if pk is not None:
        delivery._state.adding, delivery._state.db = False, using
    return delivery


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


def normalise_payload(payload, function=None):
    """Return ``payload`` as plain JSON data, or raise ``PayloadError`` saying what is wrong.

    Dates, decimals and UUIDs become strings (``DjangoJSONEncoder``); anything else that
    JSON cannot hold, and NaN or Infinity, is refused with the path to the value.
    """
    source = f" returned by {function.__qualname__}()" if function is not None else ""
    if not isinstance(payload, dict):
        raise PayloadError(
            f"A webhook payload must be a dict, got {type(payload).__name__}{source}. "
            "Return a dict of JSON-serialisable values."
        )
    try:
        # As on the wire: UTF-8, not \u escapes, so the size limit counts real bytes.
        text = json.dumps(payload, cls=DjangoJSONEncoder, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        path, value, reason = _find_unserialisable(payload, "payload")
        raise PayloadError(
            f"{path} is {reason}{source}: {type(value).__name__} {_short_repr(value)}. "
            "Convert it to a string, number, bool, None, list or dict.",
            path=path,
        ) from exc
    size, limit = len(text.encode("utf-8")), conf.get_setting("MAX_PAYLOAD_BYTES")
    if size > limit:
        raise PayloadError(
            f"The payload{source} is {size} bytes of JSON, more than "
            f"DJWEBHOOKS['MAX_PAYLOAD_BYTES'] ({limit}). Send less, such as ids and a URL "
            "to fetch the rest from, or raise the limit."
        )
    return json.loads(text)


def _find_unserialisable(value, path):
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return f"{path} key {key!r}", key, "not a valid JSON object key"
            found = _find_unserialisable(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_unserialisable(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return path, value, "NaN or Infinity, which JSON cannot represent"
    try:
        json.dumps(value, cls=DjangoJSONEncoder)
    except (TypeError, ValueError):
        return path, value, "not JSON-serialisable"
    return None


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def envelope_extra(target, owner_field=_MISSING):
    """Return the envelope keys added beside ``type``, ``timestamp`` and ``data``.

    ``owner_field`` is the ``OWNER_FIELD`` setting, read from settings when not given.
    """
    extra = {"identifier": target.identifier}
    if owner_field is _MISSING:
        owner_field = conf.get_setting("OWNER_FIELD")
    if owner_field is not False:
        owner = target.owner
        extra["owner"] = (
            owner.get_username() if owner_field is None else getattr(owner, owner_field)
        )
    return extra


class DjangoSenderable(Senderable):
    """A ``Senderable`` built from a ``Delivery``, recording each attempt in the database."""

    json_encoder = DjangoJSONEncoder

    @staticmethod
    def settings_options():
        """Return the options every sender takes from ``DJWEBHOOKS``: timeouts, limits, the
        URL policy. Read once and passed as ``options`` when making many senders."""
        return {
            "timeout": conf.get_timeouts(),
            "body_limit": conf.get_setting("RESPONSE_BODY_LIMIT"),
            "user_agent": conf.get_user_agent(),
            "policy": conf.get_url_policy(),
            "total_timeout": conf.get_seconds("TOTAL_TIMEOUT"),
            "owner_field": conf.get_setting("OWNER_FIELD"),
        }

    def __init__(self, delivery, *, record=True, options=None, **kwargs):
        target = delivery.webhook_target
        self.record = record
        self.delivery = delivery
        self.webhook_target = target
        options = dict(options if options is not None else self.settings_options())
        owner_field = options.pop("owner_field", _MISSING)  # read from settings if absent
        options.update(
            url=target.target_url,
            payload=delivery.payload,
            event=delivery.event,
            message_id=delivery.hash_value,
            secret=target.signing_secrets(),
            timestamp=delivery.created,
            content_type=target.header_content_type,
            extra=envelope_extra(target, owner_field),
        )
        options.update(kwargs)
        super().__init__(**options)

    def notify(self, result):
        """Store the attempt and move the delivery's status (see ``delivery.record_attempt``).

        Senders made with ``record=False`` leave that to their caller, which records many
        results at once (``delivery.record_attempts``).
        """
        if self.record:
            from djwebhooks.delivery import record_attempt

            record_attempt(self.delivery, result)
