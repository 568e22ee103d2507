"""The statements written by hand, one function each, with the vendor-specific forms side
by side. Everything else goes through the ORM.

Each function has a fast form for the databases that allow it (PostgreSQL's ``RETURNING``
and ``unnest``, ``INSERT ... SELECT ... RETURNING``) and a portable one, and the tests run
each against every database CI has. Times come from the database's own clock
(``models.DatabaseNow``), never a host's, so hosts whose clocks disagree still agree on
which claims have expired and which deliveries are due.
"""

import re
from datetime import datetime, timedelta, timezone
from functools import cache

from django.conf import settings
from django.db import connections, transaction
from django.db.models import DurationField, Exists, F, OuterRef, Q, Value

from djwebhooks.models import (
    SQL_NOW,
    DatabaseNow,
    Delivery,
    DeliveryAttempt,
    WebhookTarget,
    copy_instance,
    row_loader,
)

PENDING = Delivery.Status.PENDING


def now_plus(seconds):
    """An expression: the database's time now, plus ``seconds``."""
    return DatabaseNow() + Value(timedelta(seconds=seconds), output_field=DurationField())


def db_now(using):
    """Read the database's clock: an aware datetime in UTC."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_now_sql(connection)}")
        (value,) = cursor.fetchone()
    return _aware(value)


def _aware(value):
    """A datetime read by hand (text on SQLite, naive UTC on MySQL) as an aware one."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    utc = timezone.utc
    return value.replace(tzinfo=utc) if value.tzinfo is None else value.astimezone(utc)


def _now_sql(connection):
    return SQL_NOW.get(connection.vendor, "CURRENT_TIMESTAMP")


def _quote(using):
    return connections[using].ops.quote_name


def _column(name, model=Delivery):
    return model._meta.get_field(name).column


# Claims
# ------


def claim(using, claimant, *, limit, lease, ids=None, exclude_targets=()):
    """Claim up to ``limit`` due deliveries (among ``ids`` if given) for ``lease`` seconds;
    return their ids, those due longest first.

    Rows another transaction has locked are skipped, not waited for, where the database has
    ``SKIP LOCKED``; the ``UPDATE`` checks again that each row is due and free, so two
    claimants cannot both take a row anywhere.

    An ordered target's delivery is claimed only in its turn (``in_turn()``): when no
    delivery of its target created before it is pending, and none is being sent. Two
    claims made at once could each see the other's delivery as not yet claimed, so each
    checks its ordered deliveries again under a lock of their targets' rows, against what
    has committed since (SQLite checks in the ``UPDATE``, under its write lock).
    """
    connection = connections[using]
    rows = Delivery.objects.using(using).due()
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    if exclude_targets:
        rows = rows.exclude(webhook_target_id__in=list(exclude_targets))
    rows = rows.order_by("next_attempt_at", "pk")
    if connection.vendor == "postgresql":
        return _claim_returning(using, rows, claimant, limit, lease, ids, exclude_targets)
    rows = rows.in_turn()
    if connection.vendor == "sqlite":
        # Read before the transaction: SQLite cannot turn a reading transaction into a
        # writing one while another connection writes, but it waits to start a write.
        candidates = list(rows.values_list("pk", flat=True)[:limit])
        if not candidates:
            return []
    with transaction.atomic(using=using):
        free = Delivery.objects.using(using).due()
        if connection.vendor == "sqlite":
            # Checked again under the write lock. (MySQL refuses an UPDATE that reads its
            # own table in a subquery; elsewhere _check_turns checks.)
            free = free.in_turn()
        else:
            if connection.features.has_select_for_update_skip_locked:
                rows = rows.select_for_update(skip_locked=True)
            candidates = list(rows.values_list("pk", flat=True)[:limit])
            if not candidates:
                return []
        free.filter(pk__in=candidates).update(claimed_by=claimant, claimed_until=now_plus(lease))
        claimed = Delivery.objects.using(using).filter(pk__in=candidates, claimed_by=claimant,
                                                        status=PENDING)
        if connection.vendor != "sqlite":
            ordered = WebhookTarget.objects.using(using).filter(
                pk__in=claimed.values("webhook_target_id"), ordered=True)
            if ordered.exists():
                _check_turns(using, claimant, claimed, ordered)
        return list(claimed.order_by("next_attempt_at", "pk").values_list("pk", flat=True))


