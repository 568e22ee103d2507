"""The OpenAPI 3.1 description of the REST Hooks API (``portal.api``), written by hand.

``document()`` builds it at each request, so the events it lists are the declared ones.
Keep it in step with ``portal.api``: the tests validate it and fuzz the API against it.
"""

from django.conf import settings
from django.urls import reverse

from djwebhooks import __version__, conf, options
from djwebhooks.encoding import FORM, JSON
from djwebhooks.models import Delivery

DESCRIPTION = """\
Subscribe URLs to events and follow the webhooks sent to them, following the REST Hooks \
pattern (https://resthooks.org): POST /targets/ subscribes (the answer carries the \
signing secret, shown only then), DELETE /targets/{id}/ unsubscribes.

Authenticate with `Authorization: Bearer <API key>`, or with the session of a signed-in \
user; a session's POST, PATCH and DELETE requests must pass Django's CSRF check (the \
csrftoken cookie's value in the X-CSRFToken header).

Every error is JSON (the Error schema). A method a route does not have is answered 405, \
with an Allow header. Lists are paged with cursors: follow `next` until it is null.
"""


def ref(name):
    """A reference to the schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema):
    """A JSON body of ``schema``."""
    return {"application/json": {"schema": schema}}


def nullable(kind, **extra):
    """A schema of ``kind`` or null."""
    return {"type": [kind, "null"], **extra}


DATETIME = {"type": "string", "format": "date-time"}
#: An id: the largest a signed 64-bit integer column holds.
ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def target_properties():
    """The properties of a target as the API shows it."""
    return {
        "id": ID,
        "event": {"type": "string"},
        "identifier": {"type": "string"},
        "target_url": {"type": "string"},
        "header_content_type": {"type": "string", "enum": [JSON, FORM]},
        "is_active": {"type": "boolean"},
        "created": DATETIME,
        "modified": DATETIME,
        "disabled_reason": {"type": "string",
                            "description": "Why the target was disabled, if it was "
                                           "automatically."},
        "secret_hint": {"type": "string",
                        "description": "The signing secret with all but its start and "
                                       "last four characters hidden."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "The target's own headers, each value masked (••••••, "
                                   "and its last four characters if it is long). Sent "
                                   "back unchanged, a masked value keeps the stored one."},
        "timeout": nullable("number", description="Seconds a request may take; null: "
                                                  "the sender's TOTAL_TIMEOUT."),
        "retry_schedule": {"type": ["array", "null"], "items": {"type": "number"},
                           "description": "Waits before each retry, in seconds; null: "
                                          "the sender's schedule; []: no retries."},
        "ordered": {"type": "boolean",
                    "description": "True: the deliveries are sent one at a time, in the "
                                   "order they were made."},
        "max_in_flight": nullable("integer", description="The most requests each sending "
                                                         "process makes to the target at "
                                                         "once; null: the sender's "
                                                         "default."),
        "rate_limit": nullable("integer", description="The most requests a second to the "
                                                      "target, across every worker; null: "
                                                      "no limit."),
        "health": ref("Health"),
    }


def closed(properties, required=None, **extra):
    """An object schema with exactly ``properties`` (all required unless told)."""
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False, **extra}


def input_schema(required):
    """The fields a client sets on a target; ``required`` are the ones it must give."""
    events = list(conf.get_events())
    return closed({
        "event": {"type": "string", "enum": events, "description": "A declared event."},
        "target_url": {"type": "string", "format": "uri", "maxLength": 2048,
                       "description": "Where the webhook is sent: an https:// URL on a "
                                      "public address."},
        "identifier": {"type": "string", "maxLength": 255,
                       "description": "Narrows the subscription; blank (the default) "
                                      "matches events sent without one."},
        "header_content_type": {"type": "string", "enum": [JSON, FORM],
                                "description": f"How the body is sent (default {JSON})."},
        "is_active": {"type": "boolean", "description": "False stops sending to the URL "
                                                        "(default true)."},
        "headers": {"type": "object", "maxProperties": options.MAX_HEADERS,
                    "additionalProperties": {"type": "string",
                                             "maxLength": options.MAX_VALUE_LENGTH},
                    "description": "Headers sent with every request, such as "
                                   "Authorization. Replaces the target's headers; a value "
                                   "as the API shows it (masked) keeps the stored one. "
                                   "The signature headers, Host, Content-Length and "
                                   "Content-Type are refused."},
        "timeout": nullable("number", minimum=options.SHORTEST_TIMEOUT,
                            description="Seconds a request may take, at most the sender's "
                                        "TOTAL_TIMEOUT; null for that."),
        "retry_schedule": {"type": ["array", "null"], "maxItems": options.MAX_RETRIES,
                           "items": {"type": "number", "minimum": options.SHORTEST_WAIT,
                                     "maximum": options.LONGEST_WAIT},
                           "description": "Waits before each retry, in seconds; null for "
                                          "the sender's schedule, [] for no retries."},
        "ordered": {"type": "boolean",
                    "description": "True sends the deliveries one at a time, in the order "
                                   "they were made: one that fails holds back those after "
                                   "it until it succeeds, fails for good or is cancelled "
                                   "(default false)."},
        "max_in_flight": nullable("integer", minimum=1, maximum=options.MAX_IN_FLIGHT,
                                  description="The most requests each sending process makes "
                                              "to the target at once, fewer while it answers "
                                              "429, 502, 503 or 504 or times out; null (the "
                                              "default) for the sender's MAX_IN_FLIGHT."),
        "rate_limit": nullable("integer", minimum=1, maximum=options.MAX_RATE_LIMIT,
                               description="The most requests a second to the target, "
                                           "counted across every worker; null (the default) "
                                           "for no limit."),
    }, required=required)


def rate():
    """The success rate of a target's attempts over one window."""
    return closed({"attempts": {"type": "integer", "minimum": 0},
                   "succeeded": {"type": "integer", "minimum": 0},
                   "percent": nullable("number", minimum=0, maximum=100)})


