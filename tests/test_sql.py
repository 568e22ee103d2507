"""The hand-written statements of ``djwebhooks._sql``, each run on the database the suite
runs on (CI runs it on SQLite, PostgreSQL and MariaDB, so every vendor's form is run)."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from djwebhooks import _sql, queue
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def target(user):
    return WebhookTarget.objects.create(owner=user, event="project.update",
                                        target_url="https://a.example/")


def deliveries(target, count, **fields):
    fields.setdefault("next_attempt_at", timezone.now() - timedelta(seconds=1))
    return [Delivery.objects.create(webhook_target=target, event="project.update",
                                    hash_value=f"msg_{n}", **fields).pk
            for n in range(count)]


def test_db_now_is_the_database_clock_in_utc():
    now = _sql.db_now("default")
    assert now.utcoffset() == timedelta(0)
    assert abs((now - timezone.now()).total_seconds()) < 5


def test_a_claim_takes_due_free_rows_oldest_first(target):
    ids = deliveries(target, 4)
    Delivery.objects.filter(pk=ids[0]).update(next_attempt_at=timezone.now()
                                              + timedelta(hours=1))
    Delivery.objects.filter(pk=ids[1]).update(claimed_by="other",
                                              claimed_until=timezone.now()
                                              + timedelta(minutes=1))
    Delivery.objects.filter(pk=ids[3]).update(next_attempt_at=timezone.now()
                                              - timedelta(minutes=5))
    assert _sql.claim("default", "me", limit=10, lease=30) == [ids[3], ids[2]]
    claimed = Delivery.objects.get(pk=ids[2])
    assert claimed.claimed_by == "me"
    lease = (claimed.claimed_until - _sql.db_now("default")).total_seconds()
    assert 25 < lease <= 30
    assert _sql.claim("default", "you", limit=10, lease=30) == []  # held now


def test_a_claim_by_ids_and_a_limit(target):
    ids = deliveries(target, 3)
    assert _sql.claim("default", "me", limit=1, lease=30, ids=ids[1:]) == [ids[1]]
    assert _sql.claim("default", "me", limit=5, lease=30, ids=ids[1:]) == [ids[2]]


def test_an_expired_claim_counts_as_free(target):
    [pk] = deliveries(target, 1, claimed_by="dead", claimed_until=timezone.now()
                      - timedelta(seconds=1))
    assert _sql.claim("default", "me", limit=5, lease=30) == [pk]


def test_renew_returns_what_is_still_held(target):
    ids = deliveries(target, 3, claimed_by="me",
                     claimed_until=timezone.now() + timedelta(seconds=2))
    Delivery.objects.filter(pk=ids[1]).update(claimed_by="thief")
    Delivery.objects.filter(pk=ids[2]).update(status="succeeded")
    assert _sql.renew("default", "me", ids, 60) == {ids[0]}
    lease = (Delivery.objects.get(pk=ids[0]).claimed_until - _sql.db_now("default"))
    assert 55 < lease.total_seconds() <= 60
    assert _sql.renew("default", "me", [], 60) == set()


def _values(instance):
    return {field.attname: getattr(instance, field.attname)
            for field in instance._meta.concrete_fields}


def test_load_gives_what_select_related_gives_for_the_rows_held(
        target, user, django_assert_num_queries):
    other = WebhookTarget.objects.create(owner=user, event="project.update",
                                         target_url="https://b.example/",
                                         previous_secret="whsec_old",
                                         previous_secret_expires=timezone.now(),
                                         headers={"X-Api-Key": "k", "Authorization": "B t"},
                                         timeout=2.5, retry_schedule=[5, 60.5])
    ids = deliveries(target, 2) + deliveries(other, 1, queued_at=timezone.now())
    assert sorted(_sql.claim("default", "me", limit=10, lease=30)) == sorted(ids)
    not_held = Delivery.objects.create(webhook_target=target, event="project.update",
                                       hash_value="msg_free").pk  # claimed by no one
    Delivery.objects.filter(pk=ids[1]).update(status="failed")  # held, but finished
    with django_assert_num_queries(1):
        loaded = _sql.load("default", "me", [*ids, not_held])
        by_pk = {delivery.pk: delivery for delivery in loaded}
        assert set(by_pk) == {ids[0], ids[2]}
        for delivery in loaded:  # targets and owners come with them
            assert delivery.webhook_target.owner.pk == user.pk
    expected = Delivery.objects.select_related("webhook_target__owner").filter(
        pk__in=by_pk)
    for orm in expected:
        delivery = by_pk[orm.pk]
        assert _values(delivery) == _values(orm)
        assert _values(delivery.webhook_target) == _values(orm.webhook_target)
        if delivery.webhook_target.pk == other.pk:  # its options, read as they were saved
            assert (delivery.webhook_target.headers, delivery.webhook_target.retry_schedule) \
                == ({"X-Api-Key": "k", "Authorization": "B t"}, [5, 60.5])
        assert _values(delivery.webhook_target.owner) == _values(orm.webhook_target.owner)
        assert delivery.created.tzinfo == orm.created.tzinfo
        assert delivery._state.db == "default" and not delivery._state.adding
        assert delivery.webhook_target._saved_is_active is True
    assert _sql.load("default", "me", []) == []


def test_load_makes_a_shared_target_once_on_postgresql(target):
    if connection.vendor != "postgresql":
        pytest.skip("The ORM's select_related (SQLite, MariaDB) makes a target per row")
    ids = deliveries(target, 3)
    _sql.claim("default", "me", limit=10, lease=30)
    loaded = _sql.load("default", "me", ids)
    assert len({id(delivery.webhook_target) for delivery in loaded}) == 1
    assert len({id(delivery.webhook_target.owner) for delivery in loaded}) == 1


def test_a_model_with_a_post_init_receiver_is_loaded_through_it(target, user):
    from django.db.models.signals import post_init

    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.pk)

    ids = deliveries(target, 2)
    _sql.claim("default", "me", limit=10, lease=30)
    post_init.connect(receiver, sender=Delivery)
    try:
        loaded = _sql.load("default", "me", ids)
    finally:
        post_init.disconnect(receiver, sender=Delivery)
    assert sorted(seen) == sorted(ids) == sorted(delivery.pk for delivery in loaded)
    # Without a receiver the instances are made directly, and are the same.
    again = {delivery.pk: delivery for delivery in _sql.load("default", "me", ids)}
    for delivery in loaded:
        assert _values(again[delivery.pk]) == _values(delivery)
        assert again[delivery.pk].webhook_target._saved_is_active is True


def test_the_parts_of_one_claim_share_their_targets_on_postgresql(target):
    if connection.vendor != "postgresql":
        pytest.skip("The ORM's select_related (SQLite, MariaDB) makes a target per row")
    ids = deliveries(target, 4)
    _sql.claim("default", "me", limit=10, lease=30)
    known = {}
    first = _sql.load("default", "me", ids[:2], known=known)
    second = _sql.load("default", "me", ids[2:], known=known)
    assert len({id(delivery.webhook_target) for delivery in first + second}) == 1
    apart = _sql.load("default", "me", ids[2:])
    assert apart[0].webhook_target is not first[0].webhook_target


def test_a_field_that_converts_what_the_database_gives_is_converted():
    row = _sql._convert((1, "7"), [(1, [lambda value, expression, connection: int(value)],
                                    None)], connection)
    assert row == [1, 7]


def test_count_attempts_numbers_and_reads_the_claims(target):
    ids = deliveries(target, 2, claimed_by="me")
    Delivery.objects.filter(pk=ids[1]).update(attempt=4, claimed_by="other")
    with transaction.atomic():
        assert _sql.count_attempts("default", [*ids, 999999]) == {
            ids[0]: (1, "me", "pending"), ids[1]: (5, "other", "pending")}


def test_succeed_is_fenced_and_postgresql_only(target):
    ids = deliveries(target, 2, claimed_by="me")
    Delivery.objects.filter(pk=ids[1]).update(claimed_by="other")
    fields = {"status": "succeeded", "claimed_by": "", "response_status": 200}
    done = _sql.succeed("default", "me", ids, fields)
    if connection.vendor != "postgresql":
        assert done is None
        return
    assert done == {ids[0]: 1}
    assert list(Delivery.objects.order_by("pk").values_list("status", "attempt")) == [
        ("succeeded", 1), ("pending", 0)]


def test_update_held_changes_only_what_the_claimant_holds(target):
    ids = deliveries(target, 3, claimed_by="me")
    Delivery.objects.filter(pk=ids[1]).update(claimed_by="other")
    Delivery.objects.filter(pk=ids[2]).update(status="failed")
    with transaction.atomic():
        moved = _sql.update_held("default", "me", ids, {"status": "cancelled",
                                                        "claimed_by": ""})
    assert moved == {ids[0]}
    assert list(Delivery.objects.order_by("pk").values_list("status", flat=True)) == [
        "cancelled", "pending", "failed"]


@pytest.mark.parametrize("one_time", [True, False])
def test_insert_attempts_writes_every_column(target, one_time):
    [pk] = deliveries(target, 1)
    now = _sql.db_now("default")
    texts = ["l'été \"1\" \\ NULL", '{a,b} "} \\\\" ,\\', "NULL", "", " x ", "日本 🐍"]
    rows = [DeliveryAttempt(delivery_id=pk, attempt=n, success=n == 2, response_status=None
                            if n == 1 else 200, response_message=text,
                            response_content_type=text[:3], error="e" if n == 1 else text,
                            duration=n, notification=f"n{n}{text}",
                            created=now if one_time else now + timedelta(seconds=n))
            for n, text in enumerate(texts, start=1)]
    _sql.insert_attempts("default", rows)
    saved = list(DeliveryAttempt.objects.order_by("attempt"))
    for row, stored in zip(rows, saved, strict=True):
        for field in DeliveryAttempt._meta.concrete_fields:
            if field.primary_key and not connection.features.can_return_rows_from_bulk_insert:
                continue
            assert getattr(row, field.attname) == getattr(stored, field.attname), field.name


@pytest.mark.parametrize("returning", [True, False])
def test_insert_deliveries_for_every_active_target(user, monkeypatch, returning):
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert",
                        returning)
    targets = [WebhookTarget.objects.create(owner=user, event="project.update",
                                            target_url=f"https://{n}.example/")
               for n in range(3)]
    WebhookTarget.objects.filter(pk=targets[1].pk).update(is_active=False)
    template = Delivery(event="project.update", payload_json='{"a":1}', hash_value="msg_x",
                        created=timezone.now(), modified=timezone.now(),
                        next_attempt_at=timezone.now())
    rows = sorted(_sql.insert_deliveries("default", template, user.pk, ""),
                  key=lambda row: row[1])
    assert [target for _, target, _ in rows] == [targets[0].pk, targets[2].pk]
    for pk, _, due in rows:
        saved = Delivery.objects.get(pk=pk)
        assert saved.next_attempt_at == due
        assert saved.payload_json == '{"a":1}'
    # Due from the database's clock: a claim made right after finds them.
    assert sorted(_sql.claim("default", "me", limit=5, lease=30)) == sorted(
        pk for pk, _, _ in rows)


def test_text_is_made_storable():
    clean = _sql.text_cleaner("default")
    assert clean("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert clean("") == ""
    expected = "\ufffd" if _sql.astral_unstorable("default") else "😀"
    assert clean("😀") == expected


@pytest.mark.skipif(connection.vendor != "mysql",
                    reason="MySQL and MariaDB make the partial claim index whole; run with "
                    "DATABASE_URL=mysql://... to see that claims still use it")
def test_mysql_claims_read_the_claim_index_not_the_table(target):
    # Only pending deliveries have a next_attempt_at: the whole index MySQL makes holds
    # the finished ones as NULLs, which the claim's range skips.
    deliveries(target, 2000)
    finished = list(Delivery.objects.order_by("pk").values_list("pk", flat=True)[:1980])
    Delivery.objects.filter(pk__in=finished).update(status="succeeded", next_attempt_at=None)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE TABLE {Delivery._meta.db_table}")
        cursor.fetchall()
    rows = Delivery.objects.due().order_by("next_attempt_at", "pk")
    sql, params = rows.values("pk").query.sql_with_params()
    # MariaDB's ANALYZE runs the query and says how many rows it read (r_rows).
    verb = "ANALYZE" if connection.mysql_is_mariadb else "EXPLAIN"
    with connection.cursor() as cursor:
        cursor.execute(f"{verb} {sql} LIMIT 10", params)
        columns = [column[0] for column in cursor.description]
        [plan] = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    assert (plan["key"], plan["type"]) == ("djwebhooks_delivery_due", "range"), plan
    if connection.mysql_is_mariadb:
        assert float(plan["r_rows"]) <= 20, plan  # the pending rows, not the 2,000


def overdue_plan(sql, params):
    """The database's account of running the sweep's query: PostgreSQL's plan as JSON, or
    MariaDB's ANALYZE rows."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
            return cursor.fetchone()[0][0]["Plan"]
        cursor.execute(f"ANALYZE {sql}", params)
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


