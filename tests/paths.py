"""Where the tests' files are, so a test module finds them from whichever tier folder it is in."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# Data the tiers share, beside the helper modules.
BAD_CONFIGS = TESTS / "bad_configs"
HOSTILE_CONFIGS = TESTS / "hostile_configs"
FIXTURES = TESTS / "fixtures"
PLUGINS = TESTS / "plugins"  # Nagios plugins (shell scripts)
BIN = TESTS / "bin"  # stand-ins for docker, systemctl and pm2, put first on PATH
