"""Fixtures several integration modules share."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.fakes.standin import StandIn
from tests.paths import BIN


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """The stand-in docker, systemctl and pm2 (tests/bin) first on PATH, their log and state in
    tmp_path. They start with `#!/usr/bin/env python3`: the interpreter running the tests comes
    right after them on PATH, so they run under it."""
    python_dir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", os.pathsep.join([str(BIN), python_dir, os.environ["PATH"]]))
    return StandIn(tmp_path)
