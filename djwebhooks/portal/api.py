"""The REST Hooks API (resthooks.org): subscribe a URL to an event, list and change the
subscriptions, unsubscribe, and read and replay the deliveries sent.

JSON in and out, in plain Django. A client signs in with Django's session (and passes the
CSRF check on POST, PATCH and DELETE) or sends ``Authorization: Bearer <key>`` with an
``ApiToken``'s key. Every error is JSON: ``{"error": "...", "fields": {...}}``. The routes
are described by ``openapi.document()``, served at ``api/openapi.json``.
"""

import json
from datetime import timedelta
from functools import wraps

from django.core import signing
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt

from djwebhooks import events, options
from djwebhooks.encoding import JSON
from djwebhooks.models import ApiToken, Delivery
from djwebhooks.portal import access, display, stats
from djwebhooks.portal import openapi as description
from djwebhooks.portal.forms import FIELDS, OwnerTargetForm

#: The largest request body read, in bytes.
MAX_BODY_BYTES = 64 * 1024
#: Results per page: the default and the most a client may ask for.
DEFAULT_LIMIT, MAX_LIMIT = 50, 100
#: The salt of the signed cursors, so no other signed value passes for one.
CURSOR_SALT = "djwebhooks.portal.api.cursor"
#: How long a token's ``last_used`` may lag behind its use, to save a write per request.
LAST_USED_PRECISION = timedelta(minutes=1)
#: The largest id (a signed 64-bit integer): a larger one is not looked for.
MAX_ID = 2**63 - 1
#: The types each field of a target must have in a request body.
FIELD_TYPES = {"event": str, "identifier": str, "target_url": str,
               "header_content_type": str, "is_active": bool, "headers": dict,
               "timeout": (int, float, type(None)), "retry_schedule": (list, type(None)),
               "ordered": bool, "max_in_flight": (int, type(None)),
               "rate_limit": (int, type(None))}
#: The fields that are a whole number: the largest each may be, and what null means.
WHOLE_NUMBERS = {"max_in_flight": (options.MAX_IN_FLIGHT, "the sender's default"),
                 "rate_limit": (options.MAX_RATE_LIMIT, "no limit")}
#: What a new target is when the body leaves a field out.
CREATE_DEFAULTS = {"identifier": "", "header_content_type": JSON, "is_active": True,
                   "ordered": False}
UNSAFE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


