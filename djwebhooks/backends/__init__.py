"""Backends decide when and where deliveries are sent; ``get_backend()`` returns the one
configured in ``DJWEBHOOKS["BACKEND"]``."""

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from djwebhooks import conf
from djwebhooks.exceptions import WebhookImproperlyConfigured

_backend = None


def load_backend(path, options=None):
    """Import the backend class at dotted ``path`` and create it with ``options`` (a dict
    of keyword arguments, ``BACKEND_OPTIONS``)."""
    if not isinstance(path, str):
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] must be a dotted import path string, got {path!r}."
        )
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise WebhookImproperlyConfigured(
            "DJWEBHOOKS['BACKEND_OPTIONS'] must be a dict of keyword arguments for the "
            f"backend, got {options!r}."
        )
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] is {path!r}, which could not be imported: {exc}. "
            "Use a dotted path such as 'djwebhooks.backends.inline.InlineBackend'"
            + (_extra_hint(path) or ".")
        ) from exc
    try:
        backend = backend_class(**options)
    except TypeError as exc:
        given = f" with BACKEND_OPTIONS {options!r}" if options else " without arguments"
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] is {path!r}, which could not be created{given}: {exc}."
        ) from exc
    if not callable(getattr(backend, "enqueue", None)):
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['BACKEND'] is {path!r}, which has no enqueue() method. Subclass "
            "djwebhooks.backends.base.BaseBackend."
        )
    return backend


#: The extra that installs what each bundled queue backend needs.
EXTRAS = {
    "djwebhooks.backends.celery.": "celery",
    "djwebhooks.backends.tasks.": "tasks",
    "djwebhooks.backends.rq.": "rq",
}


def _extra_hint(path):
    for prefix, extra in EXTRAS.items():
        if path.startswith(prefix):
            return f"; this backend needs pip install \"dj-webhooks[{extra}]\"."
    return None


def get_backend():
    """Return the configured backend, created once and reset when settings change."""
    global _backend
    if _backend is None:
        _backend = load_backend(conf.get_setting("BACKEND"),
                                conf.get_setting("BACKEND_OPTIONS"))
    return _backend


def run_queued(delivery_ids, *, name, logger):
    """What a queue's send task does: run ``delivery_ids`` through the configured backend's
    ``run()``, so that its retries go back through it. An argument that is not a list of
    delivery ids (a message no dj-webhooks producer wrote) is logged on ``logger`` and
    dropped, never raised: a queue would only run it again.

    Database connections that are broken or older than ``CONN_MAX_AGE`` are closed before
    and after, as around a request: a worker that keeps its connections between tasks
    (Celery with ``CELERY_DB_REUSE_MAX``) then reuses them only as long as Django would."""
    if not isinstance(delivery_ids, list) or not all(
            isinstance(pk, int) and not isinstance(pk, bool) for pk in delivery_ids):
        logger.error("Ignoring %s whose argument is not a list of delivery ids: %r", name,
                     delivery_ids)
        return
    from djwebhooks import queue  # not at import: the queues' modules load before setup

    queue.close_old_connections()
    try:
        get_backend().run(delivery_ids)
    finally:
        queue.close_old_connections()


@receiver(setting_changed)
def _reset_backend(*, setting, **kwargs):
    global _backend
    if setting == "DJWEBHOOKS":
        _backend = None
