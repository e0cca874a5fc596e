"""Fixtures of the browser suite: Playwright's Chromium (Debian's, from apt), a page per test.

Without Chromium or Playwright the suite is skipped on a developer's machine, but it fails on CI
(``CI`` set): scripts/bootstrap installs both, so a missing one there is a broken machine, not a
reason to pass.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from lab import CHROMIUM, CHROMIUM_ARGS


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if CHROMIUM is None:
        return "chromium is not installed (scripts/bootstrap installs it with apt)"
    return None


@pytest.fixture(scope="session")
def browser():
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser suite cannot run on CI: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="sekiops-chromium-")
    with sync_playwright() as pw:
        # a persistent context gives a fresh user-data dir of our own; Playwright never downloads a browser
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                    args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 1100})
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    p = browser.new_page()
    p.set_default_timeout(60_000)
    yield p
    p.close()