def _claim_returning(using, rows, claimant, limit, lease, ids, exclude_targets):
    """PostgreSQL: one statement on the worker's hot path, ``WITH heads AS (...), plain AS
    (... FOR UPDATE SKIP LOCKED) UPDATE ... RETURNING``.

    ``plain`` reads the due deliveries of unordered targets from the due index. ``heads``
    reads, for each ordered target, its oldest pending delivery (one probe of the line
    index), and keeps it if it is due and free and no other delivery of its target is being
    sent: an ordered target's backlog is never walked. Heads come first, so that a busy
    sender's unordered deliveries cannot keep an ordered target waiting. Heads are locked
    as the plain rows are, ``FOR UPDATE SKIP LOCKED``, which checks again that each is due
    and free as it is now.
    """
    connection = connections[using]
    quote = _quote(using)
    meta, targets = Delivery._meta, WebhookTarget._meta
    table, target_table = quote(meta.db_table), quote(targets.db_table)
    pk, target_pk = quote(meta.pk.column), quote(targets.pk.column)
    target = quote(_column("webhook_target"))
    status, due = quote(_column("status")), quote(_column("next_attempt_at"))
    until, ordered = quote(_column("claimed_until")), quote(_column("ordered", WebhookTarget))
    plain = rows.exclude(webhook_target_id__in=WebhookTarget.objects.filter(
        ordered=True).values("pk"))
    narrow, narrow_params = "", []
    if ids is not None:
        narrow += f" AND h.{pk} = ANY(%s::bigint[])"
        narrow_params.append([int(pk_) for pk_ in ids])
    if exclude_targets:
        narrow += f" AND NOT t.{target_pk} = ANY(%s::bigint[])"
        narrow_params.append([int(pk_) for pk_ in exclude_targets])
    now = "STATEMENT_TIMESTAMP()"
    heads = (
        f"SELECT h.{pk} AS pk FROM {target_table} t CROSS JOIN LATERAL ("
        f"SELECT d.{pk}, d.{due}, d.{until} FROM {table} d WHERE d.{target} = t.{target_pk} "
        f"AND d.{status} = %s ORDER BY d.{pk} LIMIT 1) h "
        f"WHERE t.{ordered} AND h.{due} <= {now} "
        f"AND (h.{until} IS NULL OR h.{until} < {now}) "
        f"AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.{target} = t.{target_pk} "
        f"AND e.{status} = %s AND e.{until} >= {now}){narrow} LIMIT %s "
        # One claim at a time takes an ordered target's delivery; the others pass it by.
        f"FOR NO KEY UPDATE OF t SKIP LOCKED"
    )
    heads_params = [PENDING, PENDING, *narrow_params, limit]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        # Compiled in the transaction: Django refuses FOR UPDATE outside one.
        inner = plain.select_for_update(skip_locked=True).values("pk")[:limit]
        inner_sql, inner_params = inner.query.get_compiler(using).as_sql()
        if _compiled_times_apply(connection):
            _compiled_times(cursor)
        cursor.execute(
            f"WITH heads AS ({heads}), "
            # The heads' own rows, locked as the plain ones are (a row another transaction
            # changed is checked again as it is now; one it holds is passed by).
            f"head_rows AS (SELECT {pk} AS pk FROM {table} WHERE {pk} = ANY(ARRAY("
            f"SELECT pk FROM heads)) AND {status} = %s AND {due} <= {now} "
            f"AND ({until} IS NULL OR {until} < {now}) FOR UPDATE SKIP LOCKED), "
            f"plain AS ({inner_sql}) "
            f"UPDATE {table} "
            f"SET {quote(_column('claimed_by'))} = %s, {until} = {now} + %s "
            # The plain CTE's column is named pk (as Django names values("pk")).
            f"WHERE {pk} IN (SELECT pk FROM head_rows UNION ALL SELECT pk FROM plain "
            f"LIMIT %s) "
            f"RETURNING {pk}, {due}, {target} IN ("
            f"SELECT {target_pk} FROM {target_table} WHERE {ordered})",
            [*heads_params, PENDING, *inner_params, claimant, timedelta(seconds=lease),
             limit],
        )
        rows = cursor.fetchall()
        in_line = [row[0] for row in rows if row[2]]
        if in_line:
            claimed = Delivery.objects.using(using).filter(pk__in=in_line)
            lost = _check_turns(using, claimant, claimed, WebhookTarget.objects.using(
                using).filter(pk__in=claimed.values("webhook_target_id"), ordered=True))
            rows = [row for row in rows if row[0] not in lost]
    return [row[0] for row in sorted(rows, key=lambda row: (row[1], row[0]))]


