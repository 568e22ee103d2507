"""Celery tasks, where ``app.autodiscover_tasks()`` looks for them.

``djwebhooks.send`` sends deliveries (see ``djwebhooks.backends.celery``);
``djwebhooks.sweep`` runs the recovery sweep, every minute with
``djwebhooks.backends.celery.BEAT_SCHEDULE``. Needs ``pip install "dj-webhooks[celery]"``.
"""

from celery import shared_task

from djwebhooks.backends.celery import SWEEP_TASK, send
from djwebhooks.sweep import sweep as _sweep

__all__ = ["send", "sweep"]


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep():
    """Hand the backend again every due delivery that no queue holds (``webhooks_sweep``);
    return how many were handed over."""
    return _sweep().handed
