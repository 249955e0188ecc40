"""The `tls` check's registration and config, and an unreadable CA file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest

from checks.base import CHECKS, CheckContext
from checks.tls import TlsCheck, TlsCheckConfig
from daemon.core.clock import ManualClock
from daemon.core.models import Status


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


def make(port: int, **fields: Any) -> TlsCheck:
    data = {"type": "tls", "host": "127.0.0.1", "port": port, **fields}
    return TlsCheck("cert", TlsCheckConfig.model_validate(data))


async def test_unreadable_ca_file_is_unknown(ctx: CheckContext, tmp_path: Path) -> None:
    missing = await make(443, ca_file=str(tmp_path / "nope.pem")).run(ctx)
    assert missing.status is Status.UNKNOWN
    assert (
        missing.reason == f"cannot load ca_file {tmp_path / 'nope.pem'}: No such file or directory"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    bad = await make(443, ca_file=str(garbage)).run(ctx)
    assert bad.status is Status.UNKNOWN
    assert bad.reason.startswith(f"cannot load ca_file {garbage}: ")


def test_registered_and_config() -> None:
    assert CHECKS.get("tls") is TlsCheck
    config = TlsCheckConfig.model_validate({"type": "tls", "host": "example.com"})
    assert config.value_names() == {"days_left", "valid", "expires_at"}
    assert (config.port, config.warn_days, config.server_name) == (443, 14.0, None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": ""}, "should match pattern"),
        ({"host": "https://example.com/"}, "should match pattern"),
        ({"host": "example.com", "port": 0}, "greater than or equal to 1"),
        ({"host": "example.com", "port": 70000}, "less than or equal to 65535"),
        ({"host": "example.com", "warn_days": 0}, "greater than 0"),
        ({"host": "example.com", "verify": False}, "Extra inputs"),
    ],
)
def test_config_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        TlsCheckConfig.model_validate({"type": "tls", **fields})
