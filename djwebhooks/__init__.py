"""Send signed, recorded, replayable webhooks from Django."""

__version__ = "0.3.0"

__all__ = ["__version__", "hook", "replay", "send_event", "skip", "webhook"]


def __getattr__(name):
    # Lazy, so that ``import djwebhooks`` (and ``from djwebhooks import hook`` in a
    # models module) never imports our models before the app registry is ready.
    if name in ("hook", "webhook"):
        from djwebhooks import decorators

        return getattr(decorators, name)
    if name in ("send_event", "replay", "skip"):
        from djwebhooks import events

        return getattr(events, name)
    raise AttributeError(f"module 'djwebhooks' has no attribute {name!r}")
