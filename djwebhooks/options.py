"""What a target's owner may set beyond its URL: static headers, a timeout of its own, a
retry schedule of its own, and how many requests it takes at once and a second. The rules
only, with no Django: what is accepted, the sentence that says why the rest is refused,
and how a header's value is shown masked.

Owners are other people, so every value is bounded: a few headers of printable ASCII, a
timeout within the sender's own, a schedule of at most ``MAX_RETRIES`` waits of at most a
week each.
"""

import math
import re

#: Headers a target may not set: the signature's, those that frame the request (a
#: receiver that trusted a second ``Content-Length`` could be fed a second request), and
#: the connection's own.
RESERVED_HEADERS = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature",
    "host", "content-length", "content-type", "transfer-encoding", "connection",
    "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect",
})
MAX_HEADERS = 20
MAX_NAME_LENGTH = 64
MAX_VALUE_LENGTH = 2048
#: Names and values of all of a target's headers together, in characters.
MAX_HEADERS_LENGTH = 8192

#: A header name: an RFC 9110 token.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A header value: printable ASCII, spaces and tabs. Never CR, LF or NUL, which would end
#: the header (or the request) early; and never the mask's "•", so a masked value typed
#: back can only mean "keep it".
_VALUE = re.compile(r"[\x20-\x7e\t]*")

#: What a header's value is shown as; values this long or longer also show their end.
MASK = "••••••"
SHOW_END_FROM = 20

#: The shortest timeout a target may have, in seconds.
SHORTEST_TIMEOUT = 1.0
#: A target's schedule: at most this many retries, each wait from one second to a week.
MAX_RETRIES = 30
SHORTEST_WAIT = 1.0
LONGEST_WAIT = 7 * 86400

#: The most requests in flight a target may be given, and its highest rate limit (a
#: second).
MAX_IN_FLIGHT = 1000
MAX_RATE_LIMIT = 10_000

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WAIT = re.compile(r"([0-9]{1,7}(?:\.[0-9]{1,3})?)\s*([smhd]?)")


class OptionError(ValueError):
    """A value a target cannot have; the message says what is wrong and what is allowed."""


def check_headers(headers):
    """Return ``headers`` (a dict of name to value) as sent, values stripped of surrounding
    spaces; raise ``OptionError`` for anything a target may not send."""
    if not isinstance(headers, dict):
        raise OptionError(f"The headers must be a mapping of names to values, got "
                          f"{type(headers).__name__}.")
    if len(headers) > MAX_HEADERS:
        raise OptionError(f"A target may have at most {MAX_HEADERS} headers, not "
                          f"{len(headers)}.")
    checked, seen, length = {}, set(), 0
    for name, value in headers.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or \
                len(name) > MAX_NAME_LENGTH:
            raise OptionError(
                f"{_shown(name)} is not a header name: use letters, digits and - (at most "
                f"{MAX_NAME_LENGTH} characters), such as X-Api-Key.")
        if name.lower() in RESERVED_HEADERS:
            raise OptionError(
                f"{name} is set by the sender itself and cannot be changed: the signature "
                "headers, Host, Content-Length, Content-Type and the connection's headers "
                "are refused.")
        if name.lower() in seen:
            raise OptionError(f"The header {name} is given twice.")
        seen.add(name.lower())
        if not isinstance(value, str):
            raise OptionError(f"The value of {name} must be text.")
        if not _VALUE.fullmatch(value):
            raise OptionError(
                f"The value of {name} may hold only printable ASCII characters and spaces "
                "(no line breaks or other control characters).")
        value = value.strip(" \t")
        if not value:
            raise OptionError(f"The header {name} has no value.")
        if len(value) > MAX_VALUE_LENGTH:
            raise OptionError(f"The value of {name} is longer than {MAX_VALUE_LENGTH} "
                              "characters.")
        length += len(name) + len(value)
        checked[name] = value
    if length > MAX_HEADERS_LENGTH:
        raise OptionError(f"The headers are longer than {MAX_HEADERS_LENGTH} characters "
                          "together.")
    return checked