def health_schema():
    """A target's health: its last attempt, success rates, and whether it is disabled."""
    last = closed({"at": DATETIME, "success": {"type": "boolean"},
                   "response_status": nullable("integer")})
    return closed({
        "last_attempt": {"oneOf": [last, {"type": "null"}]},
        "success_rate": closed({"24h": rate(), "7d": rate()}),
        "disabled": {"type": "boolean"},
        "disabled_reason": {"type": "string"},
    })


def delivery_properties():
    """The properties of a delivery as listed."""
    return {
        "id": ID,
        "target": ID,
        "event": {"type": "string"},
        "message_id": {"type": "string", "description": "The webhook-id header: the same "
                                                        "on every attempt and replay."},
        "status": {"type": "string", "enum": list(Delivery.Status.values)},
        "attempts_made": {"type": "integer", "minimum": 0},
        "success": {"type": "boolean"},
        "response_status": nullable("integer"),
        "reason": {"type": "string"},
        "next_attempt_at": nullable("string", format="date-time"),
        "created": DATETIME,
        "modified": DATETIME,
    }


def attempt_schema():
    """One HTTP request made for a delivery."""
    return closed({
        "attempt": {"type": "integer", "minimum": 0},
        "success": {"type": "boolean"},
        "response_status": nullable("integer"),
        "response_content_type": {"type": "string"},
        "response_message": {"type": "string", "description": "The start of the answer."},
        "error": {"type": "string"},
        "notification": {"type": "string"},
        "duration_ms": {"type": "integer", "minimum": 0},
        "created": DATETIME,
    })


def page_schema(item):
    """A page of ``item``: the results and the URL of the next page (null at the end)."""
    return closed({"results": {"type": "array", "items": ref(item)},
                   "next": nullable("string", format="uri")})


