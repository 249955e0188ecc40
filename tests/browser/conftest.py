"""A real browser for the console's tests: Debian's Chromium, launched by path through
Playwright (never `playwright install`: the machine downloads no browser build), headless,
with a fresh profile, talking to loopback only. Missing, the tests skip, or fail under CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.services import missing

CHROMIUM = os.environ.get("RUNBOOKD_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the tests save their screenshots: RUNBOOKD_SCREENSHOTS (kept as CI artifacts),
    else the test's tmp dir."""
    directory = Path(os.environ.get("RUNBOOKD_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[object]:
    """A browser context with a fresh user-data-dir; pages open in it."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        missing(f"no Chromium at {CHROMIUM} (tests/setup-services.sh installs it)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[test]')")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            await context.close()
