"""Request and answer bodies: JSON, strictly, both ways.

A body with NaN, Infinity or a number beyond a double's range is refused, and an answer that
would hold one is an internal error rather than invalid JSON. Bad input is a 4xx whose reason
names the field."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

from daemon.api.auth import too_large
from daemon.api.servers import HTTP_LIMITS, HttpLimits

# NaN and the infinities are not JSON (RFC 8259): never written, whatever a store holds.
# One encoder for every answer (json.dumps with an option builds a new one each time).
strict_dumps = json.JSONEncoder(allow_nan=False).encode

M = TypeVar("M", bound=BaseModel)


class HTTPClientClosedRequest(web.HTTPClientError):
    """The client went away before its request was whole (nginx's 499): its fault, not ours,
    counted as a 4xx. Nobody reads the answer."""

    status_code = 499


async def read_body(request: web.Request) -> bytes:
    """The raw body, at most the app's max_body (aiohttp counts as it reads chunked bodies),
    arrived within the body timeout."""
    limits = request.app.get(HTTP_LIMITS) or HttpLimits()
    try:
        if request.content.is_eof():
            # All of it arrived with the head (as a webhook's small body does): taken from the
            # buffer as it is, without read()'s loop and copy or a timer. Bounded as read()
            # bounds it: a compressed body is counted inflated.
            body = request.content.read_nowait()
            if request.client_max_size and len(body) > request.client_max_size:
                raise web.HTTPRequestEntityTooLarge(request.client_max_size, len(body))
            return body
        async with asyncio.timeout(limits.body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(request.client_max_size) from None
    except TimeoutError:
        reason = f"body not received within {limits.body_timeout:g}s"
        raise web.HTTPRequestTimeout(reason=reason) from None
    except ConnectionError:  # the client closed or reset the connection mid-body
        reason = "the client closed the connection before the body was complete"
        raise HTTPClientClosedRequest(reason=reason) from None
    except RequestPayloadError:  # broken chunked framing or Content-Encoding
        raise web.HTTPBadRequest(reason="body framing or encoding is malformed") from None


def require_json(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="expected Content-Type: application/json")


NOT_FINITE = "body: NaN, Infinity and numbers beyond ±1.79e308 are not JSON numbers we accept"
# Every digit as 0, E as e: a number beyond a double (10^309) has an exponent of 3 digits
# ("0e000", "0e+000") or, with at most 99, an integer part of 200 digits or more. Cheap to
# test (a few ms for a MiB, a tenth of validating it); only a body that may hold one is parsed
# again with the exact checks.
_NUMBER_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")
_MAX_INT_DIGITS = len(str(int(sys.float_info.max)))


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf
        raise _NotFinite(text)
    return value


def _finite_int(text: str) -> int:
    # Checked on the text first: int() of a long digit string is slow, and refused at 4300.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or abs(value := int(text)) > sys.float_info.max:
        raise _NotFinite(text)
    return value


def _strict_loads(body: bytes | str) -> Any:
    return json.loads(
        body,
        parse_constant=_refuse_constant,
        parse_float=_finite_float,
        parse_int=_finite_int,
    )


def parse_json(body: bytes) -> Any:
    """A JSON body, every number in it finite, or 400."""
    try:
        return _strict_loads(body)
    except _NotFinite:
        raise web.HTTPBadRequest(reason=NOT_FINITE) from None
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise web.HTTPBadRequest(reason="body is not valid JSON") from None


def _may_not_be_finite(body: bytes) -> bool:
    if b"NaN" in body or b"Infinity" in body:
        return True
    shape = body.translate(_NUMBER_SHAPE)
    return b"0e000" in shape or b"0e+000" in shape or b"0" * 200 in shape


def refuse_non_finite(body: bytes) -> None:
    """400 if `body` holds NaN, an infinity or a number beyond a double; fast for the others."""
    if _may_not_be_finite(body):
        parse_json(body)


def _printable(text: str) -> str:
    # Field names come from the caller; a reason must stay one plain line.
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request body as `model`, or a 4xx with a JSON reason naming the field."""
    require_json(request)
    body = await read_body(request)
    refuse_non_finite(body)
    return parse_model(body, model)


def parse_model(body: bytes, model: type[M]) -> M:
    """A body already read and checked for non-finite numbers, as `model`, or 400 naming the
    field."""
    try:
        # Parsed and validated in one pass by pydantic-core: json.loads and validating the
        # dicts it built took a tenth of the daemon's CPU under a stream of webhooks.
        return model.model_validate_json(body)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise web.HTTPBadRequest(reason="body is not valid JSON") from None
        raise web.HTTPBadRequest(reason=problem(exc)) from None


def problem(exc: ValidationError) -> str:
    """The first thing wrong, for a person: "duration: must be at least 1m", without
    pydantic's "Value error, " of a validator's own message."""
    first = exc.errors()[0]
    where = _printable(".".join(str(p) for p in first["loc"])) or "body"
    message = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{where}: {message}"


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """`web.json_response` that refuses to write NaN or an infinity (ValueError: a 500)."""
    return web.json_response(data, status=status, headers=headers, dumps=strict_dumps)


def json_error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": reason}, status=status, headers=headers)