def _check_turns(using, claimant, claimed, ordered):
    """Give back those of the deliveries just ``claimed`` (a queryset) that are not in
    their turn after all; return their ids.

    The ``ordered`` targets' rows are locked first, in id order, so that the claims of
    one target are checked one after the other, and this check (a statement of its own,
    which sees what committed since the claim's) sees a delivery another claim took
    meanwhile, or one that became pending again (a replay). Run in the claim's
    transaction, at the default isolation level (READ COMMITTED).
    """
    # Not FOR UPDATE where there is a weaker lock: it would hold up inserts of deliveries
    # (their foreign key's check locks the target row for key share).
    no_key = connections[using].features.has_select_for_no_key_update
    list(ordered.order_by("pk").select_for_update(no_key=no_key).values_list("pk", flat=True))
    before = Delivery.objects.using(using).filter(
        webhook_target_id=OuterRef("webhook_target_id"), status=PENDING
    ).exclude(pk=OuterRef("pk")).filter(
        Q(pk__lt=OuterRef("pk"))
        | (Q(claimed_until__gte=DatabaseNow()) & ~Q(claimed_by=claimant))
    )
    lost = list(claimed.filter(webhook_target_id__in=ordered.values("pk"), claimed_by=claimant)
                .filter(Exists(before)).values_list("pk", flat=True))
    if lost:
        Delivery.objects.using(using).filter(pk__in=lost, claimed_by=claimant).update(
            claimed_by="", claimed_until=None)
    return set(lost)


def renew(using, claimant, ids, lease):
    """Extend ``claimant``'s claims on ``ids`` by ``lease`` seconds from now; return the ids
    it still held (the others were lost: expired and taken, or finished)."""
    if not ids:
        return set()
    connection = connections[using]
    if connection.vendor == "postgresql":
        quote = _quote(using)
        pk = quote(Delivery._meta.pk.column)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(Delivery._meta.db_table)} "
                f"SET {quote(_column('claimed_until'))} = STATEMENT_TIMESTAMP() + %s "
                f"WHERE {pk} = ANY(%s) AND {quote(_column('claimed_by'))} = %s "
                f"AND {quote(_column('status'))} = %s RETURNING {pk}",
                [timedelta(seconds=lease), list(ids), claimant, PENDING],
            )
            return {pk for (pk,) in cursor.fetchall()}
    held = Delivery.objects.using(using).filter(pk__in=list(ids), claimed_by=claimant,
                                                status=PENDING)
    with transaction.atomic(using=using):
        held.update(claimed_until=now_plus(lease))
        return set(held.values_list("pk", flat=True))


# Loading
# -------


