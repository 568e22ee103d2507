"""Standard Webhooks signatures: secrets, signing and verification.

Pure code: no Django, no models. See https://www.standardwebhooks.com/ for the scheme:
the signed content is ``"{msg_id}.{timestamp}.{body}"``, the MAC is HMAC-SHA256 keyed
with the base64-decoded secret, and the header value is ``"v1,<base64 MAC>"``.
"""

import base64
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
#: Seconds a received timestamp may differ from the receiver's clock.
DEFAULT_TOLERANCE = 5 * 60


def generate_secret():
    """Return a new secret: ``whsec_`` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret):
    """Return the raw HMAC key of a ``whsec_...`` secret (or of a bare base64 secret)."""
    if secret.startswith(SECRET_PREFIX):
        secret = secret[len(SECRET_PREFIX) :]
    return base64.b64decode(secret, validate=True)


def sign(secret, msg_id, timestamp, body):
    """Return the ``webhook-signature`` value (``v1,<base64>``) for one message.

    ``body`` is the exact bytes (or text) sent; ``timestamp`` is Unix seconds.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    content = f"{msg_id}.{int(timestamp)}.".encode() + body
    mac = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def verify(secret, msg_id, timestamp, body, signature_header, *, tolerance=DEFAULT_TOLERANCE,
           now=None):
    """Return True when one of the signatures in ``signature_header`` matches.

    ``signature_header`` may hold several space-separated ``v1,...`` values (sent while a
    secret is being rotated). The timestamp must lie within ``tolerance`` seconds of
    ``now``; the comparison is constant-time.
    """
    try:
        timestamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode("ascii")
    matched = False
    for candidate in (signature_header or "").split():
        # Check every candidate so the time taken does not tell which one matched.
        matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    return matched
