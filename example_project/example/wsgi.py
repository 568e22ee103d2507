"""WSGI entry point; ``webhooks_demo`` serves it on 127.0.0.1 to receive its own webhooks."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

application = get_wsgi_application()