def load(using, claimant, ids, known=None):
    """The deliveries ``ids`` that ``claimant`` holds, each with its target and the
    target's owner (as ``select_related`` gives them), in no particular order.

    PostgreSQL (psycopg 3, ``USE_TZ``): one join written here, its times read by
    psycopg's compiled loader, and each target and owner made once however many of the
    deliveries share it, in this load and in the others given the same ``known`` (the
    parts of one claim). Elsewhere: the ORM's ``select_related``.
    """
    if not ids:
        return []
    connection = connections[using]
    if not _compiled_times_apply(connection):
        return list(
            Delivery.objects.using(using)
            .select_related("webhook_target__owner")
            .filter(pk__in=list(ids), claimed_by=claimant, status=PENDING)
        )
    sql, parts, converted = _load_plan(using)
    with connection.cursor() as cursor:
        _compiled_times(cursor)
        cursor.execute(sql, ["{" + ",".join(str(int(pk)) for pk in ids) + "}", claimant,
                             PENDING])
        rows = cursor.fetchall()
    (delivery_model, delivery_names, _, delivery_end), \
        (target_model, target_names, target_pk, target_end), \
        (owner_model, owner_names, owner_pk, _) = parts
    # The delivery's columns converted in every row, the target's and owner's only in the
    # rows they are made from.
    own = [column for column in converted if column[0] < delivery_end]
    shared = [column for column in converted if column[0] >= delivery_end]
    target_cache = Delivery.webhook_target.field.set_cached_value
    owner_cache = WebhookTarget.owner.field.set_cached_value
    make_delivery, make_target, make_owner = (
        row_loader(model, using) for model in (delivery_model, target_model, owner_model))
    known = {} if known is None else known
    targets, owners = known.setdefault("targets", {}), known.setdefault("owners", {})
    loaded = []
    for row in rows:
        if own:
            row = _convert(row, own, connection)
        delivery = make_delivery(delivery_names, row[:delivery_end])
        target = targets.get(row[target_pk])
        if target is None:
            if shared:
                row = _convert(row, shared, connection)
            target = targets[row[target_pk]] = make_target(
                target_names, row[delivery_end:target_end])
            owner = owners.get(row[owner_pk])
            if owner is None:
                owner = owners[row[owner_pk]] = make_owner(owner_names, row[target_end:])
            owner_cache(target, owner)
        target_cache(delivery, target)
        loaded.append(delivery)
    return loaded


@cache
def _load_plan(using):
    """The join ``load`` runs on ``using``, and how to cut its rows into models: for the
    delivery, then its target, then the target's owner, the model, its fields' names (in
    the model's order, as ``from_db`` takes them), the place of its id in the row, and
    where its columns end; and the columns whose fields convert what the database
    gives."""
    connection = connections[using]
    quote = connection.ops.quote_name
    owner_model = WebhookTarget._meta.get_field("owner").related_model
    tables = (("d", Delivery), ("t", WebhookTarget), ("o", owner_model))
    columns, parts, converted = [], [], []
    for alias, model in tables:
        fields = model._meta.concrete_fields
        pk_index = len(columns) + [field.primary_key for field in fields].index(True)
        for field in fields:
            expression = field.get_col(alias)
            converters = (connection.ops.get_db_converters(expression) +
                          expression.get_db_converters(connection))
            if converters:
                converted.append((len(columns), converters, expression))
            columns.append(f"{alias}.{quote(field.column)}")
        parts.append((model, [field.attname for field in fields], pk_index, len(columns)))
    target_fk = Delivery._meta.get_field("webhook_target")
    owner_fk = WebhookTarget._meta.get_field("owner")
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(Delivery._meta.db_table)} d "
        f"JOIN {quote(WebhookTarget._meta.db_table)} t ON t.{quote(target_fk.target_field.column)}"
        f" = d.{quote(target_fk.column)} "
        f"JOIN {quote(owner_model._meta.db_table)} o ON o.{quote(owner_fk.target_field.column)}"
        f" = t.{quote(owner_fk.column)} "
        f"WHERE d.{quote(Delivery._meta.pk.column)} = ANY(%s::bigint[]) "
        f"AND d.{quote(_column('claimed_by'))} = %s AND d.{quote(_column('status'))} = %s"
    )
    return sql, parts, converted


def _convert(row, converted, connection):
    row = list(row)
    for index, converters, expression in converted:
        for converter in converters:
            row[index] = converter(row[index], expression, connection)
    return row


def _compiled_times_apply(connection):
    """Whether ``_compiled_times`` can be used on ``connection``: PostgreSQL through
    psycopg 3, with aware times read in UTC (``USE_TZ``, the connection's time zone)."""
    if connection.vendor != "postgresql" or not settings.USE_TZ or \
            connection.timezone_name != "UTC":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def _compiled_times(cursor):
    """Read ``timestamptz`` columns on this cursor with psycopg's own loader, compiled
    in psycopg's C extension. Django's loader (a Python subclass of it, which psycopg
    cannot replace by the compiled one) costs a few microseconds a value; on a connection
    in UTC both give the same aware datetimes in ``timezone.utc``."""
    from psycopg.types.datetime import TimestamptzLoader

    cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)


# Fenced updates
# --------------