@pytest.mark.skipif(connection.vendor not in ("postgresql", "mysql"),
                    reason="reads the query plan with EXPLAIN ANALYZE (PostgreSQL) or ANALYZE "
                    "(MariaDB); run with DATABASE_URL=postgres://... or mysql://...")
def test_the_sweep_reads_the_pending_index_not_the_table(target):
    """A table of finished deliveries with a few pending: the sweep's query reads the
    pending rows through their partial index, whatever the size of the table."""
    if connection.vendor == "mysql" and not connection.mysql_is_mariadb:
        pytest.skip("MySQL's EXPLAIN does not run the query; MariaDB's ANALYZE does")
    Delivery.objects.bulk_create(
        Delivery(webhook_target=target, event="project.update", hash_value=f"done_{n}",
                 status="succeeded", next_attempt_at=None) for n in range(5000))
    deliveries(target, 20, queued_at=None)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {'TABLE ' if connection.vendor == 'mysql' else ''}"
                       f"{Delivery._meta.db_table}")
        if connection.vendor == "mysql":
            cursor.fetchall()
    assert len(queue.overdue(limit=1000, requeue_after=300)) == 20
    rows = queue.overdue_deliveries(300).values("pk")[:1000]
    sql, params = rows.query.sql_with_params()
    plan = overdue_plan(sql, params)
    table = Delivery._meta.db_table
    if connection.vendor == "postgresql":
        # Those that ran: with no ordered target, the checks of an ordered target's line
        # (subplans on the line index) never do.
        scans = [node for node in plan_nodes(plan) if "Scan" in node["Node Type"]
                 and node.get("Relation Name") == table and node.get("Actual Loops")]
        assert [node.get("Index Name") for node in scans] == ["djwebhooks_delivery_due"], plan
        assert sum(node["Actual Rows"] for node in scans) <= 20, plan
    else:
        [row] = [row for row in plan if row["table"] == table
                 and row["select_type"] in ("SIMPLE", "PRIMARY")]
        assert row["key"] == "djwebhooks_delivery_due", row
        assert float(row["r_rows"]) <= 20, row
