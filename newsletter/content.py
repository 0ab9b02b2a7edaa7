"""Issue files: YAML front matter + Markdown body made of `::: kind` content blocks.

    ::: story
    name: Sarah
    headline: Breaking free from anxiety
    quote: Ketamine gave me my life back.

    Markdown body...
    :::

Personalisation expressions (`{{ subscriber.name }}`) are lifted out of the body here,
before Markdown runs, and replaced by opaque slot markers; render.py fills them per
subscriber after the CSS has been inlined once.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from .errors import ContentError

if TYPE_CHECKING:
    import yaml
    from markdown_it import MarkdownIt

BLOCK_KINDS = ("article", "story", "tips", "resources", "cta")
# Header fields each block accepts before its Markdown body (name: required?).
BLOCK_FIELDS: dict[str, dict[str, bool]] = {
    "article": {"title": False},
    "story": {"name": True, "headline": True, "quote": False, "photo": False, "photo_alt": False},
    "tips": {"title": True},
    "resources": {"title": False},
    "cta": {"text": True, "url": True, "note": False},
}
FRONT_MATTER_FIELDS = (
    "subject",
    "preheader",
    "date",
    "template",
    "segment",
    "title",
    "greeting",
    "approved_claims",
    "reviewed_by",
    "reviewed_on",
    "reviewed_hash",
)
# The clinical sign-off (`newsletter issues approve`): these lines are about the content,
# not part of it, so the content hash leaves them out.
REVIEW_FIELDS = ("reviewed_by", "reviewed_on", "reviewed_hash")
_REVIEW_LINE = re.compile(r"^(?:reviewed_by|reviewed_on|reviewed_hash)\s*:")
SUBSCRIBER_FIELDS = ("name", "first_name", "email", "attributes")
_OPEN = re.compile(r"^:::\s*([a-z]+)\s*$")
_CLOSE = re.compile(r"^:::\s*$")
_FIELD = re.compile(r"^([a-z_]+):\s*(.*)$")
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)
_STATEMENT_SPAN = re.compile(r"\{%.*?%\}|\{#.*?#\}|\{%|\{#", re.S)
SUBSCRIBER_VARIABLE = "subscriber"


def markdown() -> MarkdownIt:
    # Loaded here, not at import: a worker sends a rendered snapshot and never parses Markdown.
    from markdown_it import MarkdownIt

    # Raw HTML is off: staff write Markdown, and nothing pasted can smuggle markup in.
    return MarkdownIt("commonmark", {"html": False, "typographer": True}).enable(
        ["table", "strikethrough", "replacements", "smartquotes"]
    )


@functools.cache
def shared_markdown() -> MarkdownIt:
    """The one parser every issue shares (built on first use)."""
    return markdown()


expression_env = SandboxedEnvironment(undefined=StrictUndefined)


@dataclass
class Slot:
    """One personalised spot: a named field of the template or an expression of the body."""

    marker: str
    kind: str  # "field" or "expression"
    source: str  # field name or expression text
    line: int = 0


@dataclass
class Block:
    kind: str
    line: int
    fields: dict[str, str]
    body: str  # Markdown, with slot markers in place of expressions
    html: str = ""
    body_line: int = 0  # file line of the body's first line (after the header fields)

    def __getattr__(self, name: str) -> Any:  # lets templates write block.headline
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)


@dataclass
class Issue:
    path: Path
    slug: str
    subject: str
    preheader: str
    date: str
    template: str
    segment: list[str]
    title: str
    blocks: list[Block]
    slots: dict[str, Slot]
    nonce: str
    source: str
    body_line: int
    meta: dict[str, Any] = field(default_factory=dict)
    field_lines: dict[str, int] = field(default_factory=dict)  # front matter key -> file line

    @property
    def content_hash(self) -> str:
        """SHA-256 of the file without its sign-off lines: what a reviewer approves."""
        return content_hash(self.source)

    @property
    def approved_claims(self) -> list[str]:
        claims = self.meta.get("approved_claims") or []
        # `approved_claims: "cured"` (a string, not a list) is one claim, not five letters
        return [claims] if isinstance(claims, str) else [str(claim) for claim in claims]

    @property
    def review(self) -> dict[str, str] | None:
        """The clinical sign-off in the front matter, or None."""
        if not self.meta.get("reviewed_by"):
            return None
        return {name.removeprefix("reviewed_"): str(self.meta.get(name) or "") for name in REVIEW_FIELDS}

    def line_of(self, key: str) -> int:
        """The file line of a front matter field (1, the '---', when it is absent)."""
        return self.field_lines.get(key, 1)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def content_hash(source: str) -> str:
    kept, in_front = [], False
    for number, line in enumerate(source.splitlines(keepends=True)):
        if line.strip() == "---":
            in_front = number == 0
        elif in_front and _REVIEW_LINE.match(line):
            continue
        kept.append(line)
    return hashlib.sha256("".join(kept).encode("utf-8")).hexdigest()


def load_issue(path: str | Path, problems: list[ContentError] | None = None) -> Issue:
    """Read and parse an issue. With a `problems` list, a broken {{ expression }} is
    recorded there and blanked instead of stopping the parse (lint reports them all)."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContentError(f"{path}: issue file not found") from None
    except UnicodeDecodeError as exc:
        raise ContentError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_issue(source, path, problems)


