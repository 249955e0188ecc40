"""`runbookd once` as a process: an unknown check name is a usage error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.once import CONFIG


def test_cli_rejects_an_unknown_check_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(url="http://127.0.0.1:1", dead=1))
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "once", "-c", str(path), "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "no such check: nope (defined: api, gone)"
