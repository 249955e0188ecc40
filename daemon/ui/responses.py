"""What every console answer carries: the security headers, and redirects after a form."""

from __future__ import annotations

import hashlib

from aiohttp import web

SECURITY_HEADERS = {
    # Only this origin's own files; no inline script or style, no framing, forms post here.
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
# Pages carry CSRF tokens and incident data: never kept by a cache.
NO_STORE = {"Cache-Control": "no-store"}


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location} | SECURITY_HEADERS)


def etag_of(text: str) -> str:
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
