"""Rendering: issue -> Jinja templates -> premailer (once per issue) -> personalise per subscriber.

The template is rendered once with opaque slot markers where personal values go (greeting,
address, unsubscribe and preference URLs, body expressions). The CSS is inlined once. The
inlined HTML is then cut at the markers, and each message is the literal pieces joined with
that subscriber's values, escaped exactly as lxml (premailer's serializer) escapes text and
attributes, so the result equals inlining every message separately (tests prove it).
"""

from __future__ import annotations

import hashlib
import logging
import re
import traceback
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from jinja2.exceptions import SecurityError
from markupsafe import Markup, escape

from . import cache
from .config import Settings
from .content import Block, Issue, Slot, expression_env, slot_marker
from .errors import ContentError
from .plaintext import WIDTH, Footnotes, markdown_to_text, wrap
from .tokens import Tokens

DISCLAIMER = (
    "Individual results vary. This story describes one person's experience and is not a promise "
    "of how treatment will work for you; talk to your clinician about whether ketamine treatment "
    "is right for you."
)
CRISIS_RESOURCES = (
    {
        "name": "988 Suicide & Crisis Lifeline",
        "how": "call or text 988, any time, free and confidential",
        "url": "https://988lifeline.org",
        "url_label": "988lifeline.org",
    },
    {
        "name": "Crisis Text Line",
        "how": "text HOME to 741741 to reach a trained crisis counselor",
        "url": "https://www.crisistextline.org",
        "url_label": "crisistextline.org",
    },
)
PERSONAL_FIELDS = ("greeting", "email", "unsubscribe_url", "preferences_url")
# premailer logs every CSS property it cannot inline (media queries, dark mode) as a warning.
logging.getLogger("cssutils").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Recipient:
    """What personalisation may read about a subscriber."""

    id: int
    email: str
    name: str = ""
    attributes: dict[str, Any] | None = None
    token: str = ""  # the random value the reader's links carry (see tokens.py)

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else ""

    def context(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "first_name": self.first_name,
            "email": self.email,
            "attributes": dict(self.attributes or {}),
        }


SAMPLE_RECIPIENT = Recipient(id=0, email="reader@example.com", name="Alex Sample", attributes={})
EMPTY_RECIPIENT = Recipient(id=0, email="reader@example.com", name="", attributes={})


class _Markers:
    """Template-side view of personal fields: each attribute renders as its slot marker."""

    def __init__(self, nonce: str, slots: dict[str, Slot]):
        self._nonce = nonce
        self._slots = slots

    def __getattr__(self, name: str) -> Markup:
        if name not in PERSONAL_FIELDS:
            raise AttributeError(name)
        for slot in self._slots.values():
            if slot.kind == "field" and slot.source == name:
                return Markup(slot.marker)
        marker = slot_marker(self._nonce, len(self._slots))
        self._slots[marker] = Slot(marker, "field", name)
        return Markup(marker)


