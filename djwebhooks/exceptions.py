"""Exceptions raised by dj-webhooks.

::

    WebhookError
     ├── WebhookImproperlyConfigured   (also django.core.exceptions.ImproperlyConfigured)
     ├── SenderNotCallable             (also TypeError)
     ├── UnknownEventError             (also ValueError)
     ├── OwnerError                    (also TypeError)
     ├── PayloadError                  (also TypeError)
     ├── DuplicateMessageError         (also ValueError) a message id already sent
     ├── SignatureVerificationError    (also django.core.exceptions.SuspiciousOperation)
     │    └── ReplayedWebhookError     a webhook-id received before (not raised by dj-webhooks)
     ├── CancelDelivery                raised by a delivery_sending receiver to cancel
     └── DeliveryError                 a request that did not produce a response
          ├── DeliveryTimeout          retried, after a longer wait
          ├── DeliveryConnectionError  retried
          ├── DeliveryInvalidURL       not retried
          └── DeliveryRefused          not retried: the URL or its address is not allowed

Errors in how the app is configured or called are raised in the caller's stack.
A receiver's failure never is: it is recorded as a ``DeliveryAttempt``.
"""

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation


class WebhookError(Exception):
    """Base class of every exception raised by dj-webhooks."""


class WebhookImproperlyConfigured(WebhookError, ImproperlyConfigured):
    """A ``DJWEBHOOKS`` setting is missing or wrong; the message names the key."""


class SenderNotCallable(WebhookError, TypeError):
    """``base_hook`` was given a ``sender_callable`` that cannot be called."""

    def __init__(self, sender_callable):
        super().__init__(
            f"sender_callable must be callable, got {sender_callable!r} "
            f"({type(sender_callable).__name__})."
        )
        self.sender_callable = sender_callable


class UnknownEventError(WebhookError, ValueError):
    """An event name that is not declared in ``DJWEBHOOKS["EVENTS"]``."""

    def __init__(self, event, declared):
        shown = ", ".join(sorted(declared)[:20]) or "none"
        super().__init__(
            f"Event {event!r} is not declared. Add it to DJWEBHOOKS['EVENTS'] in your "
            f"settings (declared events: {shown})."
        )
        self.event = event


class OwnerError(WebhookError, TypeError):
    """A webhook was sent without a usable ``owner``."""


class PayloadError(WebhookError, TypeError):
    """The payload is not a dict, or holds a value that JSON cannot represent."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class DuplicateMessageError(WebhookError, ValueError):
    """``send_event(..., message_id=...)`` was given an id already sent to a target."""

    def __init__(self, message_id):
        super().__init__(
            f"The message id {message_id!r} was already sent to one of these targets; "
            "nothing was written. Each message id goes to a target once: use a new id for a "
            "new message, or replay the existing delivery to send it again."
        )
        self.message_id = message_id


class SignatureVerificationError(WebhookError, SuspiciousOperation):
    """A received webhook did not verify; the message says which check failed."""


class ReplayedWebhookError(SignatureVerificationError):
    """A verified webhook whose ``webhook-id`` was already received at this URL.

    dj-webhooks does not raise it: with replay protection, ``webhook_receiver`` answers
    such a request itself (200 once the id was accepted, 409 while it is being processed).
    It is there for code of your own that refuses a repeated id, and for ``except`` clauses
    that name it.
    """


class DeliveryError(WebhookError):
    """The HTTP request for a delivery did not produce a response.

    The message is a sentence in plain words ("Connection refused by example.com:443");
    ``details`` keeps what the HTTP library said, for the attempt's stored error.
    """

    #: A few words for the attempt's ``notification``; the message says what happened.
    summary = "Request failed"
    #: Whether trying again later may help.
    retryable = True
    #: Whether the receiver seems overloaded, so the next wait should be longer.
    slow = False

    def __init__(self, message="", details=""):
        super().__init__(message)
        #: The HTTP library's own account of the failure ("" when the message is all).
        self.details = details

    def describe(self):
        """The text stored as the attempt's error: the sentence, then any details."""
        return f"{self}\n\nDetails: {self.details}" if self.details else str(self)

    @staticmethod
    def sentence(stored):
        """The plain sentence of an attempt's stored error text, without its details."""
        return stored.split("\n\nDetails: ", 1)[0]

    def __reduce__(self):
        return type(self), (*self.args[:1], self.details)


class DeliveryTimeout(DeliveryError):
    """Connecting to, or reading from, the receiver took longer than allowed."""

    summary = "Timed out"
    slow = True


class DeliveryConnectionError(DeliveryError):
    """The connection to the receiver failed (DNS, refused, reset, TLS...)."""

    summary = "Connection failed"


class DeliveryInvalidURL(DeliveryError):
    """The target URL cannot be requested at all (no scheme, unsupported scheme, bad host)."""

    summary = "Invalid URL"
    retryable = False


class DeliveryRefused(DeliveryError):
    """The target URL, or an address it resolves to, is not allowed (see ``ssrf``)."""

    summary = "Refused"
    retryable = False


class CancelDelivery(WebhookError):
    """Raise from a ``delivery_sending`` receiver to cancel that delivery; give the reason."""
