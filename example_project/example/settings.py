"""Settings for the dj-webhooks example project: SQLite, DEBUG on, nothing to configure.

Not for production: the secret key is public and DEBUG is on.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-insecure-dj-webhooks-example-project-only"
DEBUG = True
# The demo serves this project on 127.0.0.1 and posts to it from the same process.
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "djwebhooks",
    "projects",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # EXAMPLE_DB lets tests (and you) use a throwaway database file.
        "NAME": os.environ.get("EXAMPLE_DB") or BASE_DIR / "db.sqlite3",
        "OPTIONS": {
            # The web process and webhooks_worker write to this one file. IMMEDIATE makes
            # each transaction wait its turn for the write lock (up to "timeout" seconds)
            # instead of failing with "database is locked" when two of them meet.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The admin's login page is the only one this project has: the webhook pages
# (/account/webhooks/) send signed-out users there.
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

# Show dj-webhooks' line per delivery attempt in the console (webhooks_worker, the shell).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"djwebhooks": {"handlers": ["console"], "level": "INFO"}},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DJWEBHOOKS = {
    # Every event a hook may send, with the description the admin shows when you pick one
    # for a WebhookTarget.
    "EVENTS": {
        "project.create": "A project was created.",
        "project.update": "A project's title or description was changed.",
    },
    # Deliveries wait in the database (in the same transaction as the change they report),
    # so the request never waits for receivers. The app's own worker sends them and makes
    # the retries; run it beside runserver:
    #     python example_project/manage.py webhooks_worker
    "BACKEND": "djwebhooks.backends.database.DatabaseBackend",
    # Targets must be public addresses, so a user of the site cannot point one at its
    # internals. This project's receivers are on this machine, so loopback is allowed here.
    "ALLOWED_NETWORKS": ["127.0.0.0/8", "::1/128"],
}
