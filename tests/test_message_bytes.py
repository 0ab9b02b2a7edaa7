"""The bytes of a campaign message are exactly what they were before the send path was
optimised (per-issue templates, pre-encoded parts): fixtures captured from the original
builder, for an accented and a hostile name, with randomness and the clock pinned.

Regenerate (only when the message format changes on purpose):
    NEWSLETTER_REGENERATE_FIXTURES=1 python -m pytest tests/test_message_bytes.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newsletter import message as message_module
from newsletter.campaigns import Composer
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import Recipient, Renderer

from .helpers import ENV, SAMPLE_ISSUE

FIXTURES = Path(__file__).resolve().parent / "fixtures"
READERS = {
    "accented": Recipient(1, "ana@example.com", "Ana López-Núñez", {"city": "Córdoba"}),
    "hostile": Recipient(
        2, "mallory@example.com", "{{7*7}}<script>alert(\"x\")</script> & 'quoted'\r\nBcc: x@evil", {}
    ),
}


@pytest.fixture
def pinned(monkeypatch):
    """Pin what legitimately varies between two builds: boundary, Message-ID and Date."""
    monkeypatch.setattr(message_module.secrets, "token_hex", lambda n=None: "0123456789abcdef01234567")
    monkeypatch.setattr(message_module, "make_msgid", lambda domain=None, **kw: f"<fixed.id@{domain}>")
    monkeypatch.setattr(message_module, "formatdate", lambda *a, **kw: "Thu, 26 Nov 2026 12:00:00 GMT")


def build(recipient: Recipient, repeat: int = 1) -> list[bytes]:
    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(SAMPLE_ISSUE))
    composer = Composer(settings)
    return [composer.compose(rendered, recipient, 7, 11).as_bytes() for _ in range(repeat)]


@pytest.mark.parametrize("who", sorted(READERS))
def test_message_bytes_identical_to_before_optimisation(pinned, who):
    fixture = FIXTURES / f"message-{who}.eml"
    if os.environ.get("NEWSLETTER_REGENERATE_FIXTURES"):
        fixture.write_bytes(build(READERS[who])[0])
    first, second = build(READERS[who], repeat=2)  # the second comes from the per-issue caches
    assert first == fixture.read_bytes()
    assert second == first
