"""pytest fixtures for projects that send webhooks; pytest loads this module by itself
(an entry point), so there is nothing to configure.

- every test starts with an empty ``djwebhooks.testing.outbox`` and no scripted answers;
- ``webhook_outbox``: send to the outbox during the test; the fixture is the outbox list;
- ``webhook_target``: a factory of ``WebhookTarget`` rows, with sensible defaults.
"""

import sys

import pytest


@pytest.fixture(autouse=True)
def _djwebhooks_reset_outbox():
    # Only once the testing module is in use: the plugin must not import Django itself.
    testing = sys.modules.get("djwebhooks.testing")
    if testing is not None:
        testing.reset()
    yield


@pytest.fixture
def webhook_outbox():
    """Send every webhook to the outbox during the test, and return the outbox."""
    from djwebhooks import testing

    testing.reset()
    with testing.override_webhooks() as outbox:
        yield outbox
    testing.reset()


@pytest.fixture
def webhook_target(db, django_user_model):
    """Return a function that creates a ``WebhookTarget``; every field may be given.

    Defaults: a user ``webhook-owner`` as owner, the first declared event, no identifier,
    and ``https://receiver.example/webhooks/`` as URL.
    """
    from djwebhooks import conf
    from djwebhooks.models import WebhookTarget

    def make(**fields):
        if "owner" not in fields:
            fields["owner"], _ = django_user_model._default_manager.get_or_create(
                **{django_user_model.USERNAME_FIELD: "webhook-owner"}
            )
        if "event" not in fields:
            events = list(conf.get_events())
            if not events:
                raise LookupError("No event is declared in DJWEBHOOKS['EVENTS']; "
                                  "pass event= to webhook_target().")
            fields["event"] = events[0]
        fields.setdefault("target_url", "https://receiver.example/webhooks/")
        return WebhookTarget.objects.create(**fields)

    return make
