"""Signals sent while delivering. ``sender`` is always the ``Delivery`` or
``WebhookTarget`` class; the instance and details come as keyword arguments.

- ``delivery_sending(delivery)``: just before each attempt. A receiver may raise
  ``djwebhooks.exceptions.CancelDelivery("why")`` to cancel the delivery: nothing is sent
  and its status becomes ``cancelled``.
- ``delivery_succeeded(delivery, attempt)``: an attempt succeeded.
- ``delivery_failed(delivery, attempt, reason)``: the delivery failed for good (no retry).
- ``target_disabled(target, reason)``: a target was disabled: it answered 410 Gone, or it
  kept failing for longer than ``DJWEBHOOKS["DISABLE_AFTER"]``.

The last three are sent after the database changes they report have been committed.

For monitoring (``djwebhooks.metrics``, ``djwebhooks.tracing``), sent as things happen,
before anything is recorded:

- ``attempt_started(delivery)``: on the thread about to make an attempt's request.
- ``attempt_finished(delivery, result)``: on the same thread, once the attempt is over
  (``result`` is its ``AttemptResult``); also for an attempt that failed while being
  prepared, with no ``attempt_started`` before it.
- ``worker_claimed(worker, ids)``: a ``Worker`` claimed the deliveries ``ids`` (never
  empty); ``sender`` is the ``Worker`` class.
"""

from django.dispatch import Signal

# Their senders are classes, so each signal keeps its receivers per sender, as Django's
# model signals do, instead of sorting them out at every send: two are sent per attempt.
delivery_sending = Signal(use_caching=True)
delivery_succeeded = Signal(use_caching=True)
delivery_failed = Signal(use_caching=True)
target_disabled = Signal(use_caching=True)
attempt_started = Signal(use_caching=True)
attempt_finished = Signal(use_caching=True)
worker_claimed = Signal(use_caching=True)