def error_schema():
    """What every error is: a sentence, and messages by field for invalid input."""
    return closed({
        "error": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": "string"}},
            "description": "Messages by field or parameter; __all__ for the target as a "
                           "whole."},
    }, required=["error"])


def schemas():
    """Every schema of ``components``."""
    return {
        "Target": closed(target_properties()),
        "NewTarget": closed({**target_properties(),
                             "secret": {"type": "string",
                                        "description": "The signing secret (whsec_...): "
                                                       "shown only here."}}),
        "TargetInput": input_schema(["event", "target_url"]),
        "TargetPatch": input_schema([]),
        "Health": health_schema(),
        "Delivery": closed(delivery_properties()),
        "DeliveryDetail": closed({
            **delivery_properties(),
            "target_url": {"type": "string"},
            "payload": {"description": "The data sent (the envelope's data), as JSON."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "The headers every request carries; the timestamp "
                                       "and signatures are made at each attempt."},
            "attempts": {"type": "array", "items": ref("Attempt")},
        }),
        "Attempt": attempt_schema(),
        "Replayed": closed({"replayed": {"type": "boolean", "description": "False when a "
                                         "worker is sending it at this moment."}}),
        "TargetPage": page_schema("Target"),
        "DeliveryPage": page_schema("Delivery"),
        "Error": error_schema(),
    }


def header(description, kind="string"):
    """A response header that is always sent."""
    return {"description": description, "required": True, "schema": {"type": kind}}


def responses():
    """The error responses of ``components``."""
    def error(description, **headers):
        """An error response with the Error schema and ``headers``."""
        answer = {"description": description, "content": json_content(ref("Error"))}
        if headers:
            answer["headers"] = headers
        return answer

    return {
        "BadRequest": error("The input is not valid (see fields)."),
        "Unauthorized": error("No credentials, or an API key that is not valid.",
                              **{"WWW-Authenticate": header("Bearer realm=\"webhooks\"")}),
        "Forbidden": error("The user may not manage webhooks, or a session's CSRF check "
                           "failed."),
        "NotFound": error("The user has no such object."),
        "TooLarge": error("The body is larger than 64 KiB."),
        "UnsupportedMediaType": error("The body is not sent as application/json."),
        "TooManyRequests": error("The rate limit is reached.",
                                 **{"Retry-After": header("Seconds to wait.", "integer")}),
    }


def answers(*errors, headers=None, **success):
    """An operation's responses: ``s<status>=(description, schema)`` and named errors."""
    result = {}
    for status, (text, schema) in success.items():
        result[status.removeprefix("s")] = answer = {"description": text}
        if schema is not None:
            answer["content"] = json_content(schema)
        if headers:
            answer["headers"] = headers
    for status, name in (("400", "BadRequest"), ("401", "Unauthorized"),
                         ("403", "Forbidden"), ("404", "NotFound"), ("413", "TooLarge"),
                         ("415", "UnsupportedMediaType"), ("429", "TooManyRequests")):
        if name in errors:
            result[status] = {"$ref": f"#/components/responses/{name}"}
    return result


def parameter(name, where, schema, description, required=False):
    """An operation's parameter."""
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


def list_parameters():
    """The pagination parameters of a list."""
    return [
        parameter("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100,
                                     "default": 50}, "Results per page."),
        parameter("cursor", "query", {"type": "string"},
                  "Where the page starts: taken from the next URL of the page before."),
    ]


PATH_ID = parameter("id", "path", ID, "The object's id.", required=True)


def body(name):
    """A required JSON request body of the schema ``name``."""
    return {"required": True, "content": json_content(ref(name))}


