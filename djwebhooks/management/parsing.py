"""Reading the values given to the management commands' options.

Durations (``30s``, ``15m``, ``2h``, ``3d``, ``1w``), moments (a duration ago, or a date and
time), and checks on numbers, ids and text. Whatever the value, the functions that take an
option's name end in a ``CommandError`` that says what is wrong and what a valid value
looks like: never in the ``ValueError`` or ``OverflowError`` of ``datetime``, nor in an
error from the database.
"""

import math
import re
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connections, router
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: More digits than this make a duration longer than any bound checked here (timedelta
#: itself stops at 999,999,999 days, 15 digits of seconds); they are not read as a number,
#: which Python refuses beyond 4,300 digits.
MAX_DIGITS = 30

DATE_TIME_EXAMPLE = "2026-11-28 or 2026-11-28T09:00"
#: The longest a worker may wait between looks for work, or hold a claim: a day.
LONGEST_WAIT = 86400


def duration_seconds(value):
    """Return the whole seconds that ``30s``, ``15m``, ``2h``, ``3d`` or ``1w`` names, or
    None if ``value`` is not such a duration.

    A number of more than ``MAX_DIGITS`` digits counts as ``10 ** MAX_DIGITS`` units: longer
    than anything a command accepts, and still a number that can be compared.
    """
    match = DURATION_RE.match(value)
    if not match:
        return None
    digits = match[1].lstrip("0") or "0"
    number = int(digits) if len(digits) <= MAX_DIGITS else 10**MAX_DIGITS
    return number * SECONDS[match[2]]


def parse_duration(value):
    """Return the ``timedelta`` that ``30s``, ``15m``, ``2h``, ``3d`` or ``1w`` names, or None.

    Raises ``OverflowError`` for a duration too long for a ``timedelta`` (999,999,999 days).
    """
    seconds = duration_seconds(value)
    if seconds is None:
        return None
    if seconds > timedelta.max.total_seconds():
        raise OverflowError(f"{value!r} is longer than a timedelta can be")
    return timedelta(seconds=seconds)


def ago(seconds, now):
    """Return ``now`` less ``seconds``, or None if that is before the year 1."""
    try:
        return now - timedelta(seconds=seconds)
    except OverflowError:
        return None


def parse_age(value, option, examples, now=None):
    """Return the duration ``value`` names as a ``timedelta`` longer than 0 and reaching back
    no further than the year 1, for ``option`` (``--older-than``)."""
    seconds = duration_seconds(value)
    if seconds is None:
        raise CommandError(f"{option} {value!r} is not a duration such as {examples}.")
    if seconds == 0:
        raise CommandError(f"{option} {value!r} must be longer than 0; give a duration such as "
                           f"{examples}.")
    if ago(seconds, now or timezone.now()) is None:
        raise CommandError(f"{option} {value!r} reaches back past the year 1; give a shorter "
                           f"duration such as {examples}.")
    return timedelta(seconds=seconds)


def parse_since(value, now=None, option="--since"):
    """Return the moment ``value`` names: a duration ago (``2h``, ``3d``) or a date/time.

    A date means its midnight; a date/time without a UTC offset is in the current time
    zone. The moment returned is in UTC when ``USE_TZ`` is on, naive in the current time
    zone when it is off. Raises ``CommandError`` for anything else, for a date that does
    not exist (``2026-02-30``), and for a moment outside 0001-01-01 to 9999-12-31 in UTC.
    """
    now = now or timezone.now()
    seconds = duration_seconds(value)
    if seconds is not None:
        moment = ago(seconds, now)
        if moment is None:
            raise CommandError(f"{option} {value!r} reaches back past the year 1; give a "
                               f"shorter duration (30m, 2h, 3d, 1w) or a date/time "
                               f"({DATE_TIME_EXAMPLE}).")
        return moment
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is not None:
                moment = datetime.combine(day, time.min)
    except ValueError as exc:
        # Well formed, but no such moment: 2026-02-30, 25:00, an offset of a day or more.
        reason = ("its UTC offset must be less than 24 hours" if "offset" in str(exc)
                  else str(exc))
        raise CommandError(f"{option} {value!r} is not a valid date/time ({reason}); give one "
                           f"such as {DATE_TIME_EXAMPLE}.") from None
    if moment is None:
        raise CommandError(f"{option} {value!r} is neither a duration (30m, 2h, 3d, 1w) nor a "
                           f"date/time ({DATE_TIME_EXAMPLE}).")
    try:
        if settings.USE_TZ:
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment)
            # In UTC, as the database compares: PostgreSQL refuses offsets of 16 hours or more.
            moment = moment.astimezone(dt_timezone.utc)
        elif timezone.is_aware(moment):
            moment = timezone.make_naive(moment)
    except OverflowError:
        raise CommandError(f"{option} {value!r} is out of range: give a date/time between "
                           f"0001-01-01 and 9999-12-31{' in UTC' if settings.USE_TZ else ''}."
                           ) from None
    return moment


def check_count(option, value, most=None):
    """Refuse a whole number below 1, or above ``most``."""
    if value < 1 or (most is not None and value > most):
        bound = "" if most is None else f", at most {most}; got {value}"
        raise CommandError(f"{option} must be a positive number{bound}.")


def check_seconds(option, value):
    """Refuse a number of seconds that is not finite, not above 0, or above a day."""
    if not (math.isfinite(value) and 0 < value <= LONGEST_WAIT):
        raise CommandError(f"{option} must be a positive number of seconds, at most "
                           f"{LONGEST_WAIT} (a day); got {value:g}.")


def check_text(option, value, has=None):
    """Refuse text with a NUL character, which no database stores (PostgreSQL refuses it).

    ``has`` names what the text would be, for the message: "no username has".
    """
    if "\x00" in value:
        raise CommandError(f"{option} {value!r} contains a NUL character"
                           f"{f', which no {has} has' if has else ''}.")


def ids_in_range(model, ids):
    """Return the ids among ``ids`` that ``model``'s primary key can hold in its database.

    Others belong to no row; given to the database, some would make it fail (SQLite cannot
    take an integer beyond 64 bits).
    """
    connection = connections[router.db_for_read(model)]
    lowest, highest = connection.ops.integer_field_range(model._meta.pk.get_internal_type())
    return [pk for pk in ids
            if (lowest is None or pk >= lowest) and (highest is None or pk <= highest)]
