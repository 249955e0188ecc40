"""An example config tried as config/examples/README.md says: the demo application alone
(`python -m daemon.cli.demo PORT`) and `runbookd once` against it, both real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.examples import FOLDER, write_credentials
from tests.utils import free_port, read_until

RUNBOOKD = Path(sys.executable).parent / "runbookd"


def test_once_against_the_demo_application(tmp_path: Path) -> None:
    port = free_port()
    demo = [sys.executable, "-m", "daemon.cli.demo", str(port)]
    env = os.environ | {
        "PYTHONUNBUFFERED": "1",
        "APP_URL": f"http://127.0.0.1:{port}",
        "CREDENTIALS_DIRECTORY": str(write_credentials(tmp_path / "credentials")),
    }
    with subprocess.Popen(demo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as app:
        try:
            assert f"on http://127.0.0.1:{port}" in read_until(app, "demo application on")
            example = FOLDER / "vercel.yaml"
            once = [RUNBOOKD, "once", "-c", example, "health", "tasks_api", "version"]
            done = subprocess.run(once, env=env, capture_output=True, text=True, timeout=60)
        finally:
            app.terminate()
            app.wait(timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()[1:]]
    assert rows == [["health", "OK"], ["tasks_api", "OK"], ["version", "OK"]]
