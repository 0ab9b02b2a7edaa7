"""Proof sheets: the message as readers will see it, on one page, before anyone sends it.

Headless Chromium draws the personalised message four times, offline with images blocked:
on a 375 px phone and in a 1280 px desktop window (cropped to the 600 px message and a
little of the window around it), each in light and in dark mode (`prefers-color-scheme:
dark` emulated). The sheet puts those four screenshots side by side with the inbox line
(From name, subject and preheader, cut where Gmail's phone list cuts them), the plain-text
part and the WCAG contrast check of every text element. It is written as one HTML page
(screenshots embedded, so the file can be passed around alone) and one PNG of that page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from email.utils import parseaddr
from html import escape
from pathlib import Path
from typing import Any

from .chromium import DESKTOP_WINDOW, PHONE_WIDTH, offline_page, with_browser
from .config import Settings
from .content import Issue, load_issue
from .contrast import MODES, TextContrast, add_unique, failures, findings_from, measure_page
from .errors import NewsletterError
from .lint import Finding
from .render import Recipient, RenderedIssue, Renderer
from .tokens import Tokens

SHEET_WIDTH = 1280
MESSAGE_WIDTH = 600
DESKTOP_CROP = 616  # the 600 px message and 8 px of the window each side
PANELS = (  # name, window width, mode
    ("phone-light", PHONE_WIDTH, "light"),
    ("phone-dark", PHONE_WIDTH, "dark"),
    ("desktop-light", DESKTOP_WINDOW, "light"),
    ("desktop-dark", DESKTOP_WINDOW, "dark"),
)
# Gmail's phone list row: 16 px margins, a 40 px avatar, one line each for sender, subject
# and snippet, 14 px Roboto (Liberation Sans/Arial metrics where Roboto is not installed).
INBOX_CSS = """
.inbox { width: 375px; box-sizing: border-box; display: flex; gap: 12px; padding: 12px 16px;
  background: #ffffff; font-family: Roboto, Arial, 'Liberation Sans', sans-serif; color: #1f1f1f;
  border: 1px solid #d0d7de; border-radius: 8px; }
.inbox .avatar { flex: 0 0 40px; height: 40px; border-radius: 50%; background: #1f6f78; color: #ffffff;
  font-size: 18px; line-height: 40px; text-align: center; }
.inbox .lines { flex: 1 1 auto; min-width: 0; }
.inbox .top { display: flex; justify-content: space-between; gap: 8px; }
.inbox .from { font-size: 16px; font-weight: bold; }
.inbox .when { font-size: 12px; font-weight: bold; color: #1f1f1f; }
.inbox .one-line { overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.inbox .subject { font-size: 14px; font-weight: bold; }
.inbox .snippet { font-size: 14px; color: #5f6368; }
"""
# How many characters of an ellipsised one-line element a reader sees.
VISIBLE_CHARS_SCRIPT = """(selector) => {
  const element = document.querySelector(selector);
  const text = element.textContent;
  if (element.scrollWidth <= element.clientWidth) return text.length;
  const probe = document.createElement('span');
  probe.textContent = '\\u2026';
  element.appendChild(probe);
  const ellipsis = probe.getBoundingClientRect().width;
  element.removeChild(probe);
  const node = element.firstChild;
  const room = element.clientWidth - ellipsis;
  const range = document.createRange();
  let low = 0, high = text.length;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    range.setStart(node, 0);
    range.setEnd(node, middle);
    if (range.getBoundingClientRect().width <= room) low = middle; else high = middle - 1;
  }
  return low;
}"""


@dataclass
class InboxLine:
    """What the inbox list shows before the message is opened."""

    from_name: str
    subject: str
    preheader: str
    subject_shown: int = 0  # characters visible on a phone
    preheader_shown: int = 0

    def shown(self, text: str, count: int) -> str:
        return text if count >= len(text) else text[:count].rstrip() + "\u2026"

    def summary(self) -> str:
        return (
            f"{self.from_name} | {self.shown(self.subject, self.subject_shown)} | "
            f"{self.shown(self.preheader, self.preheader_shown)}"
        )


@dataclass
class Panel:
    name: str
    caption: str
    png: bytes
    width: int
    height: int


@dataclass
class ProofSheet:
    html_path: Path
    png_path: Path
    width: int
    height: int
    inbox: InboxLine
    measured: list[TextContrast]
    findings: list[Finding]
    # Where each screenshot sits in the PNG: name -> (x, y, width, height), in PNG pixels.
    panels: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


def inbox_line(settings: Settings, rendered: RenderedIssue) -> InboxLine:
    name, address = parseaddr(settings.from_address)
    preheader = " ".join(rendered.preheader.split())
    return InboxLine(from_name=name or address, subject=rendered.subject, preheader=preheader)


@dataclass
class _Drawn:
    inbox: InboxLine
    measured: list[TextContrast]
    findings: list[Finding]
    page: str  # the sheet's HTML


def _render(settings: Settings, issue_path: str | Path, recipient: Recipient) -> tuple[Issue, RenderedIssue, str, str]:
    issue = load_issue(issue_path)
    renderer = Renderer(settings)
    rendered = renderer.render(issue)
    fields = renderer.personal_fields(recipient, None, Tokens(settings.secret_key or "proofs-only"))
    html, text = rendered.personalise(recipient, fields)
    return issue, rendered, html, text


def _draw(browser: Any, settings: Settings, issue: Issue, rendered: RenderedIssue, html: str, text: str) -> _Drawn:
    panels, measured = _draw_panels(browser, html)
    inbox = inbox_line(settings, rendered)
    _measure_inbox(browser, inbox)
    findings = findings_from(measured, issue, issue.slug)
    return _Drawn(inbox, measured, findings, sheet_page(issue, inbox, panels, text, measured, findings))


def make_proof_sheet(settings: Settings, issue_path: str | Path, recipient: Recipient, directory: Path) -> ProofSheet:
    """Render the issue for this recipient and write DIRECTORY/SLUG.html and DIRECTORY/SLUG.png."""
    issue, rendered, html, text = _render(settings, issue_path, recipient)
    directory.mkdir(parents=True, exist_ok=True)
    html_path = directory / f"{issue.slug}.html"
    png_path = directory / f"{issue.slug}.png"

    def draw(browser: Any) -> ProofSheet:
        drawn = _draw(browser, settings, issue, rendered, html, text)
        html_path.write_text(drawn.page, encoding="utf-8")
        width, height, rects = _screenshot_sheet(browser, drawn.page, png_path)
        return ProofSheet(html_path, png_path, width, height, drawn.inbox, drawn.measured, drawn.findings, rects)

    return with_browser(draw)


def proof_sheet_html(settings: Settings, issue_path: str | Path, recipient: Recipient) -> str:
    """The sheet as one HTML page, for `preview --serve`; a short page saying why where it cannot be drawn."""
    try:
        issue, rendered, html, text = _render(settings, issue_path, recipient)
        return with_browser(lambda browser: _draw(browser, settings, issue, rendered, html, text).page)
    except NewsletterError as exc:
        hint = f"<p>{escape(exc.hint)}</p>" if exc.hint else ""
        return f"<!DOCTYPE html><title>No proof sheet</title><p>No proof sheet: {escape(str(exc))}</p>{hint}"


# `preview --serve` adds this to the page it serves (never to the message itself).
PREVIEW_LINK = (
    '<a href="/proofs" style="position:fixed;right:12px;bottom:12px;padding:6px 10px;background:#1f1f1f;'
    'color:#ffffff;font:13px Arial,sans-serif;border-radius:4px;text-decoration:none;z-index:9999">'
    "Proof sheet</a>"
)


def _draw_panels(browser: Any, html: str) -> tuple[list[Panel], list[TextContrast]]:
    panels: list[Panel] = []
    seen: dict[tuple, TextContrast] = {}
    for name, width, mode in PANELS:
        with offline_page(browser, width, dark=mode == "dark") as page:
            page.set_content(html, wait_until="load")
            add_unique(seen, measure_page(page, mode))
            height = page.evaluate("() => Math.ceil(document.documentElement.scrollHeight)")
            if width == PHONE_WIDTH:
                png = page.screenshot(full_page=True)
                crop_width, caption = width, f"Phone, {width} px, {mode}"
            else:
                left = (width - DESKTOP_CROP) // 2
                png = page.screenshot(full_page=True, clip={"x": left, "y": 0, "width": DESKTOP_CROP, "height": height})
                crop_width = DESKTOP_CROP
                caption = f"Desktop, {MESSAGE_WIDTH} px message in a {width} px window, {mode}"
            panels.append(Panel(name, f"{caption}, images blocked", png, crop_width, height))
    return panels, list(seen.values())


def _measure_inbox(browser: Any, inbox: InboxLine) -> None:
    with offline_page(browser, PHONE_WIDTH, dark=False) as page:
        page.set_content(f"<!DOCTYPE html><html><head><style>{INBOX_CSS}</style></head><body>{inbox_html(inbox)}")
        inbox.subject_shown = page.evaluate(VISIBLE_CHARS_SCRIPT, ".inbox .subject")
        inbox.preheader_shown = page.evaluate(VISIBLE_CHARS_SCRIPT, ".inbox .snippet")


def inbox_html(inbox: InboxLine) -> str:
    initial = escape((inbox.from_name[:1] or "?").upper())
    return (
        f'<div class="inbox"><div class="avatar">{initial}</div><div class="lines">'
        f'<div class="top"><span class="from one-line">{escape(inbox.from_name)}</span>'
        f'<span class="when">9:41 AM</span></div>'
        f'<div class="subject one-line">{escape(inbox.subject)}</div>'
        f'<div class="snippet one-line">{escape(inbox.preheader)}</div></div></div>'
    )


SHEET_CSS = """
body { margin: 0; padding: 16px; width: 1248px; background: #e9edf0; color: #1f1f1f;
  font-family: Arial, 'Liberation Sans', sans-serif; font-size: 13px; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
.meta { color: #4a5560; margin: 0 0 14px 0; }
.row { display: flex; gap: 16px; align-items: flex-start; margin-bottom: 16px; }
figure { margin: 0; }
figcaption { font-weight: bold; margin: 0 0 6px 0; }
figure img { display: block; border: 1px solid #b8c2cc; }
.side { flex: 1 1 auto; min-width: 0; }
.box { background: #ffffff; border: 1px solid #b8c2cc; border-radius: 6px; padding: 10px 12px; margin-bottom: 14px; }
.box h2 { font-size: 14px; margin: 0 0 8px 0; }
.pass { color: #1d6b34; font-weight: bold; }
.fail { color: #a3261b; font-weight: bold; }
.swatch { display: inline-block; width: 10px; height: 10px; border: 1px solid #555; vertical-align: middle; }
ul.findings { margin: 6px 0 0 0; padding-left: 16px; }
ul.findings li { margin-bottom: 4px; }
.box.text { padding: 8px; }
pre.text { font-family: 'DejaVu Sans Mono', monospace; font-size: 10px; line-height: 1.35; margin: 0;
  white-space: pre; overflow: hidden; }
"""


def sheet_page(
    issue: Issue,
    inbox: InboxLine,
    panels: list[Panel],
    text: str,
    measured: list[TextContrast],
    findings: list[Finding],
) -> str:
    by_name = {panel.name: panel for panel in panels}
    failing = failures(measured)
    counted = {mode: sum(item.mode == mode for item in measured) for mode in MODES}
    if failing:
        items = "".join(
            f"<li>{_swatch(item.color)} on {_swatch(item.background)} {escape(item.describe())}"
            f" <span class='meta'>({escape(finding.location)})</span></li>"
            for item, finding in zip(failing, findings, strict=True)
        )
        contrast = f"<p class='fail'>{len(failing)} text element(s) below WCAG AA</p><ul class='findings'>{items}</ul>"
    else:
        contrast = (
            f"<p class='pass'>Every text element passes WCAG AA: {counted['light']} in light mode, "
            f"{counted['dark']} in dark mode (4.5:1, 3:1 for large text).</p>"
        )
    shown = (
        f"A phone shows {min(inbox.subject_shown, len(inbox.subject))} of {len(inbox.subject)} subject characters "
        f"and {min(inbox.preheader_shown, len(inbox.preheader))} of {len(inbox.preheader)} preheader characters."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="color-scheme" content="light">
<title>Proof sheet: {escape(issue.subject)}</title>
<style>{SHEET_CSS}{INBOX_CSS}</style></head>
<body>
<h1>Proof sheet: {escape(issue.subject)}</h1>
<p class="meta">{escape(issue.slug)} &middot; drawn by headless Chromium, offline, images blocked</p>
<div class="row">
{_figure(by_name["phone-light"])}
{_figure(by_name["phone-dark"])}
<div class="side">
<div class="box"><h2>Inbox line (Gmail, phone)</h2>{inbox_html(inbox)}<p class="meta">{escape(shown)}</p></div>
<div class="box"><h2>Contrast (WCAG AA, light and dark mode)</h2>{contrast}</div>
<div class="box text"><h2>Plain-text part</h2><pre class="text">{escape(text)}</pre></div>
</div>
</div>
<div class="row">
{_figure(by_name["desktop-light"])}
{_figure(by_name["desktop-dark"])}
</div>
</body></html>
"""


def _figure(panel: Panel) -> str:
    data = base64.b64encode(panel.png).decode("ascii")
    return (
        f'<figure data-panel="{panel.name}"><figcaption>{escape(panel.caption)}</figcaption>'
        f'<img src="data:image/png;base64,{data}" width="{panel.width}" height="{panel.height}" '
        f'alt="{escape(panel.caption)}"></figure>'
    )


def _swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{colour}"></span> <code>{colour}</code>'


def _screenshot_sheet(browser: Any, sheet_html: str, png_path: Path) -> tuple[int, int, dict]:
    with offline_page(browser, SHEET_WIDTH, dark=False) as page:
        page.set_content(sheet_html, wait_until="load")
        height = page.evaluate("() => Math.ceil(document.documentElement.scrollHeight)")
        rects = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('figure[data-panel] img')].map((img) => {
                 const r = img.getBoundingClientRect();  // the screenshot inside the 1 px frame
                 const [x, y] = [r.x + img.clientLeft, r.y + window.scrollY + img.clientTop];
                 const [w, h] = [r.width - 2 * img.clientLeft, r.height - 2 * img.clientTop];
                 return [img.parentElement.dataset.panel, [x, y, w, h]];
               }))"""
        )
        page.screenshot(path=str(png_path), full_page=True)
        width = page.evaluate("() => Math.ceil(document.documentElement.scrollWidth)")
    panels = {name: tuple(round(v) for v in rect) for name, rect in rects.items()}
    return width, height, panels
