"""Headless Chromium for the proof sheet and the contrast check: Debian's browser, driven by Playwright.

Never a downloaded browser build: Playwright is pointed at the `chromium` on PATH. Pages are
loaded with every network request refused, so a rendering is offline, repeatable and shows
what a reader with images blocked sees.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.util import find_spec
from typing import Any, TypeVar

from .errors import NewsletterError

# The same flags the browser tests use (tests/conftest.py CHROMIUM_ARGS).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHONE_WIDTH = 375
DESKTOP_WINDOW = 1280
T = TypeVar("T")


class BrowserUnavailable(NewsletterError):
    """Chromium or Playwright is missing, so nothing can be drawn or measured."""


def chromium_available() -> bool:
    """True where both Playwright and a `chromium` executable are installed."""
    return bool(shutil.which("chromium")) and find_spec("playwright") is not None


def require_chromium() -> str:
    """The Chromium executable, or a one-line error naming what to install."""
    if find_spec("playwright") is None:
        raise BrowserUnavailable(
            "Playwright is not installed, so proofs and contrast checks cannot run",
            hint="pip install -e '.[proofs]'",
        )
    executable = shutil.which("chromium")
    if not executable:
        raise BrowserUnavailable(
            "Chromium is not installed, so proofs and contrast checks cannot run",
            hint="apt-get install -y chromium",
        )
    return executable


def with_browser(work: Callable[[Any], T]) -> T:
    """Run work(browser) against a freshly launched headless Chromium and close it.

    Playwright's sync API refuses to start in a thread that already runs an event loop
    (another Playwright session, an async server), so the browser lives in its own thread.
    """
    executable = require_chromium()

    def run() -> T:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                try:
                    return work(browser)
                finally:
                    browser.close()
        except PlaywrightError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BrowserUnavailable(f"Chromium failed: {first}", hint=f"check that {executable} starts") from None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium") as pool:
        return pool.submit(run).result()


@contextmanager
def offline_page(browser: Any, width: int, dark: bool, height: int = 900) -> Iterator[Any]:
    """A page of the given window width and colour scheme that refuses every network request."""
    context = browser.new_context(
        viewport={"width": width, "height": height},
        color_scheme="dark" if dark else "light",
        java_script_enabled=True,
    )
    context.route("**/*", _refuse_network)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _refuse_network(route: Any) -> None:
    if route.request.url.startswith("data:"):
        route.continue_()
    else:
        route.abort()
