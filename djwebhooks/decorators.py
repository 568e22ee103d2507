"""``@hook``: turn a function that returns a payload into one that sends it.

::

    @hook(event="project.update")
    def send_project_update(project, owner, identifier=""):
        return {"title": project.title}

    deliveries = send_project_update(project, owner=request.user, identifier="acme")

The 2014 shape, kept: ``base_hook(sender_callable, hash_function, **dkwargs)`` makes a
decorator, ``hook`` is a ``partial`` of it with ``orm_callable``, and ``webhook`` is the
name the original ``webhooks`` package used.
"""

import weakref
from functools import partial

import wrapt

from djwebhooks.events import (
    basic_hash_function,
    check_event,
    check_identifier,
    check_message_id,
    check_owner,
    create_deliveries,
    split_call,
)
from djwebhooks.exceptions import SenderNotCallable

__all__ = ["base_hook", "basic_hash_function", "hook", "orm_callable", "webhook"]

#: Every function decorated with an ``event``, mapped to that event, for the system checks.
#: Weak, so hooks made on the fly (in tests, in factories) do not live forever.
registry = weakref.WeakKeyDictionary()


def base_hook(sender_callable, hash_function, **dkwargs):
    """Return a decorator that sends what the decorated function returns.

    ``sender_callable(wrapped, dkwargs, hash_value, *args, **kwargs)`` does the sending;
    ``hash_function()`` makes the message id for each call (or is None).
    """
    if not callable(sender_callable):
        raise SenderNotCallable(sender_callable)
    if hash_function is not None and not callable(hash_function):
        raise TypeError(f"hash_function must be callable or None, got {hash_function!r}.")
    event = dkwargs.get("event")
    if event is not None and not isinstance(event, str):
        raise TypeError(
            f"The event given to the hook decorator must be a string, got {event!r}."
        )

    @wrapt.decorator
    def wrapper(wrapped, instance, args, kwargs):
        hash_value = hash_function() if hash_function is not None else None
        return sender_callable(wrapped, dkwargs, hash_value, *args, **kwargs)

    def decorate(function):
        if event is not None:
            registry[function] = event
        return wrapper(function)

    return decorate


def orm_callable(wrapped, dkwargs, hash_value=None, *args, **kwargs):
    """Call the hooked function for its payload and send it to every matching target.

    The ORM's ``sender_callable``: ``dkwargs`` holds the decorator's ``event``,
    ``hash_value`` is the message id (a new one when None), and the call's ``owner`` and
    ``identifier`` pick the targets.
    """
    event = dkwargs.get("event")
    if not event:
        raise TypeError(
            "djwebhooks.decorators.hook requires an 'event' argument in the decorator, "
            "e.g. @hook(event='project.update')."
        )
    check_event(event)
    owner, identifier, call_args, call_kwargs = split_call(wrapped, args, kwargs)
    owner_pk = check_owner(owner, function=wrapped)
    identifier = check_identifier(identifier)
    message_id = check_message_id(basic_hash_function() if hash_value is None else hash_value)
    return create_deliveries(event, wrapped(*call_args, **call_kwargs), owner_pk, identifier,
                             message_id, function=wrapped)


class HookFactory(partial):
    """A ``partial`` of ``base_hook`` that explains a bare ``@hook`` or a missing event."""

    def __call__(self, *args, **kwargs):
        if args:
            raise TypeError(
                "hook takes keyword arguments only: write @hook(event='project.update'), "
                "not @hook or @hook('project.update')."
            )
        if "event" not in kwargs:
            raise TypeError("hook requires an event: write @hook(event='project.update').")
        return super().__call__(**kwargs)


#: The ORM hook: resolves ``WebhookTarget`` rows and records a ``Delivery`` for each.
hook = HookFactory(base_hook, sender_callable=orm_callable, hash_function=basic_hash_function)

#: The same as ``hook``, under the name of the original ``webhooks`` package.
webhook = hook