def paths():
    """Every route and its operations."""
    changes = ("BadRequest", "Unauthorized", "Forbidden", "TooLarge", "UnsupportedMediaType")
    return {
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This description.", "security": [],
            "tags": ["meta"],
            "responses": answers(s200=("The OpenAPI document.", {"type": "object"}))}},
        "/targets/": {
            "get": {"operationId": "listTargets", "summary": "List your targets, newest "
                    "first.", "tags": ["targets"], "parameters": list_parameters(),
                    "responses": answers("BadRequest", "Unauthorized", "Forbidden",
                                         s200=("A page of targets.", ref("TargetPage")))},
            "post": {"operationId": "subscribe", "summary": "Subscribe a URL to an event.",
                     "tags": ["targets"], "requestBody": body("TargetInput"),
                     "responses": answers(*changes, headers={"Location": header(
                         "The new target's URL in this API.")}, s201=(
                         "The new target, with its signing secret.", ref("NewTarget")))},
        },
        "/targets/{id}/": {
            "parameters": [PATH_ID],
            "get": {"operationId": "getTarget", "summary": "One of your targets.",
                    "tags": ["targets"],
                    "responses": answers("Unauthorized", "Forbidden", "NotFound",
                                         s200=("The target.", ref("Target")))},
            "patch": {"operationId": "updateTarget", "summary": "Change some of a target's "
                      "fields.", "tags": ["targets"], "requestBody": body("TargetPatch"),
                      "responses": answers(*changes, "NotFound",
                                           s200=("The target.", ref("Target")))},
            "delete": {"operationId": "unsubscribe", "summary": "Delete a target: nothing "
                       "more is sent to it.", "tags": ["targets"],
                       "responses": answers("Unauthorized", "Forbidden", "NotFound",
                                            s204=("Deleted.", None))},
        },
        "/deliveries/": {"get": {
            "operationId": "listDeliveries", "summary": "List the deliveries to your "
            "targets, newest first.", "tags": ["deliveries"],
            "parameters": [
                parameter("status", "query", {"type": "string",
                                              "enum": list(Delivery.Status.values)},
                          "Only deliveries in this status."),
                parameter("event", "query", {"type": "string"}, "Only this event."),
                parameter("target", "query", ID, "Only deliveries to this target."),
                *list_parameters()],
            "responses": answers("BadRequest", "Unauthorized", "Forbidden",
                                 s200=("A page of deliveries.", ref("DeliveryPage")))}},
        "/deliveries/{id}/": {
            "parameters": [PATH_ID],
            "get": {"operationId": "getDelivery", "summary": "A delivery, with its payload, "
                    "headers and attempts.", "tags": ["deliveries"],
                    "responses": answers("Unauthorized", "Forbidden", "NotFound", s200=(
                        "The delivery.", ref("DeliveryDetail")))}},
        "/deliveries/{id}/replay/": {
            "parameters": [PATH_ID],
            "post": {"operationId": "replayDelivery", "summary": "Send a delivery again, "
                     "with the same webhook-id.", "tags": ["deliveries"],
                     "responses": answers("Unauthorized", "Forbidden", "NotFound",
                                          "TooManyRequests", s202=(
                                              "Replayed, unless a worker is sending it now.",
                                              ref("Replayed")))}},
    }


def api_root():
    """The path the API's routes begin with, such as ``/webhooks/api``."""
    return reverse("djwebhooks:api-openapi").removesuffix("/openapi.json")


def document(base_url=None):
    """The OpenAPI 3.1.0 document; its server is at ``base_url`` (relative when None)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "dj-webhooks REST Hooks API", "version": __version__,
                 "description": DESCRIPTION},
        "servers": [{"url": (base_url or "").rstrip("/") + api_root()}],
        "security": [{"bearerAuth": []}, {"sessionAuth": []}],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "responses": responses(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "An API key (djwh_...) made on the tokens "
                                              "page."},
                "sessionAuth": {"type": "apiKey", "in": "cookie",
                                "name": settings.SESSION_COOKIE_NAME,
                                "description": "A signed-in user's Django session; POST, "
                                               "PATCH and DELETE also need the CSRF token "
                                               "in the X-CSRFToken header."},
            },
        },
    }
