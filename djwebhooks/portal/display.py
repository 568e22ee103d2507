"""How a delivery is shown to its owner: the request's headers (never a secret), the
payload pretty-printed."""

import json
import time

from djwebhooks.senders.orm import DjangoSenderable

#: Shown instead of the signatures, which are made at each attempt with the target's secret.
SIGNATURE_SHOWN = "v1,… (made at each attempt with the target's signing secret)"


def request_headers(delivery):
    """The headers each request for ``delivery`` carries, as a list of ``(name, value)``:
    ``webhook-timestamp`` is the time of each attempt, and the signatures are not shown."""
    sender = DjangoSenderable(delivery)
    headers = sender.get_headers(sender.get_body(), int(time.time()))
    headers["webhook-timestamp"] = "(the time of each attempt, in seconds since 1970)"
    headers["webhook-signature"] = SIGNATURE_SHOWN
    return list(headers.items())


def pretty_payload(delivery):
    """The delivery's data as indented JSON, its keys in the order they were sent."""
    try:
        return json.dumps(json.loads(delivery.payload_json), indent=2, ensure_ascii=False)
    except ValueError:
        return delivery.payload_json
