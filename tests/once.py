"""The config the `runbookd once` tests (tests/*/test_once.py) run: `api`, a JSON health check
of the URL given, and `gone`, a check of a port nothing listens on."""

from __future__ import annotations

CONFIG = """
checks:
  api:
    type: http
    url: {url}/health
    expect_json: {{status: ok}}
  gone:
    type: http
    url: http://127.0.0.1:{dead}/health
"""
