"""End to end in headless Chromium against `newsletter serve`, with mail through a real SMTP server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from newsletter.db import Database
from newsletter.subscribers import SubscriberList

from .conftest import SECRET
from .helpers import ENV, SAMPLE_ISSUE, subscriber_status
from .smtp_server import SMTPServer, free_port

pytestmark = pytest.mark.browser
WIDTHS = (375, 1280)


@pytest.fixture
def stack(browser, sqlite_url, workdir, monkeypatch):
    """aiosmtpd + `newsletter serve` as a real process, sharing one SQLite database."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with SMTPServer() as smtp:
        env = {
            **ENV,
            "NEWSLETTER_SECRET_KEY": SECRET,
            "NEWSLETTER_DATABASE_URL": sqlite_url,
            "NEWSLETTER_ADAPTER": "smtp",
            "NEWSLETTER_SMTP_URL": smtp.url,
            "NEWSLETTER_BASE_URL": base_url,
            "NEWSLETTER_RETRY_BASE_DELAY": "0.05",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        server = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_for(f"{base_url}/subscribe")
            yield {"base": base_url, "smtp": smtp, "url": sqlite_url}
        finally:
            server.terminate()
            server.wait(timeout=10)


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def shoot_current(page, artifacts, name: str) -> None:
    """Screenshots of the page as it is (after a POST), at every width."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(artifacts / f"web-{name}-{width}px.png"), full_page=True)


def shoot(browser, artifacts, url: str, name: str) -> None:
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(url)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.screenshot(path=str(artifacts / f"web-{name}-{width}px.png"), full_page=True)
        page.close()
        assert overflow <= 0, f"{name} overflows at {width}px"


def test_unsubscribe_from_a_sent_message(stack, browser, artifacts, cli_for_stack):
    db = Database(stack["url"])
    SubscriberList(db, SECRET).add("ana@example.com", name="Ana", tags=("monthly",))
    SubscriberList(db, SECRET).add("ben@example.com", name="Ben", tags=("monthly",))
    db.dispose()
    cli_for_stack("send", str(SAMPLE_ISSUE), "--yes", "--insecure-base-url")
    message = next(m for m in stack["smtp"].handler.messages if "ana@example.com" in str(m["To"]))
    html = message.get_body(("html",)).get_content()
    link = re.search(r'<a href="([^"]+/u/[^"]+)"[^>]*>Unsubscribe</a>', html).group(1)
    assert link.startswith(stack["base"])

    shoot(browser, artifacts, link, "unsubscribe-confirm")  # a GET: safe to load again and again
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(link)
    assert page.get_by_role("heading").inner_text().startswith("Unsubscribe ana@example.com")
    assert subscriber_status(stack["url"], "ana@example.com") == "active"
    page.get_by_role("button", name="Unsubscribe").click()
    page.wait_for_selector("text=You are unsubscribed")
    shoot_current(page, artifacts, "unsubscribed")
    page.close()
    assert subscriber_status(stack["url"], "ana@example.com") == "unsubscribed"
    shoot(browser, artifacts, link, "unsubscribe-already")

    stack["smtp"].handler.messages.clear()
    cli_for_stack("send", str(SAMPLE_ISSUE), "--yes", "--again", "--insecure-base-url")
    assert stack["smtp"].handler.received_by() == {"ben@example.com": 1}

    shoot(browser, artifacts, f"{stack['base']}/archive", "archive")
    shoot(browser, artifacts, f"{stack['base']}/archive/2026-12-understanding-anxiety", "archive-issue")
    shoot(browser, artifacts, f"{stack['base']}/u/forged.token", "error")


def test_signup_confirm_and_preferences(stack, browser, artifacts):
    shoot(browser, artifacts, f"{stack['base']}/subscribe", "subscribe")
    shoot(browser, artifacts, f"{stack['base']}/subscribe/embed", "subscribe-embed")
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(f"{stack['base']}/subscribe")
    page.get_by_label("Email address").fill("new.reader@example.com")
    page.get_by_label("First name").fill("Nia")
    page.locator("#consent").check()
    page.keyboard.press("Enter")  # the whole form works from the keyboard
    page.wait_for_selector("text=Check your inbox")
    shoot_current(page, artifacts, "check-inbox")
    page.set_viewport_size({"width": 375, "height": 800})

    deadline = time.monotonic() + 10
    while not stack["smtp"].handler.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    (confirmation,) = stack["smtp"].handler.messages  # sent by serve's queue, off the request path
    assert subscriber_status(stack["url"], "new.reader@example.com") == "pending"
    assert confirmation["To"].addresses[0].addr_spec == "new.reader@example.com"
    link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/[\w.\-]+)", confirmation.get_body(("plain",)).get_content())
    page.goto(link.group(1))
    page.wait_for_selector("text=Confirm your subscription")
    shoot_current(page, artifacts, "confirm")
    assert subscriber_status(stack["url"], "new.reader@example.com") == "pending"  # opening the link is not enough
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.wait_for_selector("text=You are subscribed")
    shoot_current(page, artifacts, "confirmed")
    assert subscriber_status(stack["url"], "new.reader@example.com") == "active"

    page.get_by_role("link", name="Choose your topics").click()
    page.wait_for_selector("text=Your newsletter preferences")
    preferences_url = page.url
    page.get_by_label("Caregivers").check()
    page.get_by_role("button", name="Save preferences").click()
    page.wait_for_selector("text=Your preferences are saved")
    page.close()
    shoot(browser, artifacts, preferences_url, "preferences")
    db = Database(stack["url"])
    assert SubscriberList(db, SECRET).show("new.reader@example.com")["tags"] == ["caregivers", "monthly"]
    db.dispose()


@pytest.fixture
def cli_for_stack(stack):
    from .conftest import Cli

    return Cli(stack["url"])
