"""The rendered sample issue in headless Chromium: nothing overflows at 600 px or 375 px."""

from __future__ import annotations

import pytest

from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import Recipient, Renderer
from newsletter.tokens import Tokens

from .helpers import ENV, SAMPLE_ISSUES

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("path", SAMPLE_ISSUES, ids=lambda p: p.stem)
@pytest.mark.parametrize("width", [600, 375])
def test_no_horizontal_overflow(browser, artifacts, tmp_path, path, width):
    renderer = Renderer(load_settings(environ=ENV))
    recipient = Recipient(1, "ana.lopez@example.com", "Ana López", {})
    rendered = renderer.render(load_issue(path))
    html, _ = rendered.personalise(recipient, renderer.personal_fields(recipient, 1, Tokens("k" * 20)))
    page_file = tmp_path / "issue.html"
    page_file.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(page_file.as_uri())
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        widest = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('body *')].map(e => e.getBoundingClientRect().right))"
        )
        page.screenshot(path=str(artifacts / f"email-{path.stem}-{width}px.png"), full_page=True)
    finally:
        page.close()
    assert overflow <= 0, f"page is {overflow}px wider than the {width}px viewport"
    assert widest <= width + 0.5
