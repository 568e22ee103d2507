"""The Celery app of the test project: configured from Django's settings (``CELERY_*``),
its tasks found by ``autodiscover_tasks()``, as a site's own ``celery.py`` would be."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_worker")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
