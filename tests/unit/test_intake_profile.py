"""bench/intake_profile.py's breakdown: each busy sample counted once, to the innermost part of
the intake path it is in; samples ending in the loop's run are idle."""

from __future__ import annotations

from bench.intake_profile import breakdown, part

RUN = "/py/asyncio/runners.py:Runner.run"
HANDLER = f"{RUN};/x/aiohttp/web_protocol.py:RequestHandler._handle_request"


def test_the_innermost_part_counts() -> None:
    to_alerts = f"{HANDLER};/r/daemon/engine/alerts.py:AlertmanagerWebhook.to_alerts"
    assert part(f"{to_alerts};<string>:__create_fn__.<locals>.__init__".split(";")) == (
        "conversion to engine alerts"
    )
    validator = f"{HANDLER};/p/pydantic/main.py:BaseModel.model_validate_json"
    assert part(f"{validator};/r/daemon/engine/alerts.py:_sent_time".split(";")) == (
        "validation (pydantic, sent times)"
    )
    assert part(HANDLER.split(";")) == "aiohttp: protocol and app"


def test_shares_of_the_busy_samples() -> None:
    collapsed = f"{RUN} 6\n{HANDLER} 3\n{HANDLER};/x/aiohttp/web_response.py:Response.write 1\n"
    result = breakdown(collapsed)
    assert (result["busy_samples"], result["idle_samples"]) == (4, 6)
    assert result["parts_pct"] == {
        "aiohttp: protocol and app": 75.0,
        "aiohttp: response and writer": 25.0,
    }
