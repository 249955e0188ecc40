"""systemd_restart and pm2_restart as their tests (tests/*/test_remediation_service.py) build
them, on the stand-in systemctl and pm2 (tests/bin) when given one."""

from __future__ import annotations

from typing import Any

from remediations.service import Pm2Restart, Pm2RestartConfig, SystemdRestart, SystemdRestartConfig
from tests.fakes.standin import StandIn, with_standin


def systemd(standin: StandIn | None = None, **config: Any) -> SystemdRestart:
    data = {"type": "systemd_restart", "unit": "web.service", **with_standin(standin, config)}
    return SystemdRestart("restart-web", SystemdRestartConfig.model_validate(data))


def pm2(standin: StandIn | None = None, **config: Any) -> Pm2Restart:
    data = {"type": "pm2_restart", "name": "api", **with_standin(standin, config)}
    return Pm2Restart("restart-api", Pm2RestartConfig.model_validate(data))