def update_rows(using, queryset, fields):
    """Set ``fields`` on the deliveries ``queryset`` selects; return the ids it changed.

    PostgreSQL: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE) RETURNING``.
    Elsewhere, in the caller's transaction, a write that changes nothing first locks the
    matching rows (and takes SQLite's write lock), so the ids then read are the ones the
    update changes.
    """
    connection = connections[using]
    queryset = queryset.using(using)
    if connection.vendor == "postgresql":
        quote = _quote(using)
        meta = Delivery._meta
        assignments, params = [], []
        for name, value in fields.items():
            field = meta.get_field(name)
            assignments.append(f"{quote(field.column)} = %s")
            params.append(field.get_db_prep_save(value, connection))
        inner = queryset.select_for_update().values("pk")
        inner_sql, inner_params = inner.query.get_compiler(using).as_sql()
        pk = quote(meta.pk.column)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "
                f"WHERE {pk} IN ({inner_sql}) RETURNING {pk}",
                [*params, *inner_params],
            )
            return {pk for (pk,) in cursor.fetchall()}
    queryset.update(claimed_until=F("claimed_until"))
    ids = set(queryset.values_list("pk", flat=True))
    if ids:
        Delivery.objects.using(using).filter(pk__in=ids).update(**fields)
    return ids


def update_held(using, claimant, ids, fields):
    """Set ``fields`` on those of the deliveries ``ids`` that ``claimant`` still holds
    (claimed by it, and pending); return their ids."""
    if not ids:
        return set()
    held = Delivery.objects.filter(pk__in=list(ids), claimed_by=claimant, status=PENDING)
    return update_rows(using, held, fields)


# Recording
# ---------


def count_attempts(using, ids):
    """Add one to each delivery's ``attempt``; return ``{id: (attempt, claimed_by, status)}``
    as they are after it, for the deliveries that still exist. The rows stay locked until
    the transaction ends, so the claim read here cannot change before it is acted on."""
    if not ids:
        return {}
    connection = connections[using]
    if connection.vendor == "postgresql":
        quote = _quote(using)
        pk, attempt = quote(Delivery._meta.pk.column), quote(_column("attempt"))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(Delivery._meta.db_table)} SET {attempt} = {attempt} + 1 "
                f"WHERE {pk} = ANY(%s) RETURNING {pk}, {attempt}, "
                f"{quote(_column('claimed_by'))}, {quote(_column('status'))}",
                [list(ids)],
            )
            return {pk: tuple(rest) for pk, *rest in cursor.fetchall()}
    rows = Delivery.objects.using(using).filter(pk__in=list(ids))
    # Write first: the UPDATE takes the row locks (and SQLite's write lock) before the read.
    rows.update(attempt=F("attempt") + 1)
    return {pk: (attempt, claimed_by, status) for pk, attempt, claimed_by, status
            in rows.values_list("pk", "attempt", "claimed_by", "status")}


def succeed(using, claimant, ids, fields):
    """PostgreSQL only: count an attempt and finish the deliveries ``ids`` that
    ``claimant`` still holds with ``fields``, in one statement; return ``{id: attempt}``
    for those. Elsewhere returns None, and the caller takes the portable path."""
    connection = connections[using]
    if connection.vendor != "postgresql" or not ids:
        return None
    quote = _quote(using)
    meta = Delivery._meta
    pk, attempt = quote(meta.pk.column), quote(_column("attempt"))
    assignments = [f"{attempt} = {attempt} + 1"]
    params = []
    for name, value in fields.items():
        field = meta.get_field(name)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "
            f"WHERE {pk} = ANY(%s) AND {quote(_column('claimed_by'))} = %s "
            f"AND {quote(_column('status'))} = %s RETURNING {pk}, {attempt}",
            [*params, list(ids), claimant, PENDING],
        )
        return dict(cursor.fetchall())


#: The columns of ``DeliveryAttempt`` that ``insert_attempts`` writes, in order.
ATTEMPT_COLUMNS = ("delivery_id", "attempt", "success", "response_status", "response_message",
                   "response_content_type", "error", "duration", "notification", "created",
                   "replayed_by_id")


#: The attempt's columns of whole numbers and booleans, sent to PostgreSQL as one array
#: literal each (quoting each value on its own costs more than the database's work).
_WHOLE_COLUMNS = frozenset({"delivery_id", "attempt", "success", "response_status",
                            "duration", "replayed_by_id"})


