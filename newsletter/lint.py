"""Checks an issue before anyone sends it.

Every finding names a place (FILE:LINE), fits on one line and says what to do. Lint never
stops at the first problem: a broken {{ expression }} is reported and blanked, and the
other checks run on what is left, so staff fix everything in one pass.
"""

from __future__ import annotations

import html
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html
from markdown_it import MarkdownIt

from .config import Settings
from .content import Issue, load_issue, markdown
from .errors import ContentError
from .readability import markdown_sentences, measure
from .render import DISCLAIMER, EMPTY_RECIPIENT, PERSONAL_FIELDS, SAMPLE_RECIPIENT, RenderedIssue, Renderer
from .tokens import Tokens

GMAIL_CLIP_BYTES = 102 * 1024
SUBJECT_MAX = 78
SUBJECT_LIMIT = 150  # past this, inboxes cut it off and some servers refuse the header
OUTDATED_CRISIS = re.compile(r"1?-?\(?800\)?[-. ]?273[-. ]?(TALK|8255)|273-TALK", re.I)
# "[Subscribe Now]" but not a Markdown link "[text](url)" or reference "[text][ref]".
PLACEHOLDER = re.compile(r"(?<![!\]\\])\[([A-Z][^\[\]\n]{0,100})\](?![(\[:])")
LINK_SCHEMES = ("http", "https", "mailto", "tel")
MARKDOWN_LINK = re.compile(r"(!?)\[[^\]]*\]\(\s*<?([^)\s>]*)")
CTA_URL = re.compile(r"^url:\s*(\S*)\s*$")
MAX_LINE = 200
LOOPBACK = ("localhost", "127.0.0.1", "::1")
CLAIMS_FILE = Path(__file__).resolve().parent / "data" / "claims.txt"
# A quotation of a few words...
QUOTATION = re.compile(
    r"[\"\u201c]([^\"\u201c\u201d]{12,})[\"\u201d]"
    # or in single quotes, where an apostrophe inside a word (I'm) does not end it
    r"|(?<!\w)['\u2018]((?:[^'\u2018\u2019]|(?<=\w)['\u2019](?=\w)){12,}?)['\u2019](?!\w)"
)
# ...attributed to someone, after it: "(a patient)", "-- Maria", ", says Maria"...
_WHO = r"(?:(?:a|an|one|our|one of our)\s+)?(?:patients?|clients?|customers?|participants?|[A-Z][a-z]+\b)"
_SAYS = r"(?:says|said|recalls|shares|shared|writes|wrote|explains|told us|put it)"
ATTRIBUTED_AFTER = re.compile(rf"^[\s,.!?*_]*(?:\(|[\u2014\u2013]|--?|{_SAYS}\b)\s*{_WHO}")
# ...or before it: "Maria said", "as one patient put it,", "according to a patient,"
ATTRIBUTED_BEFORE = re.compile(rf"(?:{_WHO}\s+{_SAYS}|[Aa]ccording to\s+{_WHO})[\s,:*_]*$")
# A line that only names who said the blockquote above it: "— Maria", "-- a patient"
ATTRIBUTION_LINE = re.compile(rf"^\s*(?:[\u2014\u2013]|--?)\s*{_WHO}[\w\s.,]*$")
FIRST_PERSON = re.compile(r"\b(?:I|me|my|I'm|I\u2019m|I've|I\u2019ve)\b")
RAW_TAG = re.compile(r"<(?:!--|/?[A-Za-z][A-Za-z0-9-]*\b)[^<>]*>")
HTML_MARKDOWN = MarkdownIt("commonmark", {"html": True})
# Inline styles that hide an element's text (after premailer moved the CSS inline).
HIDING_STYLE = re.compile(
    r"(?:^|;)(?:display:none|visibility:hidden|font-size:0(?:\.0*)?(?:px|pt|em|rem|%)?(?:!important)?(?:;|$)"
    r"|opacity:0(?:\.0*)?(?:!important)?(?:;|$)|(?:max-)?height:0(?:px)?(?:!important)?;(?:.*;)?overflow:hidden)"
)
# Reading text as a reader sees it, for claims (see claim_text and _flatten).
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\u180e"))
DASHES = re.compile(r"[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]")
MARKDOWN_PREFIX = re.compile(r"^\s*(?:>\s*)*(?:#{1,6}\s+|[-*+]\s+|\d{1,9}[.)]\s+)?")
LINK_DESTINATION = re.compile(r"\]\(\s*<?[^\s)>]*>?(?:\s+\"([^\"]*)\"|\s+'([^']*)'|\s+\(([^)]*)\))?\s*\)")
AUTOLINK = re.compile(r"<(?:https?://|mailto:)([^<>\s]*)>")
BARE_URL = re.compile(r"https?://\S+")
EMPHASIS = re.compile(r"[*_`~]")
# A passage of text ends at a blank line or a block fence; a new one starts at a list item;
# a heading, table row, code fence or block field line is a passage of its own.
PASSAGE_START = re.compile(r"^(?:>\s*)*(?:[-*+]|\d{1,9}[.)])\s")
PASSAGE_ALONE = re.compile(r"^(?::::|```|~~~|#{1,6}\s|\||[a-z_]+:(?:\s|$))")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    location: str  # FILE:LINE
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

    def lint(self, path: str | Path, errors_only: bool = False) -> list[Finding]:
        """Every finding; with errors_only, checks that can only warn are left out (a send
        refuses on errors alone, and the reading level costs it a third of a second)."""
        self.issue = self.rendered = None
        problems: list[ContentError] = []
        try:
            issue = load_issue(path, problems)
        except ContentError as exc:
            return _finish([_from_error(exc, "syntax")])
        findings = [_from_error(problem, getattr(problem, "rule", "syntax")) for problem in problems]
        findings += self._front_matter(issue)
        findings += self._source(issue)
        findings += self._claims(issue)
        findings += self._markdown(issue)
        if not errors_only:
            findings += self._reading_level(issue)
        missing = self._missing_template(issue)
        if missing:
            return _finish(findings + [missing])
        try:
            rendered = self.renderer.render(issue)
        except ContentError as exc:  # a refused script URL names its own rule
            return _finish(findings + [_from_error(exc, getattr(exc, "rule", "template"))])
        if not problems:  # parsed as a send parses it (nothing mended): a send may reuse this render
            self.issue, self.rendered = issue, rendered
        findings += self._expressions(issue, rendered)
        fields = self.renderer.personal_fields(SAMPLE_RECIPIENT, 0, Tokens(self.settings.secret_key or "lint"))
        html, text = rendered.fill(rendered.values_for(SAMPLE_RECIPIENT, fields, errors={}))
        findings += self._html(issue, html, text, fields)
        return _finish(findings)

    # -- places -------------------------------------------------------------------------
    def _template_file(self, issue: Issue) -> str:
        return f"{self.settings.templates_path / 'email' / issue.template}.html:1"

    def _setting_location(self, issue: Issue, name: str) -> str:
        """Where a setting was made: its line in the config file, else the issue's first line."""
        source = self.settings.sources.get(name, "")
        path = Path(source)
        if source and path.is_file():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.match(rf"\s*{name}\s*=", line):
                    return f"{path}:{number}"
        return issue.where(1)

    # -- the rules -----------------------------------------------------------------------
    def _front_matter(self, issue: Issue) -> list[Finding]:
        where = issue.where(issue.line_of("subject"))
        findings = []
        if not issue.subject:
            findings.append(Finding("error", where, "missing subject: add a 'subject:' line", "subject"))
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
                    f"subject is {len(issue.subject)} characters; keep it under {SUBJECT_MAX} so inboxes show it whole",
                    "subject-length",
                )
            )
        letters = [char for char in issue.subject if char.isalpha()]
        if len(letters) >= 4 and all(char.isupper() for char in letters):
            findings.append(
                Finding("warning", where, "subject is in ALL CAPS; write it in sentence case", "subject-caps")
            )
        review = issue.review
        if review and review["hash"] != issue.content_hash:
            findings.append(
                Finding(
                    "warning",
                    issue.where(issue.line_of("reviewed_hash")),
                    f"changed since {_short(review['by'], 30)} approved it; a real send needs a new "
                    "`newsletter issues approve`",
                    "review",
                )
            )
        if not issue.preheader:
            findings.append(
                Finding(
                    "warning",
                    issue.where(issue.line_of("preheader")),
                    "missing preheader: add a 'preheader:' line (the preview line in the inbox)",
                    "preheader",
                )
            )
        return findings

    def _source(self, issue: Issue) -> list[Finding]:
        findings = []
        for number, line in enumerate(issue.source.splitlines(), 1):
            where = issue.where(number)
            if OUTDATED_CRISIS.search(line):
                findings.append(
                    Finding(
                        "error",
                        where,
                        "outdated crisis number: the Lifeline is now 988 (call or text 988)",
                        "crisis-number",
                    )
                )
            written = list(MARKDOWN_LINK.finditer(line))
            urls = [m.group(2) for m in written if not m.group(1)]
            urls += [m.group(1) for m in CTA_URL.finditer(line.strip())]
            for url in urls:
                problem = link_problem(url)
                if problem:
                    findings.append(Finding("error", where, problem, "link"))
            for url in urls + [m.group(2) for m in written if m.group(1)]:
                parts = urlsplit(url.strip())
                if parts.scheme == "http" and parts.hostname not in LOOPBACK:
                    findings.append(
                        Finding(
                            "warning",
                            where,
                            f"{_short(url)} uses http://; use https:// so browsers show no warning",
                            "https",
                        )
                    )
            for match in PLACEHOLDER.finditer(line):
                findings.append(
                    Finding(
                        "error", where, f"placeholder '[{match.group(1)}]' not replaced: write the text", "placeholder"
                    )
                )
        return findings

    def _claims(self, issue: Issue) -> list[Finding]:
        """Wording that promises results, in subject, preheader, title and body: matched on
        the text a reader sees (a phrase may run over a line break, through **emphasis**, an
        entity or an invisible character), reported at the line where it starts."""
        patterns = claim_patterns(self.settings.claim_list)
        approved = [_normal(claim_text(claim)) for claim in issue.approved_claims]
        said: dict[int, list[str]] = {}
        for lines in _visible_passages(issue):
            text, starts = _flatten(lines)
            taken: list[tuple[int, int]] = []
            for _phrase, pattern in patterns:  # longest first: "permanently cured", not also "cured"
                for match in pattern.finditer(text):
                    if any(match.start() < end and start < match.end() for start, end in taken):
                        continue
                    taken.append(match.span())
                    phrase = _normal(match.group(0))
                    if any(phrase in claim and claim in _normal(text) for claim in approved):
                        continue
                    line = lines[bisect_right(starts, match.start()) - 1][0]
                    said.setdefault(line, []).append(match.group(0))
        findings = []
        for line, phrases in sorted(said.items()):
            quoted = ", ".join(f"'{phrase}'" for phrase in dict.fromkeys(phrases))
            findings.append(
                Finding(
                    "error",
                    issue.where(line),
                    f"{quoted} {'promises' if len(phrases) == 1 else 'promise'} results; reword it, or have a "
                    "clinician accept it under approved_claims:",
                    "claims",
                )
            )
        return findings

    def _markdown(self, issue: Issue) -> list[Finding]:
        """Raw HTML (shown as text) and testimonials outside story blocks."""
        findings = []
        for block in issue.blocks:
            for line, tag in _raw_html(block.body, block.body_line):
                findings.append(
                    Finding(
                        "error",
                        issue.where(line),
                        f"raw HTML {_short(tag, 30)} would show as text in the email; use Markdown (**bold**, "
                        "[text](https://...))",
                        "raw-html",
                    )
                )
            for name, value in block.fields.items():
                if RAW_TAG.search(value) and name not in ("url", "photo"):
                    findings.append(
                        Finding(
                            "error",
                            issue.where(block.line),
                            f"raw HTML in '{name}:' would show as text in the email; write plain text",
                            "raw-html",
                        )
                    )
            if block.kind == "story":
                continue
            for line, text, quoted in _paragraphs(block.body, block.body_line):
                if _is_testimonial(text, quoted) or quoted and _is_attributed_quote(text):
                    findings.append(
                        Finding(
                            "error",
                            issue.where(line),
                            "testimonial outside a story block: move it into a '::: story' block, which adds the "
                            "'individual results vary' disclaimer",
                            "testimonial",
                        )
                    )
        return findings

    def _reading_level(self, issue: Issue) -> list[Finding]:
        findings = []
        limit = self.settings.reading_grade
        for block in issue.blocks:
            reading = measure(markdown_sentences(block.body, block.body_line))
            if reading is None or round(reading.grade, 1) <= limit:
                continue
            where = issue.where(block.line)
            message = f"{block.kind} reads at grade {reading.grade:.1f} (aim for {limit:g}); simplify "
            hardest = reading.hardest(3)
            overhead = sum(len(f'line {s.line} "", ') for s in hardest)
            fixed = len(f"{where}: warning: {message} [reading-level]") + overhead
            room = max(12, (MAX_LINE - fixed) // len(hardest))
            message += ", ".join(f'line {s.line} "{_short(s.text, room)}"' for s in hardest)
            findings.append(Finding("warning", where, message, "reading-level"))
        return findings

    def _missing_template(self, issue: Issue) -> Finding | None:
        folder = self.settings.templates_path / "email"
        names = [f"{issue.template}{ext}" for ext in (".html", ".txt")]
        missing = [name for name in names if not (folder / name).is_file()]
        if not missing:
            return None
        known = sorted({path.stem for path in folder.glob("*.html")}) if folder.is_dir() else []
        return Finding(
            "error",
            issue.where(issue.line_of("template")),
            f"template '{issue.template}' not found; use one of: {', '.join(known) or '(none)'} "
            f"(looked for {missing[0]} in {folder})",
            "template",
        )

    def _expressions(self, issue: Issue, rendered: RenderedIssue) -> list[Finding]:
        """Every expression must work for a subscriber with no name and no attributes."""
        errors: dict[str, ContentError] = {}
        rendered.values_for(EMPTY_RECIPIENT, dict.fromkeys(PERSONAL_FIELDS, ""), errors=errors)
        findings = []
        for marker, error in errors.items():
            slot = rendered.slots[marker]
            attribute = re.match(r"subscriber\.attributes\.(\w+)\s*$", slot.source)
            if attribute:
                message = (
                    f"not every subscriber has '{attribute.group(1)}'; add a default, e.g. "
                    f"{{{{ {slot.source} | default('there') }}}}"
                )
            else:
                reason = str(error).split(": ", 1)[-1]
                message = (
                    f"{{{{ {_short(slot.source)} }}}} fails for a subscriber without name or attributes "
                    f"({reason}); add a default, e.g. | default('there')"
                )
            findings.append(Finding("error", issue.where(slot.line), message, "variables"))
        return findings

    def _html(self, issue: Issue, html: str, text: str, fields: dict[str, str]) -> list[Finding]:
        findings = []
        template = self._template_file(issue)
        size = len(html.encode("utf-8"))
        if size > GMAIL_CLIP_BYTES:
            findings.append(
                Finding(
                    "error",
                    issue.where(1),
                    f"message HTML is {size / 1024:.0f} KB after inlining; Gmail clips above 102 KB: shorten the issue",
                    "size",
                )
            )
        if "{{" in html or "{%" in html:
            findings.append(
                Finding("error", template, "unrendered template syntax in the output: fix the template", "variables")
            )
        document = lxml.html.document_fromstring(html)
        shown = document.text_content()
        for image in document.iter("img"):
            src = image.get("src", "")
            where = self._locate(issue, src)
            if not (image.get("alt") or "").strip():
                findings.append(
                    Finding(
                        "error",
                        where,
                        f"image without alt text: describe it in ![...]({_short(src)})",
                        "image-alt",
                    )
                )
            if urlsplit(src).scheme not in ("http", "https") or not urlsplit(src).netloc:
                findings.append(
                    Finding(
                        "error",
                        where,
                        f"image URL must be absolute (https://...), not {_short(src)}: upload it and link it",
                        "image-url",
                    )
                )
        hrefs = [anchor.get("href", "") for anchor in document.iter("a")]
        if fields["unsubscribe_url"] not in hrefs:
            findings.append(
                Finding("error", template, "no unsubscribe link in the message: restore it in the template", "footer")
            )
        findings += self._footer_https(issue, fields)
        postal = self.settings.postal_address.strip()
        if not postal:
            findings.append(
                Finding(
                    "error",
                    self._setting_location(issue, "postal_address"),
                    "postal_address is not set; CAN-SPAM requires a physical address: set it in newsletter.toml",
                    "footer",
                )
            )
        elif postal not in shown:
            findings.append(
                Finding("error", template, "the postal address is missing from the message: restore it", "footer")
            )
        flat_text = " ".join(text.split())
        visible = _visible_text(document)  # a disclaimer styled out of sight is not shown
        shown_disclaimers = min(visible.count(DISCLAIMER[:40]), flat_text.count(DISCLAIMER[:40]))
        stories = [block for block in issue.blocks if block.kind == "story"]
        for block in stories[shown_disclaimers:]:
            findings.append(
                Finding(
                    "error",
                    issue.where(block.line),
                    "this story shows without its 'individual results vary' disclaimer: restore it in the template",
                    "disclaimer",
                )
            )
        if "988" not in shown or "741741" not in shown:
            findings.append(
                Finding(
                    "error",
                    template,
                    "crisis resources missing (988 Lifeline, Crisis Text Line 741741): restore them in the template",
                    "crisis-resources",
                )
            )
        if OUTDATED_CRISIS.search(shown) and not OUTDATED_CRISIS.search(issue.source):
            findings.append(
                Finding("error", template, "outdated crisis number in the template: use 988", "crisis-number")
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

    def _footer_https(self, issue: Issue, fields: dict[str, str]) -> list[Finding]:
        """Unsubscribe, preference and archive links carry tokens: never over plain http
        (a local base_url for testing is fine)."""
        base = urlsplit(self.settings.base_url)
        if base.scheme != "http" or base.hostname in LOOPBACK:
            return []
        return [
            Finding(
                "error",
                self._setting_location(issue, "base_url"),
                f"base_url is http://: unsubscribe, preference and archive links must use https://; "
                f'set base_url = "https://{base.netloc}"',
                "https",
            )
        ]

    def _check_links(self, issue: Issue, urls: list[str]) -> list[Finding]:
        # Only the links written in the issue: the template's own links are fixed.
        candidates = sorted(
            {
                url
                for url in urls
                if url in issue.source and urlsplit(url).scheme in ("http", "https") and not link_problem(url)
            }
        )

        import requests  # only for --check-links: it costs `send` 0.1 s of start-up

        def check(url: str) -> str | None:
            try:
                response = requests.head(url, timeout=self.link_timeout, allow_redirects=True)
                if response.status_code in (403, 405, 501):
                    response = requests.get(url, timeout=self.link_timeout, allow_redirects=True, stream=True)
                    response.close()
            except requests.RequestException as exc:
                return f"link unreachable: {_short(url)} ({type(exc).__name__}); check the address"
            if response.status_code >= 400:
                return f"link answers {response.status_code}: {_short(url)}"
            return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(check, candidates))
        return [
            Finding("error", self._locate(issue, url), problem, "link-check")
            for url, problem in zip(candidates, results, strict=True)
            if problem
        ]

    def _locate(self, issue: Issue, needle: str) -> str:
        if needle:
            for number, line in enumerate(issue.source.splitlines(), 1):
                if needle in line:
                    return issue.where(number)
        return self._template_file(issue)


# -- helpers ---------------------------------------------------------------------------
def claim_patterns(extra: list[str] = ()) -> list[tuple[str, re.Pattern]]:
    """The bundled phrases plus the `claims` setting, each as a whole-word, any-case pattern."""
    phrases = [
        line.strip()
        for line in CLAIMS_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    patterns = []
    for phrase in dict.fromkeys([*phrases, *extra]):
        words = [re.escape(word).replace("%", r"\s*%") for word in re.split(r"[\s-]+", claim_text(phrase)) if word]
        body = r"[\s-]+".join(words)
        patterns.append((phrase, re.compile(rf"(?<![\w-]){body}(?![\w-])", re.I)))
    # A longer phrase wins over a word inside it ("permanently cured", not also "cured").
    return sorted(patterns, key=lambda item: -len(item[0]))


def claim_text(text: str) -> str:
    """Text as a reader sees it, for matching claims: entities decoded, full-width and other
    compatibility forms folded (NFKC), soft hyphens and zero-width characters removed, every
    dash a '-', whitespace one space."""
    text = unicodedata.normalize("NFKC", html.unescape(text)).translate(_INVISIBLE)
    return " ".join(DASHES.sub("-", text).split())


def _visible_passages(issue: Issue) -> Iterator[list[tuple[int, str]]]:
    """Runs of lines a reader sees as one piece of text, each line with its file line: the
    subject, preheader and title, then each paragraph, list item, heading or field of the body."""
    for key in ("subject", "preheader", "title"):
        if key in issue.field_lines:
            yield [(issue.field_lines[key], str(issue.meta.get(key) or ""))]
    passage: list[tuple[int, str]] = []
    for offset, line in enumerate(issue.source.splitlines()[issue.body_line - 1 :]):
        number = issue.body_line + offset
        stripped = line.strip()
        alone = PASSAGE_ALONE.match(stripped)
        if passage and (not stripped or alone or PASSAGE_START.match(stripped)):
            yield passage
            passage = []
        if alone and stripped:
            yield [(number, line)]
        elif stripped:
            passage.append((number, line))
    if passage:
        yield passage


def _flatten(lines: list[tuple[int, str]]) -> tuple[str, list[int]]:
    """The passage as one line of reader's text (no Markdown markup, link destinations or
    bare URLs; titles and autolink text kept), and where each source line starts in it."""
    parts, starts, length = [], [], 0
    for _number, line in lines:
        line = MARKDOWN_PREFIX.sub("", claim_text(line))
        line = LINK_DESTINATION.sub(lambda m: f"] {m.group(1) or m.group(2) or m.group(3) or ''} ", line)
        line = AUTOLINK.sub(r" \1 ", line)
        line = " ".join(EMPHASIS.sub("", BARE_URL.sub(" ", line)).split())
        starts.append(length)
        parts.append(line)
        length += len(line) + 1
    return " ".join(parts), starts


def _raw_html(body: str, first_line: int) -> Iterator[tuple[int, str]]:
    for token in HTML_MARKDOWN.parse(body):
        if token.type == "html_block" and token.map:
            yield first_line + token.map[0], token.content.strip().splitlines()[0]
        elif token.type == "inline" and token.map:
            for child in token.children or []:
                if child.type == "html_inline":
                    offset = token.content.find(child.content)
                    yield first_line + token.map[0] + token.content.count("\n", 0, max(offset, 0)), child.content


def _paragraphs(body: str, first_line: int) -> Iterator[tuple[int, str, bool]]:
    """(line, text, inside a blockquote) for each paragraph or list item of a body; a
    blockquote comes whole, at its first line, its paragraphs one per line."""
    quoted: list[tuple[int, list[str]]] = []  # open blockquotes: (first line, paragraphs)
    for token in markdown().parse(body):
        if token.type == "blockquote_open" and token.map:
            quoted.append((first_line + token.map[0], []))
        elif token.type == "blockquote_close" and quoted:
            line, texts = quoted.pop()
            if quoted:
                quoted[-1][1].extend(texts)
            else:
                yield line, "\n".join(texts), True
        elif token.type == "inline" and token.map:
            if quoted:
                quoted[-1][1].append(token.content)
            else:
                yield first_line + token.map[0], token.content, False


def _is_testimonial(text: str, in_blockquote: bool) -> bool:
    for match in QUOTATION.finditer(text):
        before, after = text[max(0, match.start() - 60) : match.start()], text[match.end() : match.end() + 60]
        if ATTRIBUTED_AFTER.search(after) or ATTRIBUTED_BEFORE.search(before):
            return True
        if in_blockquote and FIRST_PERSON.search(match.group(1) or match.group(2)):
            return True
    return False


def _visible_text(document: lxml.html.HtmlElement) -> str:
    """The text of the (inlined) HTML without what its styles hide."""
    copy = lxml.html.fromstring(lxml.html.tostring(document))
    for element in list(copy.iter()):
        if not isinstance(element.tag, str) or element.getparent() is None:
            continue
        style = re.sub(r"\s+", "", (element.get("style") or "").lower())
        if element.get("hidden") is not None or HIDING_STYLE.search(style):
            element.drop_tree()
    return " ".join(copy.text_content().split())


def _is_attributed_quote(text: str) -> bool:
    """A blockquote in the first person, signed on a line of its own ("— Maria"), quote
    marks or not."""
    *said, last = text.splitlines() or [""]
    return bool(said) and bool(ATTRIBUTION_LINE.match(last)) and bool(FIRST_PERSON.search(" ".join(said)))


def _normal(text: str) -> str:
    return re.sub(r"\s+%", "%", " ".join(re.split(r"[\s-]+", text.lower())).strip())


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _finish(findings: list[Finding]) -> list[Finding]:
    """Errors first, then by line; each one line of at most MAX_LINE characters."""
    fitted = []
    for finding in dict.fromkeys(findings):
        message = " ".join(finding.message.split())
        room = MAX_LINE - len(str(finding)) + len(finding.message)
        if len(str(finding)) > MAX_LINE and room > 40:
            message = _short(message, room)
        fitted.append(Finding(finding.severity, finding.location, message, finding.rule))
    order = {"error": 0, "warning": 1}
    return sorted(fitted, key=lambda f: (order[f.severity], _line_of(f.location)))


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
    match = re.match(r"^(\S+?\.\w+): (.*)$", message, re.S)  # a file-wide problem: its first line
    if match:
        return Finding("error", f"{match.group(1)}:1", match.group(2), rule)
    return Finding("error", "", message, rule)


def _line_of(location: str) -> int:
    match = re.search(r":(\d+)$", location)
    return int(match.group(1)) if match else 0