def mask(value):
    """A header's value as shown: hidden, with its last four characters when it is long
    enough for them to give nothing away."""
    if isinstance(value, str) and len(value) >= SHOW_END_FROM:
        return MASK + value[-4:]
    return MASK


def masked(headers):
    """``headers`` with every value masked (an empty dict for anything but a dict)."""
    return {name: mask(value) for name, value in headers.items()} \
        if isinstance(headers, dict) else {}


def unmask(typed, stored):
    """``typed`` headers, where a value still equal to its stored value's mask is that
    stored value: editing the headers shown masked keeps the ones left as they were."""
    known = {name.lower(): value for name, value in stored.items()} \
        if isinstance(stored, dict) else {}
    return {name: known[name.lower()] if isinstance(value, str) and name.lower() in known
            and value.strip() == mask(known[name.lower()]) else value
            for name, value in typed.items()}


def parse_headers(text):
    """Read headers typed one per line as ``Name: value``; raise ``OptionError``."""
    headers = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise OptionError(f"Line {number} is not a header: write one per line, as "
                              "Name: value.")
        name = name.strip()
        if name.lower() in {known.lower() for known in headers}:
            raise OptionError(f"The header {name} is given twice.")
        headers[name] = value.strip(" \t")
    return headers


def format_headers(headers):
    """Headers one per line, ``Name: value``."""
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


def check_timeout(value, longest):
    """Return ``value`` as seconds, between ``SHORTEST_TIMEOUT`` and ``longest`` (the
    sender's ``TOTAL_TIMEOUT``); raise ``OptionError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise OptionError(f"The timeout must be a number of seconds, got {_shown(value)}.")
    if not SHORTEST_TIMEOUT <= value <= longest:
        raise OptionError(f"The timeout must be from {SHORTEST_TIMEOUT:g} to {longest:g} "
                          f"seconds (the sender's TOTAL_TIMEOUT), got {value:g}.")
    return float(value)


def bounded_timeout(value, longest):
    """The seconds a request to a target with timeout ``value`` may take: ``value``, cut
    to ``longest`` (a ``TOTAL_TIMEOUT`` lowered since it was saved); raise ``OptionError``
    for a value that is not a positive number (saved from code, without validation)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise OptionError(f"The target's timeout must be a positive number of seconds, got "
                          f"{_shown(value)}.")
    return min(float(value), longest)


def check_schedule(value):
    """Return a retry schedule (waits in seconds, after the first attempt, the second...)
    as a tuple of floats; raise ``OptionError``. An empty one means no retries."""
    if not isinstance(value, (list, tuple)):
        raise OptionError(f"The retry schedule must be a list of waits in seconds, got "
                          f"{type(value).__name__}.")
    if len(value) > MAX_RETRIES:
        raise OptionError(f"A retry schedule may have at most {MAX_RETRIES} retries, not "
                          f"{len(value)}.")
    for wait in value:
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or \
                not math.isfinite(wait) or not SHORTEST_WAIT <= wait <= LONGEST_WAIT:
            raise OptionError(f"Each wait of a retry schedule must be from 1 second to 7 "
                              f"days, got {_shown(wait)}.")
    return tuple(float(wait) for wait in value)


def parse_schedule(text):
    """Read waits written as ``5s, 5m, 30m, 2h, 1d`` (a bare number is seconds); raise
    ``OptionError``. Blank text is an empty schedule."""
    if not text.strip():
        return ()
    waits = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        match = _WAIT.fullmatch(part.lower())
        if not match:
            raise OptionError(f"{_shown(part)} is not a wait: write waits such as 5s, 5m, "
                              "2h or 1d, separated by commas.")
        waits.append(float(match[1]) * _UNITS[match[2] or "s"])
    return check_schedule(waits)


def format_schedule(schedule):
    """Waits as ``parse_schedule`` reads them, each in its largest whole unit."""
    parts = []
    for wait in schedule:
        for unit in "dhm":
            if wait >= _UNITS[unit] and wait % _UNITS[unit] == 0:
                parts.append(f"{int(wait // _UNITS[unit])}{unit}")
                break
        else:
            parts.append(f"{wait:g}s")
    return ", ".join(parts)


def _shown(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
