"""Verify a webhook from dj-webhooks in any Python program, with the Standard Webhooks
reference package (pip install standardwebhooks)."""

from standardwebhooks import Webhook


def verify_webhook(secret, headers, raw_body):
    """Return the envelope; raise ``standardwebhooks.WebhookVerificationError`` if forged.

    ``headers`` is a dict of the request's headers, ``raw_body`` the body exactly as
    received (bytes). For targets set to the form content type, ``raw_body`` is the form
    body and the envelope is the JSON in its ``payload`` field: verify the signature with
    ``Webhook(secret).verify`` on a JSON target, or with ``djwebhooks.signing.verify``.
    """
    return Webhook(secret).verify(raw_body, headers)
