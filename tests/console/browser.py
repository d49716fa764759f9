"""Headless Chromium for the console's end-to-end tests, and where their screenshots go.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven by
Playwright for Python. Without it the tests skip with a message; with
``CI=true`` they fail instead, so a missing browser can never pass silently.
Screenshots go to a temporary folder, or to ``docs/console/`` when
``CONSOLE_SCREENSHOTS=1`` (how the committed ones were made).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
CANDIDATES = ("chromium", "chromium-browser")


def executable() -> str | None:
    explicit = os.environ.get("CONSOLE_BROWSER")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: the console's browser tests must run in CI (.ci/run installs chromium)")
    pytest.skip(f"{reason}; install Debian's chromium (apt-get install chromium) and the dev extra to run it")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser per test module: Playwright's sync API keeps an asyncio loop running on this thread while
    it is open, which tests that start their own loop (anyio, asyncio.run) must not find."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed")
    path = executable()
    if path is None:
        unavailable("no Chromium executable found")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str) -> Path:
        path = self.folder / f"{re.sub(r'[^a-z0-9-]', '-', name.lower())}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Screenshots:
    if os.environ.get("CONSOLE_SCREENSHOTS") == "1":
        return Screenshots(DOCS)
    return Screenshots(tmp_path_factory.mktemp("console-screenshots"))