@dataclass
class RenderedIssue:
    """An issue rendered and inlined once, ready to personalise for any number of people."""

    slug: str
    subject: str
    preheader: str
    content_hash: str
    html_parts: list[str]  # literal text and slot markers, alternating
    text_parts: list[str]
    slots: dict[str, Slot]
    attribute_slots: frozenset[str]  # markers that sit inside an HTML tag (attribute values)
    review: dict[str, str] | None = None  # the clinical sign-off the issue carried (content.Issue.review)
    date: str = ""  # the issue's own date (front matter), ISO; the archive shows it

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "review": self.review,
            "slug": self.slug,
            "subject": self.subject,
            "preheader": self.preheader,
            "content_hash": self.content_hash,
            "html_parts": self.html_parts,
            "text_parts": self.text_parts,
            "slots": [[s.marker, s.kind, s.source, s.line] for s in self.slots.values()],
            "attribute_slots": sorted(self.attribute_slots),
            "date": self.date,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> RenderedIssue:
        slots = {marker: Slot(marker, kind, source, line) for marker, kind, source, line in data["slots"]}
        return cls(
            data["slug"],
            data["subject"],
            data["preheader"],
            data["content_hash"],
            data["html_parts"],
            data["text_parts"],
            slots,
            frozenset(data["attribute_slots"]),
            data.get("review"),
            data.get("date", ""),
        )

    @cached_property
    def _expressions(self) -> dict[str, Any]:
        return {
            marker: expression_env.compile_expression(slot.source, undefined_to_none=False)
            for marker, slot in self.slots.items()
            if slot.kind == "expression"
        }

    def values_for(
        self, recipient: Recipient, fields: dict[str, str], errors: dict[str, ContentError] | None = None
    ) -> dict[str, str]:
        """The value of every slot for one recipient (unescaped). With an `errors` dict, an
        expression that fails is recorded there (by marker) and left blank instead of raising."""
        values: dict[str, str] = {}
        context = {"subscriber": recipient.context()}
        for marker, slot in self.slots.items():
            if slot.kind == "field":
                values[marker] = fields[slot.source]
                continue
            try:
                result = self._expressions[marker](**context)
                values[marker] = "" if result is None else str(result)
            except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
                error = ContentError(f"{self.slug}.md:{slot.line}: {exc}")
                if errors is None:
                    raise error from None
                errors[marker] = error
                values[marker] = ""
        return values

    def personalise(self, recipient: Recipient, fields: dict[str, str]) -> tuple[str, str]:
        """Return (html, text) for one recipient."""
        return self.fill(self.values_for(recipient, fields))

    def fill(self, values: dict[str, str]) -> tuple[str, str]:
        """Join the literal pieces with these slot values, escaped for where each slot sits."""
        html = "".join(
            (escape_attribute(values[part]) if part in self.attribute_slots else escape_text(values[part]))
            if part in values
            else part
            for part in self.html_parts
        )
        text = rewrap_long_lines("".join(values.get(part, part) for part in self.text_parts))
        return html, text


def rewrap_long_lines(text: str, width: int = WIDTH) -> str:
    """The text was wrapped with slot markers in place; a long personal value can push a
    line past the width, so re-wrap such lines (keeping their indent; URLs stay whole)."""
    if all(len(line) <= width for line in text.split("\n")):
        return text
    lines = []
    for line in text.split("\n"):
        if len(line) > width and "://" not in line:
            indent = line[: len(line) - len(line.lstrip())]
            line = wrap(line.strip(), indent, indent, width)
        lines.append(line)
    return "\n".join(lines)


def escape_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attribute(value: str) -> str:
    return escape_text(value).replace('"', "&quot;")


def split_on_markers(document: str, markers: list[str]) -> list[str]:
    if not markers:
        return [document]
    pattern = re.compile("(" + "|".join(re.escape(marker) for marker in markers) + ")")
    return [part for part in pattern.split(document) if part]


def markers_inside_tags(document: str, markers: list[str]) -> frozenset[str]:
    """Markers that appear between '<' and '>' (attribute values), where quotes are escaped."""
    inside = set()
    for marker in markers:
        for match in re.finditer(re.escape(marker), document):
            if document.rfind("<", 0, match.start()) > document.rfind(">", 0, match.start()):
                inside.add(marker)
    return frozenset(inside)


INLINED_KEEP = 16  # inlined issues kept in the user's cache folder (tens of KB each)
INLINE_OPTIONS = {
    "disable_validation": True,
    "allow_network": False,
    "keep_style_tags": False,
    "remove_classes": False,
    "strip_important": False,
}


def inline_css_cached(html: str) -> str:
    """inline_css, remembered on disk per exact HTML (the CSS is in it) and premailer and
    cssutils versions: `send` after `lint` of the same issue, or a second send, neither
    inlines again nor loads premailer (a third of a second together)."""
    from importlib.metadata import version

    versions = f"premailer {version('premailer')} cssutils {version('cssutils')} {INLINE_OPTIONS}"
    key = _digest(f"{versions}\0{html}")
    entry = cache.read_entry("inlined", f"{key}.html") or ""
    digest, _, inlined = entry.partition("\n")
    if digest != _digest(inlined):  # none yet, or damaged: never send what was not inlined whole
        inlined = inline_css(html)
        cache.write_entry("inlined", f"{key}.html", f"{_digest(inlined)}\n{inlined}", INLINED_KEEP)
    return inlined


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def inline_css(html: str) -> str:
    import premailer  # with cssutils, lxml and requests: loaded only where an issue is inlined afresh

    return premailer.Premailer(html, **INLINE_OPTIONS, cssutils_logging_level=logging.CRITICAL).transform()


