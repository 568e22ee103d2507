"""Backends decide when and where deliveries are sent; ``get_backend()`` returns the one
configured in ``DJWEBHOOKS["BACKEND"]``."""

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from djwebhooks import conf
from djwebhooks.exceptions import WebhookImproperlyConfigured

_backend = None


def load_backend(path):
    """Import and instantiate the backend class at dotted ``path``."""
    if not isinstance(path, str):
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] must be a dotted import path string, got {path!r}."
        )
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] is {path!r}, which could not be imported: {exc}. "
            "Use a dotted path such as 'djwebhooks.backends.inline.InlineBackend'."
        ) from exc
    try:
        backend = backend_class()
    except TypeError as exc:
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] is {path!r}, which is not a backend class that can be "
            f"created without arguments: {exc}."
        ) from exc
    if not callable(getattr(backend, "enqueue", None)):
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] is {path!r}, which has no enqueue() method. Subclass "
            "djwebhooks.backends.base.BaseBackend."
        )
    return backend


def get_backend():
    """Return the configured backend, created once and reset when settings change."""
    global _backend
    if _backend is None:
        _backend = load_backend(conf.get_setting("BACKEND"))
    return _backend


@receiver(setting_changed)
def _reset_backend(*, setting, **kwargs):
    global _backend
    if setting == "DJWEBHOOKS":
        _backend = None
