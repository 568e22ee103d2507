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
    # Other senders may hand out their secrets without base64's "=" padding.
    key = base64.b64decode(secret + "=" * (-len(secret) % 4), validate=True)
    if not key:
        # An empty HMAC key signs nothing: anyone could make the same signature.
        raise ValueError("A webhook secret must not be empty.")
    return key


def sign(secret, msg_id, timestamp, body):
    """Return the ``webhook-signature`` value (``v1,<base64>``) for one message.

    ``body`` is the exact bytes (or text) sent; ``timestamp`` is Unix seconds.
    """
    mac = _mac(secret, msg_id, int(timestamp), body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def parse_timestamp(value):
    """Return a ``webhook-timestamp`` value as an int, or None unless it is whole seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # Only ASCII digits: int() would also take "+1", " 1", "1_0" and non-ASCII digits. A
    # length cap too: Unix seconds have 10 digits for centuries yet, and int() of a huge
    # string is slow (or refused).
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    return None


def parse_signatures(signature_header):
    """Return the MACs (bytes) of the ``v1`` signatures in a ``webhook-signature`` value.

    Entries of other versions, and malformed ones (no comma, not base64, not the 32 bytes
    of an HMAC-SHA256), are skipped: a receiver must ignore signatures it does not
    understand rather than fail.
    """
    if not isinstance(signature_header, str):
        return []
    macs = []
    for entry in signature_header.split():
        version, comma, encoded = entry.partition(",")
        if not comma or version != SIGNATURE_VERSION:
            continue
        try:
            mac = base64.b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII character
            continue
        if len(mac) == hashlib.sha256().digest_size:
            macs.append(mac)
    return macs


def signature_matches(secret, msg_id, timestamp, body, signature_header):
    """Return True when a ``v1`` signature in the header is the one ``secret`` makes.

    Checks the MAC only, not how old the timestamp is; see :func:`verify`.
    """
    timestamp = parse_timestamp(timestamp)
    if timestamp is None:
        return False
    expected = _mac(secret, msg_id, timestamp, body)
    matched = False
    for candidate in parse_signatures(signature_header):
        # Check every candidate so the time taken does not tell which one matched.
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def verify(secret, msg_id, timestamp, body, signature_header, *, tolerance=DEFAULT_TOLERANCE,
           now=None):
    """Return True when one of the signatures in ``signature_header`` matches.

    ``signature_header`` may hold several space-separated ``v1,...`` values (sent while a
    secret is being rotated); other versions and malformed entries are ignored. The
    timestamp must be whole seconds within ``tolerance`` seconds of ``now``; the
    comparison is constant-time.
    """
    timestamp = parse_timestamp(timestamp)
    if timestamp is None:
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    return signature_matches(secret, msg_id, timestamp, body, signature_header)


def _mac(secret, msg_id, timestamp, body):
    """The HMAC-SHA256 of ``"{msg_id}.{timestamp}.{body}"``, keyed with the secret."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    content = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(secret_key(secret), content, hashlib.sha256).digest()