class Renderer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.env = Environment(
            loader=FileSystemLoader(str(settings.templates_path / "email")),
            autoescape=select_autoescape(["html", "htm"], default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.text_env = Environment(
            loader=FileSystemLoader(str(settings.templates_path / "email")),
            autoescape=False,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.text_env.filters["paragraph"] = lambda text: wrap(" ".join(text.split()))

    def view_online_url(self, slug: str) -> str:
        return f"{self.settings.base_url.rstrip('/')}/archive/{slug}"

    def _context(self, issue: Issue, personal: Any) -> dict[str, Any]:
        return {
            "issue": issue,
            "settings": self.settings,
            "personal": personal,
            "view_online_url": self.view_online_url(issue.slug),
            "disclaimer": DISCLAIMER,
            "crisis_resources": CRISIS_RESOURCES,
        }

    def _template(self, env: Environment, name: str):
        try:
            return env.get_template(name)
        except TemplateNotFound:
            raise ContentError(f"template '{name}' not found in {self.settings.templates_path / 'email'}") from None
        except TemplateSyntaxError as exc:
            raise ContentError(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from None

    def _run(self, env: Environment, name: str, context: dict[str, Any]) -> str:
        template = self._template(env, name)
        try:
            return template.render(context)
        except TemplateSyntaxError as exc:
            raise ContentError(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from None
        except TemplateError as exc:
            raise ContentError(f"{_template_location(exc, template.filename)}: {exc.message}") from None

    def render_html_with_markers(self, issue: Issue) -> str:
        markers = _Markers(issue.nonce, issue.slots)
        return self._run(self.env, f"{issue.template}.html", self._context(issue, markers))

    def render_text_with_markers(self, issue: Issue) -> str:
        markers = _Markers(issue.nonce, issue.slots)
        notes = Footnotes()
        context = self._context(issue, markers)
        context["block_texts"] = [block_text(block, notes) for block in issue.blocks]
        context["crisis_text"] = crisis_text(notes)
        context["links"] = notes.render()
        return self._run(self.text_env, f"{issue.template}.txt", context)

    def render(self, issue: Issue) -> RenderedIssue:
        refuse_script_urls(issue)
        html = inline_css_cached(self.render_html_with_markers(issue))
        text = self.render_text_with_markers(issue)
        markers = list(issue.slots)
        return RenderedIssue(
            slug=issue.slug,
            subject=issue.subject,
            preheader=issue.preheader,
            content_hash=issue.content_hash,
            html_parts=split_on_markers(html, markers),
            text_parts=split_on_markers(text, markers),
            slots=dict(issue.slots),
            attribute_slots=markers_inside_tags(html, markers),
            review=issue.review,
            date=issue.date,
        )

    def render_reference(
        self, issue: Issue, rendered: RenderedIssue, recipient: Recipient, fields: dict[str, str]
    ) -> str:
        """The slow path: personalise the template output first, then inline it.

        Used by the tests to prove inline-once gives identical messages, and by the
        benchmark as the baseline.
        """
        html = self.render_html_with_markers(issue)
        for marker, value in rendered.values_for(recipient, fields).items():
            html = html.replace(marker, str(escape(value)))
        return inline_css(html)

    def personal_fields(self, recipient: Recipient, campaign_id: int | None, tokens: Tokens) -> dict[str, str]:
        base = self.settings.base_url.rstrip("/")
        return {
            "greeting": f"Hi {recipient.first_name}," if recipient.first_name else "Hello,",
            "email": recipient.email,
            "unsubscribe_url": f"{base}/u/{tokens.make('unsubscribe', recipient.token, campaign_id)}",
            "preferences_url": f"{base}/p/{tokens.make('preferences', recipient.token, campaign_id)}",
        }


# Schemes that run code or carry a document of their own when a reader clicks: refused
# outright by rendering, so neither lint's --force nor a custom template lets them through.
SCRIPT_SCHEMES = ("javascript:", "data:", "vbscript:")
_LINK_ATTRIBUTE = re.compile(r"""\b(?:href|src|action|formaction|background|poster)\s*=\s*(["'])(.*?)\1""", re.I | re.S)
_IGNORED_IN_SCHEME = re.compile(r"[\x00-\x20\x7f]+")


def is_script_url(url: str) -> bool:
    """What a browser would see: entities decoded, whitespace and controls dropped, any case."""
    import html as html_module

    return _IGNORED_IN_SCHEME.sub("", html_module.unescape(url)).lower().startswith(SCRIPT_SCHEMES)


class ScriptURLError(ContentError):
    """A javascript:, data: or vbscript: URL in an issue; `rule` names it for lint."""

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


def refuse_script_urls(issue: Issue) -> None:
    """ScriptURLError at the first javascript:, data: or vbscript: URL of the issue."""
    for block in issue.blocks:
        candidates = [("url", block.fields.get("url", ""))] if block.kind == "cta" else []
        candidates += [(match.group(0), match.group(2)) for match in _LINK_ATTRIBUTE.finditer(block.html or "")]
        for attribute, url in candidates:
            if not url or not is_script_url(url):
                continue
            line = _line_of(issue, url) or block.line
            scheme = url.split(":", 1)[0].strip().lower()
            shown = url if len(url) <= 40 else url[:37] + "..."
            if attribute.lower().startswith("src"):
                raise ScriptURLError(
                    f"{issue.where(line)}: refusing a {scheme}: URL as an image source ({shown}): "
                    "upload the image and link it with https://",
                    "image-url",
                )
            raise ScriptURLError(
                f"{issue.where(line)}: refusing a {scheme}: URL ({shown}): it could run code in a reader's "
                "mail client; use an https:// link",
                "script-url",
            )


def _line_of(issue: Issue, url: str) -> int | None:
    for number, line in enumerate(issue.source.splitlines(), start=1):
        if url in line:
            return number
    return None


def _template_location(exc: TemplateError, fallback: str | None) -> str:
    """FILE:LINE of the innermost template frame (Jinja maps its frames to template lines)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith((".html", ".txt")):
            return f"{frame.filename}:{frame.lineno}"
    return f"{fallback}:?"


def block_text(block: Block, notes: Footnotes) -> str:
    body = markdown_to_text(block.body, notes) if block.body.strip() else ""
    fields = block.fields
    if block.kind == "story":
        parts = [f"PATIENT STORY: {fields['name'].upper()}", fields["headline"]]
        if fields.get("quote"):
            parts.append(wrap(f"\u201c{fields['quote']}\u201d", "  ", "  "))
        parts += [body, wrap(DISCLAIMER)]
        return "\n\n".join(part for part in parts if part)
    if block.kind == "tips":
        return f"{fields['title'].upper()}\n\n{body}"
    if block.kind == "resources":
        return f"{(fields.get('title') or 'Resources for support').upper()}\n\n{body}"
    if block.kind == "cta":
        lead = f"{body}\n\n" if body else ""
        note = f"\n\n{wrap(fields['note'])}" if fields.get("note") else ""
        return f"{lead}{fields['text']}: {fields['url']}{note}"
    title = f"{fields['title'].upper()}\n\n" if fields.get("title") else ""
    return title + body


def crisis_text(notes: Footnotes) -> str:
    lines = ["IF YOU ARE STRUGGLING RIGHT NOW", ""]
    for resource in CRISIS_RESOURCES:
        lines.append(wrap(f"- {resource['name']}: {resource['how']} ({resource['url']})", "", "  "))
    lines.append(wrap("- If you are in immediate danger, call 911 or go to the nearest emergency room.", "", "  "))
    return "\n".join(lines)
