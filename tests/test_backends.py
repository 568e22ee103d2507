"""Choosing the backend by dotted path, and the backend contract."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from djwebhooks import send_event
from djwebhooks.backends import get_backend
from djwebhooks.backends.base import BaseBackend
from djwebhooks.backends.inline import InlineBackend
from djwebhooks.models import Delivery


class RecordingBackend(BaseBackend):
    """Keeps the ids it is given, sends nothing."""

    enqueued = []

    def enqueue(self, delivery_ids):
        self.enqueued.append(list(delivery_ids))


def test_inline_is_the_default():
    backend = get_backend()
    assert isinstance(backend, InlineBackend)
    assert backend.sends_immediately is True
    assert get_backend() is backend  # created once


def test_backend_follows_override_settings(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "tests.test_backends.RecordingBackend"}
    assert isinstance(get_backend(), RecordingBackend)


def test_bad_backend_path(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": "tests.nowhere.Backend"}
    with pytest.raises(ImproperlyConfigured, match=r"DJWEBHOOKS\['BACKEND'\] is "
                                                   r"'tests.nowhere.Backend'"):
        get_backend()


@pytest.mark.django_db(transaction=True)
def test_backend_receives_ids_after_commit(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "tests.test_backends.RecordingBackend"}
    RecordingBackend.enqueued.clear()
    make_target()
    make_target(target_url=receiver.url + "/two/")
    deliveries = send_event("project.update", {}, owner=user)
    assert RecordingBackend.enqueued == [[d.pk for d in deliveries]]
    assert receiver.requests == []
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}


def test_base_backend_must_be_implemented():
    with pytest.raises(NotImplementedError):
        BaseBackend().enqueue([1])