def _array_literal(name, values):
    """PostgreSQL's text form of an array of whole numbers (or booleans)."""
    if name == "success":
        return "{" + ",".join("t" if value else "f" for value in values) + "}"
    return "{" + ",".join("NULL" if value is None else str(int(value))
                          for value in values) + "}"


def _text_array_literal(values):
    """PostgreSQL's text form of an array of strings (none of them NULL, nor holding NUL,
    which text cannot): each element quoted, its backslashes and quotes escaped."""
    return "{" + ",".join(['"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
                           for value in values]) + "}"


def insert_attempts(using, attempts):
    """Insert ``DeliveryAttempt`` instances (unsaved, with every column set) and give
    them their ids where the database returns them.

    A multi-row ``INSERT`` rather than ``bulk_create``: the values are plain strings,
    numbers and booleans, and building and compiling a model instance per row cost more
    than the database's work for it. PostgreSQL gets one array per column, written as
    its text here (psycopg's quoting of each element costs more), and the time the rows
    share as one value, so the statement's text is the same for every batch size.
    """
    if not attempts:
        return
    connection = connections[using]
    meta, quote = DeliveryAttempt._meta, connection.ops.quote_name
    fields = [meta.get_field(column.removesuffix("_id")) for column in ATTEMPT_COLUMNS]
    names = [field.attname for field in fields]
    returning = connection.features.can_return_rows_from_bulk_insert
    insert = (f"INSERT INTO {quote(meta.db_table)} "
              f"({', '.join(quote(field.column) for field in fields)}) ")
    if connection.vendor == "postgresql" and len({a.created for a in attempts}) == 1:
        # The rows of a record share their time: one value, beside an array per column.
        arrays = [field for field in fields if field.attname != "created"]
        casts = ", ".join(f"%s::{field.db_type(connection)}[]" for field in arrays)
        columns = ", ".join("%s::timestamptz" if field.attname == "created" else
                            f"r.{quote(field.attname)}" for field in fields)
        chunks = [attempts]
        statements = [insert + f"SELECT {columns} FROM unnest({casts}) AS r"
                      f"({', '.join(quote(field.attname) for field in arrays)})"]
        values = {field.attname: [getattr(a, field.attname) for a in attempts]
                  for field in arrays}
        literals = [_array_literal(name, column) if name in _WHOLE_COLUMNS else
                    _text_array_literal(column) for name, column in values.items()]
        created = meta.get_field("created").get_db_prep_save(attempts[0].created, connection)
        # The placeholders in the statement's order: the time's among the columns', the
        # arrays' after them.
        params = [[created, *literals]]
    else:
        size = connection.ops.bulk_batch_size(fields, attempts) or len(attempts)
        chunks = [attempts[start:start + size] for start in range(0, len(attempts), size)]
        row = f"({', '.join(['%s'] * len(fields))})"
        statements = [insert + f"VALUES {', '.join([row] * len(chunk))}" for chunk in chunks]
        created = meta.get_field("created")
        params = [[created.get_db_prep_save(getattr(a, name), connection)
                   if name == "created" else getattr(a, name)
                   for a in chunk for name in names] for chunk in chunks]
    with connection.cursor() as cursor:
        for chunk, sql, values in zip(chunks, statements, params, strict=True):
            if returning:
                sql += f" RETURNING {quote(meta.pk.column)}"
            cursor.execute(sql, values)
            if returning:
                # In the order of the rows given, as bulk_create relies on too.
                for attempt, (pk,) in zip(chunk, cursor.fetchall(), strict=True):
                    attempt.pk = pk
                    attempt._state.adding, attempt._state.db = False, using


# Creating deliveries
# -------------------


def insert_deliveries(using, template, owner_pk, identifier):
    """Insert a copy of ``template`` (an unsaved ``Delivery``) for every active target of
    its event, ``owner_pk`` and ``identifier``; return ``[(delivery id, target id, due
    time)]``, the due time being the database's time of the insert.

    One ``INSERT ... SELECT ... RETURNING`` where the database can return inserted rows
    (PostgreSQL, SQLite 3.35+, MariaDB 10.5+), whatever the number of targets; elsewhere
    a query, a bulk insert, and a read of the ids by the unique (message id, target).
    """
    connection = connections[using]
    if not connection.features.can_return_rows_from_bulk_insert:
        return _insert_then_read(using, template, owner_pk, identifier)
    sql, fields = _insert_select_sql(using)
    params = [field.get_db_prep_save(getattr(template, field.attname), connection)
              for field in fields if field.name not in _FROM_DATABASE_CLOCK]
    params += [template.event, owner_pk, identifier, True]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(pk, target_id, _aware(due)) for pk, target_id, due in cursor.fetchall()]


