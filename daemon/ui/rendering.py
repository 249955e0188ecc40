"""The console's Jinja2 environment, built once on first use: templates from the package,
every value escaped (HTML, and controls shown as \\x1b or \\u202e), an undefined name an
error rather than an empty string."""

from __future__ import annotations

import functools
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from daemon.core import values
from daemon.core.text import visible
from daemon.ui.spark import sparkline


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("daemon.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_visible,
    )
    env.filters["utc"] = values.utc
    env.filters["span"] = values.span
    env.filters["value"] = values.shown
    env.filters["pairs"] = values.pairs
    env.filters["measure"] = values.measure_of
    env.filters["spark"] = sparkline
    env.filters["seconds"] = values.duration
    return env


def _visible(v: Any) -> Any:
    # Markup is the console's own HTML (a sparkline); every other string came from outside.
    return visible(v) if isinstance(v, str) and not isinstance(v, Markup) else v


def render(template: str, context: dict[str, Any]) -> str:
    return environment().get_template(template).render(context)


def block(template: str, name: str, context: dict[str, Any]) -> str:
    """One block of a page (its "main"), rendered alone: a live page's refreshed part."""
    page = environment().get_template(template)
    return "".join(page.blocks[name](page.new_context(context)))


def html(template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=render(template, context), status=status, content_type="text/html")
