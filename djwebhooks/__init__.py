"""Send signed, recorded, replayable webhooks from Django."""

__version__ = "0.3.0"

__all__ = ["__version__", "hook", "webhook", "send_event"]


def __getattr__(name):
    # Lazy, so that ``import djwebhooks`` (and ``from djwebhooks import hook`` in a
    # models module) never imports our models before the app registry is ready.
    if name in ("hook", "webhook"):
        from djwebhooks import decorators

        return getattr(decorators, name)
    if name == "send_event":
        from djwebhooks.senders.orm import send_event

        return send_event
    raise AttributeError(f"module 'djwebhooks' has no attribute {name!r}")
