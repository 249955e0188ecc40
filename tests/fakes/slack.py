"""A Slack incoming webhook (`POST /services/T.../B.../...`), as Slack documents it.

Success is 200 with the text body "ok". Errors are plain-text strings with these codes:
400 invalid_payload / no_text / invalid_blocks, 403 action_prohibited, 404 no_service /
channel_not_found, 410 channel_is_archived, 500 rollup_error. Blocks are checked against
the Block Kit limits a client is most likely to break.

A rate limit is the one JSON answer: 429 with `{"ok": false, "error": "ratelimited"}` and a
Retry-After header in seconds, which must be waited out in full (an app that keeps sending
while limited may be disabled).
Source: https://docs.slack.dev/apis/web-api/rate-limits ("HTTP based APIs, including
incoming webhooks")
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes import Failure, FailureQueue, Received, receive, retry_after_headers

WEBHOOK_PATH = "/services/T000/B000/XXXX"
ERROR_STATUS = {
    "invalid_payload": 400,
    "no_text": 400,
    "invalid_blocks": 400,
    "action_prohibited": 403,
    "no_service": 404,
    "channel_not_found": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}
BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text"}
MAX_BLOCKS = 50


def _text_ok(text: object, limit: int) -> bool:
    return (
        isinstance(text, dict)
        and text.get("type") in ("plain_text", "mrkdwn")
        and isinstance(text.get("text"), str)
        and 0 < len(text["text"]) <= limit
    )


def _block_ok(block: object) -> bool:
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        return False
    kind = block["type"]
    if kind == "header":
        text = block.get("text")
        return _text_ok(text, 150) and isinstance(text, dict) and text["type"] == "plain_text"
    if kind == "section":
        fields = block.get("fields", [])
        if "text" not in block and not fields:
            return False
        text_ok = "text" not in block or _text_ok(block["text"], 3000)
        return text_ok and len(fields) <= 10 and all(_text_ok(f, 2000) for f in fields)
    if kind == "context":
        elements = block.get("elements")
        return isinstance(elements, list) and 0 < len(elements) <= 10
    return True


def check_message(message: object) -> str | None:
    """The error Slack would answer for `message`, or None if it would post it."""
    if not isinstance(message, dict):
        return "invalid_payload"
    blocks = message.get("blocks")
    if not message.get("text") and not blocks and not message.get("attachments"):
        return "no_text"
    if blocks is not None and (
        not isinstance(blocks, list)
        or len(blocks) > MAX_BLOCKS
        or not all(_block_ok(block) for block in blocks)
    ):
        return "invalid_blocks"
    return None


class FakeSlack:
    """`received` holds every request, `messages` those posted to the channel.

    Set `error` to a documented error string to refuse every request with it (e.g. an
    archived channel); `fail_next` queues transient 429 / 500 answers.
    """

    def __init__(self, path: str = WEBHOOK_PATH) -> None:
        self.path = path
        self.error: str | None = None
        self.received: list[Received] = []
        self.messages: list[dict[str, Any]] = []
        self.failures = FailureQueue()
        self.app = web.Application()
        self.app.router.add_post("/services/{rest:.+}", self._post)

    def fail_next(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        self.failures.add(status, count, retry_after=retry_after)

    async def _post(self, request: web.Request) -> web.Response:
        received = await receive(request)
        self.received.append(received)
        failure = self.failures.pop()
        if failure is not None:
            return self._failure(failure)
        if request.path != self.path:
            return _error("no_service")
        if self.error is not None:
            return _error(self.error)
        if request.content_type != "application/json":
            return _error("invalid_payload")
        error = check_message(received.body)
        if error is not None:
            return _error(error)
        self.messages.append(received.body)
        return web.Response(text="ok")

    def _failure(self, failure: Failure) -> web.Response:
        headers = retry_after_headers(failure)
        if failure.status == 429:
            body = {"ok": False, "error": "ratelimited"}
            return web.json_response(body, status=429, headers=headers)
        return web.Response(text="rollup_error", status=failure.status, headers=headers)


def _error(error: str) -> web.Response:
    return web.Response(text=error, status=ERROR_STATUS[error])
