"""PagerDuty Events API v2 (`POST /v2/enqueue`), as documented at
https://developer.pagerduty.com/docs/events-api-v2/trigger-events/ and its overview page,
and its Change Events (`POST /v2/change/enqueue`), documented at
https://developer.pagerduty.com/docs/events-api-v2/send-change-events/.

Accepted events answer 202 {"status": "success", "message": "Event processed",
"dedup_key": ...}; invalid ones 400 {"status": "invalid event", "message": "Event object is
invalid", "errors": [...]}, with error strings modelled on those PagerDuty returns.
A summary over 1024 characters is refused here, which is stricter than needed but proves
the client truncates.

A change event needs `routing_key` and `payload.summary` (at most 1024 characters);
`payload.source`, `payload.timestamp`, `payload.custom_details` and `links` are optional.
It has no event_action, dedup_key or severity. Accepted ones answer 202 {"status":
"success", "message": "Change event processed"} (as PagerDuty's Go client's tests record
it; the page itself only points to the overview's response codes). Refusals use the same
400 body as alerts, since the documentation does not give their wording.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.fakes import Failure, FailureQueue, Received, receive, retry_after_headers

ROUTING_KEY_LENGTH = 32
ROUTING_KEY = "R0ut1ngKey0123456789abcdefABCDEF"  # a valid one, for the tests to send
assert len(ROUTING_KEY) == ROUTING_KEY_LENGTH
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
DEDUP_KEY_LIMIT = 255
SUMMARY_LIMIT = 1024
THROTTLED = "Requests for this service are arriving too quickly. Please retry later."


def _blank(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


def _routing_key_errors(key: object) -> list[str]:
    if _blank(key):
        return ["'routing_key' is missing or blank"]
    assert isinstance(key, str)
    errors = []
    if len(key) != ROUTING_KEY_LENGTH:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    if not key.isalnum():
        errors.append("'routing_key' cannot contain non-alphanumeric characters.")
    return errors


def _dedup_key_errors(event: dict[str, Any]) -> list[str]:
    key = event.get("dedup_key")
    if key is None:
        # Only a trigger may leave it out: PagerDuty then generates one.
        if event.get("event_action") == "trigger":
            return []
        return ["'dedup_key' is missing or blank"]
    if _blank(key):
        return ["'dedup_key' is missing or blank"]
    if len(key) > DEDUP_KEY_LIMIT:
        return ["'dedup_key' is too long (maximum is 255 characters)"]
    return []


def _payload_errors(payload: object) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or invalid"]
    errors = [
        f"'payload.{name}' is missing or blank"
        for name in ("summary", "source", "severity")
        if _blank(payload.get(name))
    ]
    severity = payload.get("severity")
    if isinstance(severity, str) and severity and severity not in SEVERITIES:
        errors.append("'payload.severity' is invalid (must be critical, error, warning or info)")
    return errors + _optional_payload_errors(payload)


def _change_payload_errors(payload: object) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or invalid"]
    errors = []
    if _blank(payload.get("summary")):
        errors.append("'payload.summary' is missing or blank")
    if "source" in payload and not isinstance(payload["source"], str):
        errors.append("'payload.source' must be a string")
    return errors + _optional_payload_errors(payload)


def _optional_payload_errors(payload: dict[str, Any]) -> list[str]:
    """Checks both event kinds make of the fields they share."""
    errors = []
    summary = payload.get("summary")
    if isinstance(summary, str) and len(summary) > SUMMARY_LIMIT:
        errors.append("'payload.summary' is too long (maximum is 1024 characters)")
    if "timestamp" in payload and not _iso8601(payload["timestamp"]):
        errors.append("'payload.timestamp' is not a valid ISO 8601 timestamp")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


def _links_errors(links: object) -> list[str]:
    if not isinstance(links, list) or not all(
        isinstance(link, dict) and not _blank(link.get("href")) for link in links
    ):
        return ["'links' must be a list of objects with an 'href'"]
    return []


def _iso8601(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def validate_event(event: object) -> list[str]:
    """The reasons PagerDuty would refuse `event`; empty if it would accept it."""
    if not isinstance(event, dict):
        return ["Event object is not valid JSON"]
    errors = _routing_key_errors(event.get("routing_key"))
    action = event.get("event_action")
    if action not in EVENT_ACTIONS:
        errors.append("'event_action' is invalid (must be trigger, acknowledge or resolve)")
    errors += _dedup_key_errors(event)
    if action == "trigger":
        errors += _payload_errors(event.get("payload"))
    if "links" in event:
        errors += _links_errors(event["links"])
    return errors


def validate_change_event(event: object) -> list[str]:
    """The reasons PagerDuty would refuse change event `event`; empty if it would accept it."""
    if not isinstance(event, dict):
        return ["Event object is not valid JSON"]
    errors = _routing_key_errors(event.get("routing_key"))
    errors += _change_payload_errors(event.get("payload"))
    if "links" in event:
        errors += _links_errors(event["links"])
    return errors


def _echo(routing_key: str, at: int) -> web.Response:
    """400 with `routing_key` starting at character `at` of the body, text after it."""
    head = '{"status": "invalid event", "message": "'
    text = head + "x" * max(0, at - len(head)) + routing_key + ' is not a known key"}'
    return web.Response(status=400, text=text, content_type="application/json")


def _invalid(errors: list[str]) -> web.Response:
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    return web.json_response(body, status=400)


class FakePagerDuty:
    """`app` serves POST /v2/enqueue and /v2/change/enqueue; `received` holds every request,
    `events` the accepted alert events and `change_events` the accepted change events.
    `fail_next` applies to whichever request comes next."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.events: list[dict[str, Any]] = []
        self.change_events: list[dict[str, Any]] = []
        self.failures = FailureQueue()
        # Set: every event is refused with a 400 whose body repeats its routing key from
        # this character on (a provider echoing what it was sent, as some do).
        self.echo_routing_key_at: int | None = None
        self.app = web.Application()
        self.app.router.add_post("/v2/enqueue", self._enqueue)
        self.app.router.add_post("/v2/change/enqueue", self._change_enqueue)

    def fail_next(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        self.failures.add(status, count, retry_after=retry_after)

    async def _enqueue(self, request: web.Request) -> web.Response:
        received = await receive(request)
        self.received.append(received)
        failure = self.failures.pop()
        if failure is not None:
            return self._failure(failure)
        if self.echo_routing_key_at is not None:
            return _echo(str(received.body.get("routing_key")), self.echo_routing_key_at)
        errors = validate_event(received.body)
        if errors:
            return _invalid(errors)
        event: dict[str, Any] = received.body
        self.events.append(event)
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        body = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        return web.json_response(body, status=202)

    async def _change_enqueue(self, request: web.Request) -> web.Response:
        received = await receive(request)
        self.received.append(received)
        failure = self.failures.pop()
        if failure is not None:
            return self._failure(failure)
        errors = validate_change_event(received.body)
        if errors:
            return _invalid(errors)
        self.change_events.append(received.body)
        body = {"status": "success", "message": "Change event processed"}
        return web.json_response(body, status=202)

    def _failure(self, failure: Failure) -> web.Response:
        message = THROTTLED if failure.status == 429 else "Internal server error"
        body = {
            "status": "throttle event" if failure.status == 429 else "error",
            "message": message,
        }
        return web.json_response(body, status=failure.status, headers=retry_after_headers(failure))
