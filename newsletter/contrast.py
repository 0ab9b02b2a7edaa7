"""WCAG contrast of every text element as Chromium renders the message, in light and dark mode.

Chromium lays the message out (CSS inlined, the dark-mode media query applied by emulating
`prefers-color-scheme: dark`); a script then reads, for each visible element with text of
its own, the computed text colour and the background it is drawn on (the nearest
backgrounds behind it, semi-transparent ones blended, down to the page canvas). Python does
the WCAG 2 arithmetic: relative luminance, (L1 + 0.05) / (L2 + 0.05), AA at 4.5:1, or 3:1
for large text (24 px, or 18.66 px bold). Images are blocked, so text is judged against the
colours a reader with images off sees. Elements positioned over other content are judged by
their DOM ancestors (email layouts do not overlap boxes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cache
from .chromium import DESKTOP_WINDOW, PHONE_WIDTH, offline_page, require_chromium, with_browser
from .config import Settings
from .content import Issue, load_issue
from .errors import ContentError
from .lint import Finding
from .render import SAMPLE_RECIPIENT, RenderedIssue, Renderer
from .tokens import Tokens

AA_NORMAL = 4.5
AA_LARGE = 3.0
LARGE_PX = 24.0  # 18 pt
LARGE_BOLD_PX = 18.66  # 14 pt, bold
MODES = ("light", "dark")
_CACHE: dict[str, list[TextContrast]] = {}
_CACHE_LOCK = threading.Lock()
DISK_CACHE_KEEP = 64  # measurements kept on disk (a few KB each); the oldest go first
CACHE_KIND = "contrast"  # in the user's cache folder (cache.py)
log = logging.getLogger("newsletter.contrast")

# Runs in the page: one record per visible element that has text of its own.
MEASURE_SCRIPT = """() => {
  const parse = (value) => {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => {  // source-over blending of two [r, g, b, a]
    const a = top[3] + bottom[3] * (1 - top[3]);
    if (a === 0) return [0, 0, 0, 0];
    const mix = (i) => (top[i] * top[3] + bottom[i] * bottom[3] * (1 - top[3])) / a;
    return [mix(0), mix(1), mix(2), a];
  };
  const dark = matchMedia('(prefers-color-scheme: dark)').matches
    && /dark/.test(getComputedStyle(document.documentElement).colorScheme || '');
  const canvas = dark ? [18, 18, 18, 1] : [255, 255, 255, 1];
  const background = (element) => {
    const layers = [];
    for (let node = element; node && node.nodeType === 1; node = node.parentElement) {
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour[3] > 0) layers.push(colour);
      if (colour[3] >= 1) break;
    }
    let result = canvas;
    for (let i = layers.length - 1; i >= 0; i--) result = over(layers[i], result);
    return result;
  };
  const hidden = (element) => {
    for (let node = element; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.display === 'none' || style.visibility === 'hidden' || Number(style.opacity) === 0) return true;
    }
    const box = element.getBoundingClientRect();
    return box.width < 1 || box.height < 1;
  };
  const records = [];
  let index = 0;
  for (const element of document.body.querySelectorAll('*')) {
    index += 1;
    if (['SCRIPT', 'STYLE', 'TITLE', 'HEAD'].includes(element.tagName)) continue;
    const own = [...element.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join(' ');
    const text = own.replace(/[\\s\\u200b-\\u200f\\u2007\\u034f\\ufeff]+/g, ' ').trim();
    if (!text || hidden(element)) continue;
    const style = getComputedStyle(element);
    const back = background(element);
    const fore = over(parse(style.color), back);
    const classes = (element.getAttribute('class') || '').trim().split(/\\s+/).filter(Boolean);
    records.push({
      index,
      tag: element.tagName.toLowerCase(),
      classes,
      text: text.slice(0, 60),
      color: fore.slice(0, 3),
      background: back.slice(0, 3),
      size: parseFloat(style.fontSize),
      weight: Number(style.fontWeight) || (style.fontWeight === 'bold' ? 700 : 400),
    });
  }
  return records;
}"""


def relative_luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour with 0-255 channels."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(foreground: tuple[float, float, float], background: tuple[float, float, float]) -> float:
    lighter, darker = sorted((relative_luminance(foreground), relative_luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def hex_colour(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


@dataclass(frozen=True)
class TextContrast:
    """One text element as drawn in one colour scheme."""

    mode: str  # "light" or "dark"
    element: str  # e.g. h2 "Understanding anxiety"
    text: str
    color: str
    background: str
    ratio: float
    large: bool

    @property
    def required(self) -> float:
        return AA_LARGE if self.large else AA_NORMAL

    @property
    def passes(self) -> bool:
        # WCAG compares the unrounded ratio; 4.499 fails.
        return self.ratio >= self.required

    def describe(self) -> str:
        size = "large text" if self.large else "text"
        return (
            f"{self.mode} mode: {self.element} is {self.color} on {self.background}, contrast "
            f"{_floor2(self.ratio)}:1, below the {self.required:g}:1 WCAG AA asks for {size}"
        )


def _floor2(ratio: float) -> str:
    """Two decimals, rounded down, so a failing 4.499 never prints as a passing 4.50."""
    return f"{int(ratio * 100) / 100:.2f}"


def _element_name(record: dict[str, Any]) -> str:
    name = record["tag"] + "".join(f".{cls}" for cls in record["classes"])
    text = record["text"]
    return f'{name} "{text[:40]}{"..." if len(text) > 40 else ""}"'


def measure_page(page: Any, mode: str) -> list[TextContrast]:
    """Every visible text element of the loaded page, with its colours and contrast."""
    results = []
    for record in page.evaluate(MEASURE_SCRIPT):
        color, background = tuple(record["color"]), tuple(record["background"])
        large = record["size"] >= LARGE_PX or (record["size"] >= LARGE_BOLD_PX and record["weight"] >= 700)
        results.append(
            TextContrast(
                mode=mode,
                element=_element_name(record),
                text=record["text"],
                color=hex_colour(color),
                background=hex_colour(background),
                ratio=contrast_ratio(color, background),
                large=large,
            )
        )
    return results


def measure_html(
    browser: Any, html: str, widths: tuple[int, ...] = (DESKTOP_WINDOW, PHONE_WIDTH)
) -> list[TextContrast]:
    """Measure the message in light and dark mode at each window width; one entry per element and mode."""
    seen: dict[tuple, TextContrast] = {}
    with offline_page(browser, widths[0], dark=False) as page:
        for width in widths:
            page.set_viewport_size({"width": width, "height": 900})
            page.set_content(html, wait_until="load")
            for mode in MODES:
                page.emulate_media(color_scheme=mode)
                add_unique(seen, measure_page(page, mode))
    return list(seen.values())


def add_unique(seen: dict[tuple, TextContrast], items: list[TextContrast]) -> None:
    """One entry per element and mode: the same text in the same colours at two widths counts once."""
    for item in items:
        seen.setdefault((item.mode, item.element, item.text, item.color, item.background), item)


def failures(measured: list[TextContrast]) -> list[TextContrast]:
    return [item for item in measured if not item.passes]


def personalised_html(settings: Settings, rendered: RenderedIssue) -> str:
    """The message as the sample reader gets it (personal values do not change colours)."""
    renderer = Renderer(settings)
    fields = renderer.personal_fields(SAMPLE_RECIPIENT, 0, Tokens(settings.secret_key or "contrast"))
    return rendered.personalise(SAMPLE_RECIPIENT, fields)[0]


def findings_from(measured: list[TextContrast], issue: Issue | None, slug: str) -> list[Finding]:
    return [
        Finding("error", _locate(issue, item.text, slug), item.describe(), "contrast") for item in failures(measured)
    ]


def contrast_findings(settings: Settings, rendered: RenderedIssue, issue: Issue | None = None) -> list[Finding]:
    """Lint findings (errors) for every text element under WCAG AA, in light and dark mode.

    Launches headless Chromium; raises BrowserUnavailable (one line, with what to install)
    where it is missing: callers that only check when they can should test
    `chromium_available()` first.
    """
    html = personalised_html(settings, rendered)
    return findings_from(measure_cached(html), issue, rendered.slug)


def measure_cached(html: str) -> list[TextContrast]:
    """measure_html in a fresh browser, remembered per exact HTML: the same message always
    measures the same. In memory for this process, and on disk (the user's cache folder)
    for the same HTML drawn by the same browser build, so a `send` after `lint --contrast`
    or an earlier send need not launch Chromium (a second or more); any change to the
    message, its template or CSS, or the browser measures afresh."""
    key = hashlib.sha256(html.encode("utf-8")).hexdigest()
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    executable = require_chromium()  # a missing browser says so, remembered measurement or not
    stored = f"{_disk_key(key, executable)}.json"
    measured = _read_measurement(stored)
    if measured is None:
        measured = with_browser(lambda browser: measure_html(browser, html))
        cache.write_entry(
            CACHE_KIND, stored, json.dumps([dataclasses.asdict(item) for item in measured]), DISK_CACHE_KEEP
        )
    with _CACHE_LOCK:
        if len(_CACHE) >= 32:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = measured
    return measured


def _disk_key(html_key: str, executable: str) -> str:
    """The message's hash with what else decides the measurement: the browser build (its
    file's size and time) and the measuring script and window widths."""
    try:
        stat = os.stat(os.path.realpath(executable))
        browser = f"{os.path.realpath(executable)}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        browser = executable
    method = f"{MEASURE_SCRIPT}{DESKTOP_WINDOW}{PHONE_WIDTH}{MODES}{AA_NORMAL}{LARGE_PX}{LARGE_BOLD_PX}"
    return hashlib.sha256(f"{html_key}\0{browser}\0{method}".encode()).hexdigest()


def _read_measurement(name: str) -> list[TextContrast] | None:
    stored = cache.read_entry(CACHE_KIND, name)
    if stored is None:
        return None
    try:
        return [TextContrast(**item) for item in json.loads(stored)]
    except (ValueError, TypeError) as exc:  # a damaged entry is measured again
        log.debug("contrast cache entry %s unreadable (%s); measuring again", name, exc)
        return None


def check_issue_contrast(settings: Settings, issue_path: str | Path) -> list[Finding]:
    """contrast_findings for an issue file; none for an issue that does not render (lint says why)."""
    try:
        issue = load_issue(issue_path)
        rendered = Renderer(settings).render(issue)
        html = personalised_html(settings, rendered)
    except ContentError:
        return []
    return findings_from(measure_cached(html), issue, rendered.slug)


def _locate(issue: Issue | None, text: str, slug: str) -> str:
    """The issue line holding the element's text; template text (masthead, footer) has none.

    A line whose whole content is the text ("#### After", "headline: After") wins over a
    line that merely contains it, so short headings do not point at the subject line.
    """
    if issue is None:
        return f"{slug} (template)"
    probe = text[:30].strip()
    lines = list(enumerate(issue.source.splitlines(), 1))[max(issue.body_line - 1, 0) :]
    if probe:
        for number, line in lines:
            content = line.strip().lstrip("#>-*+ ").strip()
            if content == probe or content.partition(":")[2].strip() == probe:
                return issue.where(number)
        for number, line in lines:
            if probe in line:
                return issue.where(number)
    return f"{issue.path} (template)"
