"""Settings for the test suite: SQLite by default, any database through DATABASE_URL."""

import os
from importlib.util import find_spec
from urllib.parse import unquote, urlparse

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # The pages' stylesheet, served to the browser tests' live server too.
    "django.contrib.staticfiles",
    # The queues the Tasks and RQ backends send through (tests/test_tasks_backend.py and
    # tests/test_rq_backend.py); on Django 5.2, Tasks come from the django-tasks backport.
    *([] if find_spec("django.tasks") else ["django_tasks"]),
    "django_tasks_db",
    "django_rq",
    "djwebhooks",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "/static/"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def database_from_url(url):
    """Turn ``postgres://user@host:port/name`` (or mysql://, sqlite:///) into a DATABASES entry."""
    parsed = urlparse(url)
    engines = {
        "postgres": "django.db.backends.postgresql",
        "postgresql": "django.db.backends.postgresql",
        "mysql": "django.db.backends.mysql",
        "sqlite": "django.db.backends.sqlite3",
    }
    if parsed.scheme not in engines:
        raise ValueError(f"DATABASE_URL scheme {parsed.scheme!r} is not one of {sorted(engines)}")
    if parsed.scheme == "sqlite":
        return {"ENGINE": engines["sqlite"], "NAME": parsed.path[1:] or ":memory:"}
    return {
        "ENGINE": engines[parsed.scheme],
        "NAME": unquote(parsed.path[1:]),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
    }


DATABASES = {
    "default": database_from_url(os.environ["DATABASE_URL"])
    if os.environ.get("DATABASE_URL")
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
}

DJWEBHOOKS = {
    "EVENTS": {
        "project.update": "A project was changed.",
        "project.delete": "A project was deleted.",
        "invoice.paid": "",
    },
    "CONNECT_TIMEOUT": 2,
    "READ_TIMEOUT": 2,
    # The test receivers run on this machine; real targets must be public.
    "ALLOWED_NETWORKS": ["127.0.0.0/8", "::1/128"],
    # DJWEBHOOKS_TEST_SEND_MODE=async runs the suite with every request made on the event
    # loop (CI runs the sending tests both ways).
    "SEND_MODE": os.environ.get("DJWEBHOOKS_TEST_SEND_MODE", "threads"),
}

SILENCED_SYSTEM_CHECKS = ["djwebhooks.W001"]

# Celery (tests/celery_app.py reads CELERY_* settings): the broker the Celery tests point
# the app at, per test; results are not kept.
CELERY_BROKER_URL = os.environ.get("DJWEBHOOKS_TEST_CELERY_BROKER", "redis://127.0.0.1:6379/9")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Django's Tasks framework, on the test database (django-tasks-db's table); the backend
# dj-webhooks uses stays the inline one unless a test chooses another.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

#: A Redis database of the tests' own: tests/test_rq_backend.py empties it.
REDIS_URL = os.environ.get("DJWEBHOOKS_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
RQ_QUEUES = {"default": {"URL": REDIS_URL}}
