"""The self-service pages and the REST Hooks API, for the users who own webhook targets.

Mounted with ``path("webhooks/", include("djwebhooks.urls"))``. Pages and API share
``access`` (who may do what, and how often), ``forms`` (what a target may be) and the
library's own functions (``send_test_event``, ``replay``, ``rotate_secret``), so each
behaviour exists once.
"""
