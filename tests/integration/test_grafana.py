"""Real Grafana webhook bodies (tests/fixtures/grafana, sources in its README) through
`POST /api/v1/alerts`: parsed, signed, truncated groups, and alerts beyond the bounds."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import aiohttp

from tests import paths
from tests.utils import run_daemon, wait_for

FIXTURES = paths.FIXTURES / "grafana"
SECRET = "grafana-signing-secret-0123456789abcdef"


# -- over HTTP, signed --------------------------------------------------------------------------

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  api:
    grafana: {{hmac_secret_file: {secret_file}}}
rules:
  mem:
    when: {{alert: High memory usage}}
    do: [hook]
remediations:
  hook:
    type: http
    url: {url}/hook
    body: {{incident: "{{{{ incident.id }}}}"}}
"""


def signed(raw: bytes, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """What Grafana does (grafana/alerting http/hmac.go), written out rather than borrowed."""
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), f"{stamp}:".encode() + raw, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Grafana-Alerting-Signature": mac,
        "X-Grafana-Alerting-Signature-Timestamp": stamp,
    }


async def test_grafana_signed_bodies_end_to_end(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    state, url = app_state
    path = tmp_path / "runbookd.yaml"
    secret_file = tmp_path / "grafana-secret"
    secret_file.write_text(SECRET + "\n")  # as a secret manager writes it: the newline is not part
    path.write_text(CONFIG.format(state=tmp_path / "state", url=url, secret_file=secret_file))
    async with run_daemon(path) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        raw = (FIXTURES / "docs-firing.json").read_bytes()
        headers = signed(raw)
        async with session.post(api, data=raw, headers=headers) as r:
            assert (r.status, await r.json()) == (200, {"received": 2, "matched": 1})
        async with session.post(api, data=raw, headers=headers) as r:  # the same request again
            assert r.status == 409
        await wait_for(lambda: bool(state.get("hooks")))
        refused = [
            ({"Content-Type": "application/json"}, "missing X-Grafana-Alerting-Signature header"),
            (
                signed(raw, secret="not-the-secret-0123456789abcdefgh"),
                "X-Grafana-Alerting-Signature: bad",
            ),
            (
                signed(raw, ts=int(time.time()) - 3600),
                "X-Grafana-Alerting-Signature-Timestamp: more than 300s from our clock",
            ),
            (
                signed(raw) | {"X-Grafana-Alerting-Signature-Timestamp": "soon"},
                "X-Grafana-Alerting-Signature-Timestamp: not",
            ),
        ]
        for bad, reason in refused:
            async with session.post(api, data=raw, headers=bad) as r:
                assert r.status == 401
                assert (await r.json())["error"].startswith(reason)
        raw = (FIXTURES / "docs-resolved.json").read_bytes()
        async with session.post(api, data=raw, headers=signed(raw)) as r:
            assert r.status == 200
        await wait_for(lambda: not daemon.engine.incidents)


HOSTILE_GRAFANA_HEADERS = {
    "signature not hex": {"X-Grafana-Alerting-Signature": "z" * 64},
    "signature one short": {"X-Grafana-Alerting-Signature": "0" * 63},
    "signature 6 KiB long": {"X-Grafana-Alerting-Signature": "a" * 6144},
    "signature with a prefix": {"X-Grafana-Alerting-Signature": "sha256=" + "0" * 64},
    "timestamp negative": {"X-Grafana-Alerting-Signature-Timestamp": "-5"},
    "timestamp huge": {"X-Grafana-Alerting-Signature-Timestamp": "9" * 40},
    "timestamp float overflow": {"X-Grafana-Alerting-Signature-Timestamp": "1e400"},
    "timestamp in other digits": {"X-Grafana-Alerting-Signature-Timestamp": "\u0661\u0662\u0663"},
    "timestamp empty": {"X-Grafana-Alerting-Signature-Timestamp": ""},
}


async def test_hostile_grafana_signature_headers_are_401_and_open_nothing(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    """Each bad header alone, on an otherwise well-signed request: a 401 with a JSON reason,
    no incident, and the daemon still takes the good request after them."""
    _, url = app_state
    secret_file = tmp_path / "grafana-secret"
    secret_file.write_text(SECRET)
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", url=url, secret_file=secret_file))
    raw = (FIXTURES / "docs-firing.json").read_bytes()
    async with run_daemon(path) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        for case, bad in HOSTILE_GRAFANA_HEADERS.items():
            headers = signed(raw)
            for name, value in bad.items():
                # aiohttp sends str headers as latin-1 only: other digits go as UTF-8 bytes.
                headers[name] = value.encode().decode("latin-1")
            async with session.post(api, data=raw, headers=headers) as r:
                answer = await r.json()
                assert r.status == 401, (case, answer)
                assert answer["error"].startswith("X-Grafana-Alerting-Signature"), case
        assert not daemon.engine.incidents
        async with session.post(api, data=raw, headers=signed(raw)) as r:
            assert r.status == 200
        assert len(daemon.engine.incidents) == 1
