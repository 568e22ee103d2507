"""How a message is encoded: the content types, and a payload turned into the JSON sent.

Pure code: no Django models, no settings. The JSON text made here when a hook is called is
stored as it is and sent as it is, so the ``data`` a receiver gets is byte for byte what
was checked and signed: key order, number spelling and all.
"""

import json
import math
import re

from djwebhooks.exceptions import PayloadError

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

#: Characters outside the Basic Multilingual Plane (4 bytes in UTF-8).
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def encode_payload(payload, *, encoder=None, max_bytes=None, escape_astral=False,
                   source=""):
    """Return ``payload`` (a dict) as compact JSON text, or raise ``PayloadError``.

    ``encoder`` is a ``json.JSONEncoder`` subclass (Django's, for dates, decimals and
    UUIDs); ``max_bytes`` caps the size in UTF-8; ``escape_astral`` writes characters
    beyond U+FFFF as ``\\u`` escapes, for databases that cannot store them. ``source``
    ("returned by f()") ends up in error messages. The error names the path to the value at
    fault: one JSON cannot hold, NaN or Infinity, an integer too long to write, a lone
    surrogate, keys that become the same string, or nesting too deep to encode.
    """
    if not isinstance(payload, dict):
        raise PayloadError(
            f"A webhook payload must be a dict, got {type(payload).__name__}{source}. "
            "Return a dict of JSON-serialisable values."
        )
    try:
        text = json.dumps(payload, cls=encoder, allow_nan=False, ensure_ascii=False,
                          separators=(",", ":"))
        size = len(text.encode("utf-8"))  # refuses lone surrogates
    except (TypeError, ValueError, RecursionError) as exc:
        path, reason = _find_fault(payload, encoder)
        raise PayloadError(f"{path} is {reason}{source}.", path=path) from exc
    _check_structure(payload, source)
    if max_bytes is not None and size > max_bytes:
        raise PayloadError(
            f"The payload{source} is {size} bytes of JSON, more than "
            f"DJWEBHOOKS['MAX_PAYLOAD_BYTES'] ({max_bytes}). Send less, such as ids and a "
            "URL to fetch the rest from, or raise the limit."
        )
    if escape_astral:
        text = _ASTRAL.sub(_escape_astral, text)
    return text


def _escape_astral(match):
    code = ord(match.group()) - 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


#: How deeply objects and arrays may nest. Receivers' parsers refuse deeper documents
#: (Ruby's JSON stops at 100 levels), and Python's cannot write much deeper ones.
MAX_DEPTH = 100
_TOO_DEEP = (f"nested more than {MAX_DEPTH} levels deep, deeper than receivers' JSON parsers "
             "accept; flatten the data")


def _find_fault(payload, encoder):
    """Return ``(path, reason)`` for the first value that cannot be encoded.

    A walk with a stack of its own, so a payload nested too deep for ``json`` is reported
    rather than crashing the search for it.
    """
    stack = [(payload, "payload", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth >= MAX_DEPTH:
            return path, _TOO_DEEP
        if isinstance(value, dict):
            children = []
            for key, item in value.items():
                if isinstance(key, str):
                    fault = _text_fault(key)
                    if fault:
                        return f"{path} key {_short_repr(key)}", fault
                elif not isinstance(key, (int, float, bool)) and key is not None:
                    return (f"{path} key {_short_repr(key)}",
                            f"not a valid JSON object key ({type(key).__name__}); keys "
                            "must be strings, numbers, booleans or None")
                else:
                    fault = _number_fault(key)
                    if fault:
                        return f"{path} key {_short_repr(key)}", fault
                children.append((item, f"{path}[{key!r}]", depth + 1))
            stack.extend(reversed(children))
        elif isinstance(value, (list, tuple)):
            stack.extend(reversed([(item, f"{path}[{index}]", depth + 1)
                                   for index, item in enumerate(value)]))
        elif isinstance(value, str):
            fault = _text_fault(value)
            if fault:
                return path, fault
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            fault = _number_fault(value)
            if fault:
                return path, fault
        elif value is not None and not isinstance(value, bool):
            try:
                encoded = json.dumps(value, cls=encoder, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                return path, (f"not JSON-serialisable: {type(value).__name__} "
                              f"{_short_repr(value)}. Convert it to a string, number, bool, "
                              "None, list or dict")
            # What the encoder made of it (a date becomes a string) is checked too.
            stack.append((json.loads(encoded), path, depth))
    return "payload", "not JSON-serialisable"


def _text_fault(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"a string with a lone surrogate ({text[exc.start]!r}) at {exc.start}, "
                "which is not valid Unicode and cannot be sent as UTF-8")
    return None


def _number_fault(number):
    if isinstance(number, float) and not math.isfinite(number):
        return f"NaN or Infinity ({number!r}), which JSON cannot represent"
    if isinstance(number, int) and not isinstance(number, bool):
        try:
            str(number)
        except ValueError:
            return ("an integer too long to write as text (over Python's limit of "
                    "sys.get_int_max_str_digits() digits); send it as a string")
    return None


def _check_structure(payload, source):
    """Refuse nesting deeper than ``MAX_DEPTH``, and two keys of one object that JSON
    writes as the same string (``1`` and ``"1"``): the receiver would see only one."""
    stack = [(payload, "payload", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise PayloadError(f"{path} is {_TOO_DEEP}{source}.", path=path)
        if isinstance(value, dict):
            names = None
            for key, item in value.items():
                if type(key) is not str:
                    if names is None:
                        names = {k: k for k in value if type(k) is str}
                    name = _json_key(key)
                    if name in names:
                        raise PayloadError(
                            f"{path} has the keys {names[name]!r} and {key!r}, which are "
                            f"both {name!r} in JSON{source}: the receiver would get only "
                            "one. Use distinct string keys.",
                            path=path,
                        )
                    names[name] = key
                if isinstance(item, (dict, list, tuple)):
                    stack.append((item, f"{path}[{key!r}]", depth + 1))
        else:
            stack.extend((item, f"{path}[{index}]", depth + 1)
                         for index, item in enumerate(value)
                         if isinstance(item, (dict, list, tuple)))


def _json_key(key):
    """The string ``json`` writes for a non-string key."""
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    return float.__repr__(key) if isinstance(key, float) else int.__repr__(key)


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