#: The columns of a new delivery set from the database's clock: it is due, and handed to
#: the backend, from the moment it is written.
_FROM_DATABASE_CLOCK = ("next_attempt_at", "queued_at")


@cache
def _insert_select_sql(using):
    """The ``INSERT ... SELECT`` statement and the fields it binds, for ``using``.

    Every concrete column the delivery sets is written, except the target (taken from the
    SELECT) and those left NULL (so no untyped NULL needs a cast). The delivery is due
    from the database's time now.
    """
    connection = connections[using]
    quote = _quote(using)
    meta, target_meta = Delivery._meta, WebhookTarget._meta
    target_fk = meta.get_field("webhook_target")
    moment = datetime.now(timezone.utc)
    example = Delivery(event="", payload_json="{}", hash_value="", next_attempt_at=moment,
                       queued_at=moment, created=moment, modified=moment)
    fields = [
        field for field in meta.concrete_fields
        if field is not meta.pk and field is not target_fk
        and getattr(example, field.attname) is not None
    ]
    columns = ", ".join(quote(field.column) for field in [*fields, target_fk])
    now = _now_sql(connection).replace("%", "%%")
    placeholders = ", ".join(now if field.name in _FROM_DATABASE_CLOCK else "%s"
                             for field in fields)
    table, target_table = quote(meta.db_table), quote(target_meta.db_table)
    target_pk = f"{target_table}.{quote(target_meta.pk.column)}"
    conditions = " AND ".join(
        f"{target_table}.{quote(target_meta.get_field(name).column)} = %s"
        for name in ("event", "owner", "identifier", "is_active")
    )
    sql = (
        f"INSERT INTO {table} ({columns}) SELECT {placeholders}, {target_pk} "
        f"FROM {target_table} WHERE {conditions} "
        f"RETURNING {quote(meta.pk.column)}, {quote(target_fk.column)}, "
        f"{quote(meta.get_field('next_attempt_at').column)}"
    )
    return sql, fields


def _insert_then_read(using, template, owner_pk, identifier):
    target_ids = list(
        WebhookTarget.objects.using(using).filter(
            event=template.event, owner_id=owner_pk, identifier=identifier, is_active=True
        ).values_list("pk", flat=True)
    )
    if not target_ids:
        return []
    rows = []
    for target_id in target_ids:
        row = copy_instance(template)
        row.webhook_target_id = target_id
        row.next_attempt_at = DatabaseNow()  # due from the database's time now
        row.queued_at = DatabaseNow()
        rows.append(row)
    Delivery.objects.using(using).bulk_create(rows)
    return list(
        Delivery.objects.using(using).filter(
            hash_value=template.hash_value, webhook_target_id__in=target_ids
        ).values_list("pk", "webhook_target_id", "next_attempt_at")
    )


# Text from receivers
# -------------------

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_UTF8MB3 = re.compile("[\x00\ud800-\udfff\U00010000-\U0010ffff]")


def text_cleaner(using):
    """Return a function that makes text storable in ``using``'s text columns.

    NUL (which PostgreSQL's text cannot hold) and lone surrogates (not valid Unicode)
    become U+FFFD everywhere; so do characters beyond U+FFFF where the attempts table is
    in MySQL's 3-byte ``utf8``.
    """
    pattern = _UNSTORABLE_UTF8MB3 if astral_unstorable(using) else _UNSTORABLE

    def clean(text):
        return pattern.sub("\ufffd", text) if text else text

    return clean


@cache
def astral_unstorable(using):
    """True where characters beyond U+FFFF cannot be stored: MySQL tables in its 3-byte
    ``utf8``."""
    connection = connections[using]
    if connection.vendor != "mysql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            [DeliveryAttempt._meta.db_table, _column("response_message", DeliveryAttempt)],
        )
        row = cursor.fetchone()
    return row is not None and row[0] != "utf8mb4"