class ApiError(Exception):
    """An error answered as JSON: ``status``, a sentence, and messages per field."""

    def __init__(self, status, message, fields=None, headers=None):
        """An error of HTTP ``status``, explained by ``message`` and ``fields``."""
        super().__init__(message)
        self.status, self.message = status, message
        self.fields, self.headers = fields or {}, headers or {}

    def response(self):
        """This error as a ``JsonResponse``."""
        body = {"error": self.message}
        if self.fields:
            body["fields"] = self.fields
        response = JsonResponse(body, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def unauthorized(message):
    """A 401 that names the Bearer scheme, as HTTP requires of every 401."""
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="webhooks"'})


def endpoint(*methods, public=False):
    """Make an API view: only ``methods``, authenticated unless ``public``, errors as JSON."""
    allowed = list(methods)

    def decorate(view):
        """Wrap ``view``, which takes the request, the user and the URL's arguments."""
        # Exempt because a bearer token is no cookie a browser sends by itself; requests
        # authenticated by the session are CSRF-checked in ``authenticate`` instead.
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            """Answer ``request`` with ``view``, or with the error that stopped it."""
            try:
                if request.method not in allowed:
                    raise ApiError(405, f"The method {request.method} is not allowed here.",
                                   headers={"Allow": ", ".join(allowed)})
                user = None if public else authenticate(request)
                response = view(request, user, *args, **kwargs)
            except ApiError as error:
                response = error.response()
            except access.RateLimited as exc:
                response = ApiError(429, str(exc),
                                    headers={"Retry-After": str(exc.retry_after)}).response()
            add_never_cache_headers(response)
            return response

        return wrapper

    return decorate


def authenticate(request):
    """The user the request acts for, or ``ApiError`` (401, 403) when none may act."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is not None:
        user = token_user(header)
    else:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            raise unauthorized("Authentication credentials were not provided: sign in, or "
                               "send Authorization: Bearer <API key>.")
        check_csrf(request)
    if not access.may_manage(user):
        raise ApiError(403, "You do not have permission to manage webhooks.")
    return user


def token_user(header):
    """The active user of the ``ApiToken`` in an ``Authorization`` header value."""
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise unauthorized("The Authorization header must be: Bearer <API key>.")
    token = ApiToken.find(key.strip())
    if token is None or not token.user.is_active:
        raise unauthorized("This API key is not valid: it may have been revoked.")
    now = timezone.now()
    if token.last_used is None or now - token.last_used >= LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used=now)
    return token.user


def check_csrf(request):
    """Raise ``ApiError`` (403) when a session's unsafe request fails Django's CSRF check."""
    if request.method not in UNSAFE_METHODS:
        return
    if CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {}) is not None:
        raise ApiError(403, "CSRF check failed: send the csrftoken cookie's value in the "
                            "X-CSRFToken header, or use an API key.")


# Reading requests


def json_body(request):
    """The request's body: a JSON object of at most ``MAX_BODY_BYTES``."""
    if request.content_type != "application/json":
        raise ApiError(415, "The body must be JSON, sent with Content-Type: "
                            "application/json.")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES or len(request.body) > MAX_BODY_BYTES:
        raise ApiError(413, f"The body is too large: at most {MAX_BODY_BYTES} bytes.")
    try:
        data = json.loads(request.body, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return data


def refuse_constant(name):
    """Refuse ``NaN`` and ``Infinity``, which Python reads but JSON does not have."""
    raise ValueError(f"{name} is not JSON")


def target_fields(data):
    """The target fields in ``data``, checked for unknown names, for their types and the
    whole numbers for their range."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ApiError(400, f"Unknown fields: {', '.join(unknown)}.", {
            name: [f"This field is not known. The fields are: {', '.join(FIELDS)}."]
            for name in unknown})
    errors = {name: [type_error(name)] for name, value in data.items()
              if not is_a(value, FIELD_TYPES[name])}
    if errors:
        raise ApiError(400, "Some fields have the wrong type.", errors)
    errors = {name: [whole_number_error(name)] for name, value in data.items()
              if name in WHOLE_NUMBERS and value is not None
              and not 1 <= value <= WHOLE_NUMBERS[name][0]}
    if errors:
        raise ApiError(400, "Some fields are out of range.", errors)
    return data


def is_a(value, kind):
    """True when ``value`` is of ``kind``, and storable if a string (no lone surrogates)."""
    if kind is str and isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, bool) and kind is not bool:
        return False  # JSON's true is not a number
    return isinstance(value, kind)


#: What a field of each type must be, said to the client.
TYPE_ERRORS = {bool: "Must be true or false.", str: "Must be a string.",
               dict: "Must be an object of header names to values."}


def type_error(name):
    """The message for a value of the field ``name`` that is not of its type."""
    if name in WHOLE_NUMBERS:
        return whole_number_error(name)
    kind = FIELD_TYPES[name]
    if kind in TYPE_ERRORS:
        return TYPE_ERRORS[kind]
    return "Must be a number of seconds, or null." if int in kind else \
        "Must be a list of waits in seconds, or null."


def whole_number_error(name):
    """The message for a value of the whole-number field ``name`` that it cannot have."""
    most, null = WHOLE_NUMBERS[name]
    return f"{name} must be a whole number from 1 to {most}, or null for {null}."


def query(request, allowed):
    """The query parameters, raising ``ApiError`` (400) for any not in ``allowed``."""
    unknown = sorted(set(request.GET) - set(allowed))
    if unknown:
        raise ApiError(400, f"Unknown query parameters: {', '.join(unknown)}.", {
            name: [f"Not a parameter here. The parameters are: {', '.join(allowed)}."]
            for name in unknown})
    return request.GET


def form_errors(form):
    """An ``ApiError`` (400) with the form's messages by field (``__all__``: the whole)."""
    fields = {name: [error["message"] for error in errors]
              for name, errors in form.errors.get_json_data().items()}
    whole = fields.get("__all__")
    return ApiError(400, whole[0] if whole else
                    "The webhook was not saved: see the messages for each field.", fields)


# Pagination


def page(request, queryset, serialize):
    """One page of ``queryset``, newest first: ``{"results": [...], "next": url}``."""
    limit = parse_limit(request.GET.get("limit"))
    after = parse_cursor(request.GET.get("cursor"))
    rows = queryset.order_by("-pk")
    if after is not None:
        rows = rows.filter(pk__lt=after)
    rows = list(rows[:limit + 1])
    following = None
    if len(rows) > limit:
        rows = rows[:limit]
        params = request.GET.copy()
        params["cursor"] = signing.dumps(rows[-1].pk, salt=CURSOR_SALT)
        following = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return {"results": [serialize(row) for row in rows], "next": following}


def parse_limit(value):
    """``?limit=``: 1 to ``MAX_LIMIT``, ``DEFAULT_LIMIT`` when absent."""
    if value is None:
        return DEFAULT_LIMIT
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_LIMIT:
        return int(value)
    raise ApiError(400, "The limit is not valid.",
                   {"limit": [f"Must be an integer from 1 to {MAX_LIMIT}."]})


def parse_cursor(value):
    """``?cursor=``: the primary key a page ends at, as signed in a ``next`` URL."""
    if value is None:
        return None
    try:
        pk = signing.loads(value, salt=CURSOR_SALT)
    except signing.BadSignature:
        pk = None
    if type(pk) is not int:
        raise ApiError(400, "The cursor is not valid.", {
            "cursor": ["Not a cursor this API made: use the next URL of a page as given."]})
    return pk


def parse_id(name, value):
    """A query parameter that must be an id (1 to ``MAX_ID``), or None when absent."""
    if value is None:
        return None
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_ID:
        return int(value)
    raise ApiError(400, f"The {name} is not valid.", {name: ["Must be an integer id."]})


# Objects as JSON


def isoformat(value):
    """A datetime as ISO 8601 text, or None."""
    return None if value is None else value.isoformat()


def target_json(target, *, secret=False):
    """A target as the API shows it; its secret only when ``secret`` (just subscribed)."""
    data = {
        "id": target.pk,
        "event": target.event,
        "identifier": target.identifier,
        "target_url": target.target_url,
        "header_content_type": target.header_content_type,
        "is_active": target.is_active,
        "created": isoformat(target.created),
        "modified": isoformat(target.modified),
        "disabled_reason": target.disabled_reason,
        "secret_hint": target.masked_secret,
        "headers": target.masked_headers,
        "timeout": target.timeout,
        "retry_schedule": target.retry_schedule,
        "ordered": target.ordered,
        "max_in_flight": target.max_in_flight,
        "rate_limit": target.rate_limit,
        "health": stats.health(target).as_json(),
    }
    if secret:
        data["secret"] = target.secret
    return data


def delivery_json(delivery):
    """A delivery as listed: what was sent where, and how it went."""
    return {
        "id": delivery.pk,
        "target": delivery.webhook_target_id,
        "event": delivery.event,
        "message_id": delivery.hash_value,
        "status": delivery.status,
        "attempts_made": delivery.attempt,
        "success": delivery.success,
        "response_status": delivery.response_status,
        "reason": delivery.reason,
        "next_attempt_at": isoformat(delivery.next_attempt_at),
        "created": isoformat(delivery.created),
        "modified": isoformat(delivery.modified),
    }


def delivery_detail_json(delivery):
    """A delivery with its payload, the headers each request carries, and its attempts."""
    try:
        payload = json.loads(delivery.payload_json)
    except ValueError:
        payload = delivery.payload_json
    return {
        **delivery_json(delivery),
        "target_url": delivery.webhook_target.target_url,
        "payload": payload,
        "headers": dict(display.request_headers(delivery)),
        "attempts": [attempt_json(attempt) for attempt in delivery.attempts.all()],
    }


def attempt_json(attempt):
    """One HTTP request made for a delivery, and its answer."""
    return {
        "attempt": attempt.attempt,
        "success": attempt.success,
        "response_status": attempt.response_status,
        "response_content_type": attempt.response_content_type,
        "response_message": attempt.response_message,
        "error": attempt.error,
        "notification": attempt.notification,
        "duration_ms": attempt.duration,
        "created": isoformat(attempt.created),
    }


def found(queryset, pk, what):
    """The object ``pk`` of ``queryset`` (the user's own), or a 404 ``ApiError``."""
    # An id no database column holds is looked for nowhere (some databases raise).
    obj = queryset.filter(pk=pk).first() if pk <= MAX_ID else None
    if obj is None:
        raise ApiError(404, f"No {what} with the id {pk}.")
    return obj


# Views


@endpoint("GET", public=True)
def openapi(request, user):
    """The OpenAPI 3.1 description of this API."""
    return JsonResponse(description.document(request.build_absolute_uri("/")))


@endpoint("GET", "POST")
def targets(request, user):
    """List the user's targets (GET), or subscribe a URL to an event (POST)."""
    if request.method == "POST":
        return subscribe(request, user)
    query(request, ["limit", "cursor"])
    return JsonResponse(page(request, access.targets_of(user), target_json))


def subscribe(request, user):
    """Make a target from the body; answer 201 with it and its secret."""
    data = {**CREATE_DEFAULTS, **target_fields(json_body(request))}
    form = OwnerTargetForm(data, owner=user)
    target = save(form)
    response = JsonResponse(target_json(target, secret=True), status=201)
    response["Location"] = request.build_absolute_uri(
        reverse("djwebhooks:api-target", args=[target.pk]))
    return response


def save(form):
    """Save a valid form's target, or raise ``ApiError`` (400) with its messages."""
    if not form.is_valid():
        raise form_errors(form)
    try:
        with transaction.atomic():
            return form.save()
    except IntegrityError:  # the same subscription, saved meanwhile by another request
        form.add_error(None, "You already have a webhook for this event, identifier and "
                             "URL.")
        raise form_errors(form) from None


@endpoint("GET", "PATCH", "DELETE")
def target(request, user, pk):
    """Show (GET), change (PATCH) or unsubscribe (DELETE) one of the user's targets."""
    subscription = found(access.targets_of(user), pk, "target")
    if request.method == "DELETE":
        subscription.delete()
        response = HttpResponse(status=204)
        del response["Content-Type"]
        return response
    if request.method == "PATCH":
        current = {name: getattr(subscription, name) for name in FIELDS}
        data = {**current, **target_fields(json_body(request))}
        subscription = save(OwnerTargetForm(data, owner=user, instance=subscription))
    return JsonResponse(target_json(subscription))


@endpoint("GET")
def deliveries(request, user):
    """List the deliveries to the user's targets, filtered by status, event and target."""
    params = query(request, ["status", "event", "target", "limit", "cursor"])
    rows = access.deliveries_of(user)
    status = params.get("status")
    if status is not None:
        if status not in Delivery.Status.values:
            raise ApiError(400, "The status is not valid.", {
                "status": [f"Must be one of: {', '.join(Delivery.Status.values)}."]})
        rows = rows.filter(status=status)
    if params.get("event") is not None:
        rows = rows.filter(event=params["event"])
    target_id = parse_id("target", params.get("target"))
    if target_id is not None:
        rows = rows.filter(webhook_target_id=target_id)
    return JsonResponse(page(request, rows, delivery_json))


@endpoint("GET")
def delivery(request, user, pk):
    """One of the user's deliveries, with its payload, headers and attempts."""
    return JsonResponse(delivery_detail_json(found(access.deliveries_of(user), pk,
                                                   "delivery")))


@endpoint("POST")
def delivery_replay(request, user, pk):
    """Send one of the user's deliveries again (``RATE_LIMITS["replay"]``); answer 202."""
    row = found(access.deliveries_of(user), pk, "delivery")
    access.rate_limit(user, "replay")
    return JsonResponse({"replayed": bool(events.replay([row.pk]))}, status=202)


@csrf_exempt  # it changes nothing; otherwise a POST here would get the middleware's HTML 403
def not_found(request, path=""):
    """An API path that names no route: a JSON 404, as for an id that is not the user's."""
    response = ApiError(404, f"There is no API route at {request.path}. The routes are "
                        "described at api/openapi.json.").response()
    add_never_cache_headers(response)
    return response
