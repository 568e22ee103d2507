"""Settings for worker subprocesses started by tests: the test settings, the database
backend, ``DJWEBHOOKS`` overrides from ``DJWEBHOOKS_OVERRIDES`` (JSON), django-rq's
``RQ_QUEUES`` from ``DJWEBHOOKS_TEST_RQ_QUEUES`` (JSON) when given, and logs on stderr."""

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DJWEBHOOKS as BASE_DJWEBHOOKS

DJWEBHOOKS = {
    **BASE_DJWEBHOOKS,
    "BACKEND": "djwebhooks.backends.database.DatabaseBackend",
    **json.loads(os.environ.get("DJWEBHOOKS_OVERRIDES") or "{}"),
}

if os.environ.get("DJWEBHOOKS_TEST_RQ_QUEUES"):
    RQ_QUEUES = json.loads(os.environ["DJWEBHOOKS_TEST_RQ_QUEUES"])

# Tests read the worker's own account of what happened (lost database, retries) from stderr.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        },
    },
    "loggers": {
        "djwebhooks": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}

# A Celery worker's broker and transport options, from the test that starts it.
CELERY_BROKER_TRANSPORT_OPTIONS = json.loads(
    os.environ.get("DJWEBHOOKS_TEST_CELERY_TRANSPORT") or "{}")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
LOGGING["loggers"]["celery"] = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
