"""``DjangoSenderable``: the ``Senderable`` for one ``Delivery`` row, with the settings.

It reads the delivery and its target as loaded, and never touches the database: recording
the attempt belongs to the sending path (``djwebhooks.sending``).
"""

from django.core.serializers.json import DjangoJSONEncoder

from djwebhooks import conf
from djwebhooks.options import bounded_timeout
from djwebhooks.senders.base import Senderable

_MISSING = object()


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
    """A ``Senderable`` built from a ``Delivery``: its target's URL and secrets, its message
    id, its payload's JSON text as stored, and the options from ``DJWEBHOOKS``."""

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

    def __init__(self, delivery, *, options=None, **kwargs):
        target = delivery.webhook_target
        self.delivery = delivery
        self.webhook_target = target
        options = dict(options if options is not None else self.settings_options())
        owner_field = options.pop("owner_field", _MISSING)  # read from settings if absent
        options.update(
            url=target.target_url,
            payload_json=delivery.payload_json,
            event=delivery.event,
            message_id=delivery.hash_value,
            secret=target.signing_secrets(),
            timestamp=delivery.created,
            content_type=target.header_content_type,
            extra=envelope_extra(target, owner_field),
            headers=target.headers,
        )
        if target.timeout is not None:
            # Its own timeout, within the sender's: the deadline and each socket wait.
            seconds = bounded_timeout(target.timeout, options["total_timeout"])
            options["total_timeout"] = seconds
            connect, read = options["timeout"]
            options["timeout"] = (min(connect, seconds), min(read, seconds))
        options.update(kwargs)
        super().__init__(**options)
