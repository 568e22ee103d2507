"""PostgreSQL: notify the delivery table's channel when deliveries fall due (see
djwebhooks/wakeup.py). Nothing on other databases."""

from django.db import migrations

FUNCTION = "djwebhooks_delivery_due"
TRIGGERS = {"INSERT": "djwebhooks_delivery_due_insert",
            "UPDATE": "djwebhooks_delivery_due_update"}


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    delivery = apps.get_model("djwebhooks", "Delivery")
    quote = schema_editor.quote_name

    def column(name):
        return quote(delivery._meta.get_field(name).column)

    # Once per statement, over the rows it wrote (its transition table): the channel is the
    # table's name, and PostgreSQL sends identical notifications once per transaction.
    schema_editor.execute(f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (
                SELECT 1 FROM written
                WHERE {column("status")} = 'pending'
                AND {column("next_attempt_at")} <= clock_timestamp()
                AND ({column("claimed_until")} IS NULL
                     OR {column("claimed_until")} < clock_timestamp())
            ) THEN
                PERFORM pg_notify(TG_TABLE_NAME, '');
            END IF;
            RETURN NULL;
        END
        $$
    """)
    for event, name in TRIGGERS.items():
        schema_editor.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {quote(delivery._meta.db_table)} "
            f"REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("djwebhooks", "Delivery")._meta.db_table)
    for name in TRIGGERS.values():
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


class Migration(migrations.Migration):

    dependencies = [
        ("djwebhooks", "0004_replayed_by"),
    ]

    operations = [
        migrations.RunPython(create_triggers, drop_triggers, elidable=False),
    ]
