"""The text runbookd writes for /metrics passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from daemon.runtime.metrics import Metrics
from tests.awkward_metrics import awkward_metrics
from tests.services import missing


@pytest.fixture
def metrics() -> Metrics:
    return awkward_metrics()


def test_the_text_passes_promtool_check_metrics(metrics: Metrics) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.exposition().decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = (result.stdout + result.stderr).strip()
    assert (result.returncode, problems) == (0, ""), problems