def parse_issue(source: str, path: Path, problems: list[ContentError] | None = None) -> Issue:
    front, body, body_line = split_front_matter(source, path)
    lines = front_matter_lines(source)
    nonce = _marker_nonce(source)
    slots: dict[str, Slot] = {}
    body = lift_expressions(body, body_line, path, nonce, slots, problems)
    blocks = parse_blocks(body, body_line, path, problems)
    for block in blocks:
        block.html = shared_markdown().render(block.body)
    when = front.get("date", "")
    if not isinstance(front.get("greeting", True), bool):
        where = f"{path}:{lines.get('greeting', 1)}"
        raise ContentError(f"{where}: front matter 'greeting' must be true or false (false leaves out \"Hi Ana,\")")
    _front_list(front, "approved_claims", path, lines)
    for name in REVIEW_FIELDS:
        _front_text(front, name, path, lines)
    return Issue(
        path=path,
        slug=path.stem,
        subject=_front_text(front, "subject", path, lines),
        preheader=_front_text(front, "preheader", path, lines),
        date=when.isoformat() if isinstance(when, date) else str(when or ""),
        template=_front_text(front, "template", path, lines) or "newsletter",
        segment=_front_list(front, "segment", path, lines),
        title=_front_text(front, "title", path, lines),
        blocks=blocks,
        slots=slots,
        nonce=nonce,
        source=source,
        body_line=body_line,
        meta=front,
        field_lines=lines,
    )


def front_matter_lines(source: str) -> dict[str, int]:
    """The file line of each top-level front matter key."""
    lines: dict[str, int] = {}
    for number, line in enumerate(source.splitlines()[1:], 2):
        if line.strip() == "---":
            break
        match = re.match(r"^([A-Za-z_]+)\s*:", line)
        if match:
            lines.setdefault(match.group(1), number)
    return lines


def _front_text(front: dict[str, Any], key: str, path: Path, lines: dict[str, int]) -> str:
    value = front.get(key)
    where = f"{path}:{lines.get(key, 1)}"
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, (str, int, float)):
        raise ContentError(f"{where}: front matter '{key}' must be text; put the value in double quotes")
    text = str(value).strip()
    if "\n" in text or "\r" in text:
        raise ContentError(f"{where}: front matter '{key}' must be one line")
    if "{{" in text or "{%" in text:
        raise ContentError(f"{where}: front matter '{key}' cannot use {{{{ }}}} expressions; write plain text")
    return text


def _front_list(front: dict[str, Any], key: str, path: Path, lines: dict[str, int]) -> list[str]:
    value = front.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ContentError(
            f"{path}:{lines.get(key, 1)}: front matter '{key}' must be a list of words, e.g. {key}: [one, two]"
        )
    return value


# PyYAML's wording -> what to do about it, in plain words.
_YAML_PROBLEMS = (
    ("mapping values are not allowed", "a ':' inside a value; put the whole value in double quotes"),
    ("cannot start any token", "a tab or a special character ('@', '`', '%') starts a value; use spaces, quote it"),
    ("flow sequence", "a '[' is not closed; close it, or put the whole value in double quotes"),
    ("flow mapping", "a '{' is not closed; close it, or put the whole value in double quotes"),
    ("quoted scalar", "a quote is not closed; end the value with the same quote it starts with"),
    ("block mapping", "this line does not fit 'key: value'; check its indentation and quotes"),
)


