"""Checks an issue before anyone sends it. Each finding names a place: FILE:LINE where known."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html
import requests

from .config import Settings
from .content import Issue, load_issue
from .errors import ContentError
from .render import DISCLAIMER, EMPTY_RECIPIENT, PERSONAL_FIELDS, SAMPLE_RECIPIENT, RenderedIssue, Renderer
from .tokens import Tokens

GMAIL_CLIP_BYTES = 102 * 1024
SUBJECT_MAX = 78
SUBJECT_LIMIT = 150  # past this, inboxes cut it off and some servers refuse the header
OUTDATED_CRISIS = re.compile(r"1?-?\(?800\)?[-. ]?273[-. ]?(TALK|8255)|273-TALK", re.I)
# "[Subscribe Now]" but not a Markdown link "[text](url)" or reference "[text][ref]".
PLACEHOLDER = re.compile(r"(?<![!\]\\])\[([A-Z][^\[\]\n]{0,60})\](?![(\[:])")
LINK_SCHEMES = ("http", "https", "mailto", "tel")
MARKDOWN_LINK = re.compile(r"(!?)\[[^\]]*\]\(\s*<?([^)\s>]*)")
CTA_URL = re.compile(r"^url:\s*(\S*)\s*$")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    location: str
    message: str
    rule: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.rule}]"


class Linter:
    def __init__(self, settings: Settings, check_links: bool = False, link_timeout: float = 10.0):
        self.settings = settings
        self.renderer = Renderer(settings)
        self.check_links = check_links
        self.link_timeout = link_timeout
        # What the last lint loaded and rendered (None where it stopped short), so that a
        # send renders and inlines the issue once, not once to lint and once to send.
        self.issue: Issue | None = None
        self.rendered: RenderedIssue | None = None

    def lint(self, path: str | Path) -> list[Finding]:
        self.issue = self.rendered = None
        try:
            issue = load_issue(path)
        except ContentError as exc:
            return [_from_error(exc, "syntax")]
        findings = self._front_matter(issue)
        findings += self._source(issue)
        self.issue = issue
        try:
            rendered = self.renderer.render(issue)
        except ContentError as exc:
            return findings + [_from_error(exc, "template")]
        self.rendered = rendered
        expression_findings = self._expressions(issue, rendered)
        if expression_findings:
            return findings + expression_findings
        try:
            fields = self.renderer.personal_fields(SAMPLE_RECIPIENT, 0, Tokens(self.settings.secret_key or "lint"))
            html, text = rendered.personalise(SAMPLE_RECIPIENT, fields)
        except ContentError as exc:
            return findings + [_from_error(exc, "variables")]
        findings += self._html(issue, html, fields)
        order = {"error": 0, "warning": 1}
        return sorted(findings, key=lambda f: (order[f.severity], _line_of(f.location)))

    # -- the rules -----------------------------------------------------------------------
    def _front_matter(self, issue: Issue) -> list[Finding]:
        where = f"{issue.path}:1"
        findings = []
        if not issue.subject:
            findings.append(Finding("error", where, "missing subject", "subject"))
        elif len(issue.subject) > SUBJECT_LIMIT:
            findings.append(
                Finding(
                    "error",
                    where,
                    f"subject is {len(issue.subject)} characters; shorten it to at most {SUBJECT_LIMIT} "
                    f"(under {SUBJECT_MAX} reads best)",
                    "subject-length",
                )
            )
        elif len(issue.subject) > SUBJECT_MAX:
            findings.append(
                Finding(
                    "warning",
                    where,
                    f"subject is {len(issue.subject)} characters; keep it under {SUBJECT_MAX}",
                    "subject-length",
                )
            )
        letters = [char for char in issue.subject if char.isalpha()]
        if len(letters) >= 4 and all(char.isupper() for char in letters):
            findings.append(Finding("warning", where, "subject is in ALL CAPS", "subject-caps"))
        if not issue.preheader:
            findings.append(Finding("warning", where, "missing preheader (the preview line in the inbox)", "preheader"))
        return findings

    def _source(self, issue: Issue) -> list[Finding]:
        findings = []
        for number, line in enumerate(issue.source.splitlines(), 1):
            where = f"{issue.path}:{number}"
            if OUTDATED_CRISIS.search(line):
                findings.append(
                    Finding(
                        "error",
                        where,
                        "outdated crisis number: the Lifeline is now 988 (call or text 988)",
                        "crisis-number",
                    )
                )
            urls = [m.group(2) for m in MARKDOWN_LINK.finditer(line) if not m.group(1)]
            urls += [m.group(1) for m in CTA_URL.finditer(line.strip())]
            for url in urls:
                problem = link_problem(url)
                if problem:
                    findings.append(Finding("error", where, problem, "link"))
            for match in PLACEHOLDER.finditer(line):
                findings.append(Finding("error", where, f"leftover placeholder '[{match.group(1)}]'", "placeholder"))
        return findings

    def _expressions(self, issue: Issue, rendered: RenderedIssue) -> list[Finding]:
        """Every expression must work for a subscriber with no name and no attributes."""
        try:
            rendered.values_for(
                EMPTY_RECIPIENT,
                dict.fromkeys(PERSONAL_FIELDS, ""),
            )
        except ContentError as exc:
            finding = _from_error(exc, "variables")
            return [
                Finding(
                    "error",
                    f"{issue.path}:{_line_of(finding.location)}",
                    f"unresolved template variable: {finding.message} (add a default, e.g. | default('there'))",
                    "variables",
                )
            ]
        return []

    def _html(self, issue: Issue, html: str, fields: dict[str, str]) -> list[Finding]:
        findings = []
        size = len(html.encode("utf-8"))
        if size > GMAIL_CLIP_BYTES:
            findings.append(
                Finding(
                    "error",
                    str(issue.path),
                    f"message HTML is {size / 1024:.0f} KB after inlining; Gmail clips above 102 KB",
                    "size",
                )
            )
        if "{{" in html or "{%" in html:
            findings.append(Finding("error", str(issue.path), "unrendered template syntax in the output", "variables"))
        document = lxml.html.document_fromstring(html)
        text = document.text_content()
        for image in document.iter("img"):
            src = image.get("src", "")
            where = self._locate(issue, src)
            if not (image.get("alt") or "").strip():
                findings.append(Finding("error", where, f"image without alt text: {src}", "image-alt"))
            if urlsplit(src).scheme not in ("http", "https") or not urlsplit(src).netloc:
                findings.append(
                    Finding("error", where, f"image URL must be absolute (https://...): {src}", "image-url")
                )
        hrefs = [anchor.get("href", "") for anchor in document.iter("a")]
        if fields["unsubscribe_url"] not in hrefs:
            findings.append(Finding("error", str(issue.path), "no unsubscribe link in the message", "footer"))
        postal = self.settings.postal_address.strip()
        if not postal:
            findings.append(
                Finding(
                    "error",
                    str(issue.path),
                    "postal_address is not set; CAN-SPAM requires a physical address",
                    "footer",
                )
            )
        elif postal not in text:
            findings.append(
                Finding("error", str(issue.path), "the postal address is missing from the message", "footer")
            )
        shown_disclaimers = text.count(DISCLAIMER[:40])
        stories = [block for block in issue.blocks if block.kind == "story"]
        for block in stories[shown_disclaimers:]:
            findings.append(
                Finding(
                    "error",
                    issue.where(block.line),
                    "success story without its 'individual results vary' disclaimer",
                    "disclaimer",
                )
            )
        if "988" not in text or "741741" not in text:
            findings.append(
                Finding(
                    "error",
                    str(issue.path),
                    "crisis resources missing (988 Suicide & Crisis Lifeline, Crisis Text Line 741741)",
                    "crisis-resources",
                )
            )
        if OUTDATED_CRISIS.search(text) and not OUTDATED_CRISIS.search(issue.source):
            findings.append(
                Finding("error", str(issue.path), "outdated crisis number in the template", "crisis-number")
            )
        for href in hrefs:
            if href in issue.source:
                continue  # checked where it was written, with its line number
            problem = link_problem(href)
            if problem:
                findings.append(Finding("error", self._locate(issue, href), problem, "link"))
        if self.check_links:
            findings += self._check_links(issue, hrefs + [image.get("src", "") for image in document.iter("img")])
        return findings

    def _check_links(self, issue: Issue, urls: list[str]) -> list[Finding]:
        # Only the links written in the issue: the template's own links are fixed.
        candidates = sorted(
            {
                url
                for url in urls
                if url in issue.source and urlsplit(url).scheme in ("http", "https") and not link_problem(url)
            }
        )

        def check(url: str) -> str | None:
            try:
                response = requests.head(url, timeout=self.link_timeout, allow_redirects=True)
                if response.status_code in (403, 405, 501):
                    response = requests.get(url, timeout=self.link_timeout, allow_redirects=True, stream=True)
                    response.close()
            except requests.RequestException as exc:
                return f"link unreachable: {url} ({type(exc).__name__})"
            if response.status_code >= 400:
                return f"link answers {response.status_code}: {url}"
            return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(check, candidates))
        return [
            Finding("error", self._locate(issue, url), problem, "link-check")
            for url, problem in zip(candidates, results, strict=True)
            if problem
        ]

    @staticmethod
    def _locate(issue: Issue, needle: str) -> str:
        if needle:
            for number, line in enumerate(issue.source.splitlines(), 1):
                if needle in line:
                    return issue.where(number)
        return f"{issue.path} (template)"


def link_problem(href: str) -> str | None:
    parts = urlsplit(href.strip())
    if not href.strip():
        return "empty link"
    if parts.scheme not in LINK_SCHEMES:
        return f"link must be absolute (https://, mailto: or tel:): {href}"
    if parts.scheme in ("http", "https") and (
        not parts.netloc or " " in href or "." not in parts.netloc and parts.hostname not in ("localhost", "127.0.0.1")
    ):
        return f"malformed link: {href}"
    if parts.scheme == "mailto" and "@" not in parts.path:
        return f"malformed mailto link: {href}"
    return None


def _from_error(exc: ContentError, rule: str) -> Finding:
    message = str(exc)
    match = re.match(r"^(.+?:\d+|.+?:\?): (.*)$", message, re.S)
    if match:
        return Finding("error", match.group(1), match.group(2), rule)
    return Finding("error", "", message, rule)


def _line_of(location: str) -> int:
    match = re.search(r":(\d+)$", location)
    return int(match.group(1)) if match else 0