def yaml_problem(exc: yaml.YAMLError) -> tuple[int, str]:
    """(0-based line within the YAML, plain-words problem) for a YAML error."""
    problem = str(getattr(exc, "problem", "") or "")
    context = str(getattr(exc, "context", "") or "")
    # The construct's start is where the mistake is; PyYAML notices it later.
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    line = mark.line if mark else 0
    for needle, words in _YAML_PROBLEMS:
        if needle in problem or needle in context:
            if needle in problem:
                line = exc.problem_mark.line if getattr(exc, "problem_mark", None) else line
            return line, words
    return line, "not a 'key: value' line; put values with ':', '#', '[' or quotes in double quotes"


def split_front_matter(source: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """Return (front matter, body, line number where the body starts)."""
    lines = source.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ContentError(f"{path}:1: missing front matter (start the file with a '---' line)")
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            import yaml  # here, not at import: sending a rendered snapshot reads no YAML

            try:
                front = yaml.safe_load("".join(lines[1:index])) or {}
            except yaml.YAMLError as exc:
                line, words = yaml_problem(exc)
                raise ContentError(f"{path}:{line + 2}: front matter: {words}") from None
            if not isinstance(front, dict):
                raise ContentError(f"{path}:2: front matter must be 'key: value' lines")
            unknown = sorted(set(front) - set(FRONT_MATTER_FIELDS))
            if unknown:
                where = front_matter_lines(source).get(unknown[0], 1)
                suggestion = difflib.get_close_matches(unknown[0], FRONT_MATTER_FIELDS, 1)
                hint = f"did you mean '{suggestion[0]}'?" if suggestion else f"known: {', '.join(FRONT_MATTER_FIELDS)}"
                raise ContentError(f"{path}:{where}: unknown front matter field '{unknown[0]}' ({hint})")
            return front, "".join(lines[index + 1 :]), index + 2
    raise ContentError(f"{path}:1: front matter is not closed with a '---' line")


def lift_expressions(
    body: str,
    first_line: int,
    path: Path,
    nonce: str,
    slots: dict[str, Slot],
    problems: list[ContentError] | None = None,
) -> str:
    """Replace every {{ expression }} with a slot marker, checking it compiles and is known.

    Without `problems` the first broken expression raises; with it, each one is recorded
    and blanked (replaced by nothing) so the rest of the issue can still be checked."""

    def report(error: ContentError) -> str:
        if problems is None:
            raise error
        error.rule = "variables"  # the lint rule it falls under
        problems.append(error)
        return ""

    def line_at(text: str, offset: int) -> int:
        return first_line + text.count("\n", 0, offset)

    statement_lines: set[int] = set()

    def drop_statement(match: re.Match) -> str:
        line = line_at(body, match.start())
        if line in statement_lines:
            return ""
        statement_lines.add(line)
        return report(
            ContentError(
                f"{path}:{line}: only {{{{ ... }}}} expressions are allowed in issues, "
                "not {% %} or {# #}; write the text itself"
            )
        )

    body = _STATEMENT_SPAN.sub(drop_statement, body)

    def replace(match: re.Match) -> str:
        line = line_at(body, match.start())
        expression = match.group(1).strip()
        try:
            check_expression(expression, f"{path}:{line}")
        except ContentError as error:
            return report(error)
        marker = slot_marker(nonce, len(slots))
        slots[marker] = Slot(marker, "expression", expression, line)
        return marker

    lifted = _EXPRESSION.sub(replace, body)
    while "{{" in lifted or "}}" in lifted:
        offset = lifted.find("{{") if "{{" in lifted else lifted.find("}}")
        report(ContentError(f"{path}:{line_at(lifted, offset)}: unbalanced '{{{{' or '}}}}'; close it with '}}}}'"))
        lifted = lifted[:offset] + lifted[offset + 2 :]
    return lifted


def check_expression(expression: str, where: str) -> None:
    try:
        parsed = expression_env.parse("{{ " + expression + " }}")
        names = meta.find_undeclared_variables(parsed)
        expression_env.compile_expression(expression)
    except TemplateSyntaxError as exc:  # includes unknown filters and tests
        unknown_filter = re.match(r"No (filter|test) named '([^']*)'", exc.message or "")
        if unknown_filter:
            raise ContentError(
                f"{where}: unknown {unknown_filter.group(1)} '{unknown_filter.group(2)}' in "
                f"{{{{ {_short(expression)} }}}}; check its spelling (e.g. default, upper, title)"
            ) from None
        raise ContentError(
            f"{where}: {{{{ {_short(expression)} }}}} is not a valid expression ({(exc.message or '').rstrip('.')}); "
            "write e.g. {{ subscriber.first_name | default('there') }}"
        ) from None
    for node in parsed.find_all((nodes.Getattr, nodes.Getitem)):
        attribute = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(attribute, str) and attribute.startswith("_"):
            raise ContentError(
                f"{where}: '{attribute}' is not available in issues; use subscriber.name, "
                "subscriber.first_name, subscriber.email or subscriber.attributes.NAME"
            )
        owner = node.node
        if isinstance(owner, nodes.Name) and owner.name == SUBSCRIBER_VARIABLE and isinstance(attribute, str):
            if attribute not in SUBSCRIBER_FIELDS:
                close = difflib.get_close_matches(attribute, SUBSCRIBER_FIELDS, 1)
                instead = f"subscriber.{close[0]}" if close else f"subscriber.attributes.{attribute}"
                raise ContentError(f"{where}: subscriber has no '{attribute}'; did you mean {instead}?")
    unknown = sorted(names - {SUBSCRIBER_VARIABLE})
    if unknown:
        raise ContentError(
            f"{where}: unknown variable '{unknown[0]}' (issues can use subscriber.name, "
            "subscriber.first_name, subscriber.email and subscriber.attributes.NAME)"
        )


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _marker_nonce(source: str) -> str:
    """The slot markers' nonce: from the issue's own text, so the same issue renders to the
    same HTML (and its inlined CSS can be remembered, render.inline_css_cached), yet
    text that spells a marker would have to contain its own hash. Random in that case."""
    nonce = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return nonce if f"zslot{nonce}" not in source else secrets.token_hex(4)


def slot_marker(nonce: str, index: int) -> str:
    # Letters and digits only: survives Markdown, premailer's URL quoting and text wrapping.
    return f"zslot{nonce}x{index}z"


def parse_blocks(body: str, first_line: int, path: Path, problems: list[ContentError] | None = None) -> list[Block]:
    """Split the body into blocks. Without `problems` the first mistake raises; with it,
    each is recorded and mended the likely way (an unclosed block closes where the next
    opens), so lint can still check the rest."""
    blocks: list[Block] = []
    loose: list[str] = []
    loose_line = first_line
    current: Block | None = None
    body_lines: list[str] = []
    in_header = False

    def report(message: str) -> None:
        if problems is None:
            raise ContentError(message)
        error = ContentError(message)
        error.rule = "blocks"  # the lint rule it falls under
        problems.append(error)

    def flush_loose() -> None:
        text = "".join(loose)
        if text.strip():
            blocks.append(Block("article", loose_line, {}, text, body_line=loose_line))
        loose.clear()

    def close() -> None:
        current.body = "".join(body_lines)
        for message in _missing_fields(current, path):
            report(message)
        blocks.append(current)

    for offset, line in enumerate(body.splitlines(keepends=True)):
        number = first_line + offset
        stripped = line.strip()
        opened = _OPEN.match(stripped)
        if opened and current is not None:
            report(f"{path}:{number}: blocks cannot be nested; close '{current.kind}' with ':::' before this one")
            close()
            current = None
        if current is None:
            if opened:
                kind = opened.group(1)
                if kind not in BLOCK_KINDS:
                    report(f"{path}:{number}: unknown block '{kind}' (use one of {', '.join(BLOCK_KINDS)})")
                    kind = "article"
                flush_loose()
                current, body_lines, in_header = Block(kind, number, {}, ""), [], True
            elif _CLOSE.match(stripped):
                report(f"{path}:{number}: ':::' closes a block that was never opened; delete it or open one")
            else:
                if not loose:
                    loose_line = number
                loose.append(line)
            continue
        if _CLOSE.match(stripped):
            close()
            current = None
            continue
        if in_header:
            field_match = _FIELD.match(stripped)
            if field_match and field_match.group(1) in BLOCK_FIELDS[current.kind]:
                current.fields[field_match.group(1)] = field_match.group(2).strip()
                continue
            in_header = False
        if not body_lines:
            current.body_line = number
        body_lines.append(line)
    if current is not None:
        report(f"{path}:{current.line}: '{current.kind}' block is not closed with ':::'; add a ':::' line after it")
        close()
    flush_loose()
    return blocks


def _missing_fields(block: Block, path: Path) -> list[str]:
    missing = []
    for name, required in BLOCK_FIELDS[block.kind].items():
        if required and not block.fields.get(name):
            missing.append(f"{path}:{block.line}: {block.kind} block needs a '{name}:' line")
            block.fields[name] = ""
    return missing
