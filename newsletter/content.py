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

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt

from .errors import ContentError

BLOCK_KINDS = ("article", "story", "tips", "resources", "cta")
# Header fields each block accepts before its Markdown body (name: required?).
BLOCK_FIELDS: dict[str, dict[str, bool]] = {
    "article": {"title": False},
    "story": {"name": True, "headline": True, "quote": False, "photo": False, "photo_alt": False},
    "tips": {"title": True},
    "resources": {"title": False},
    "cta": {"text": True, "url": True, "note": False},
}
FRONT_MATTER_FIELDS = ("subject", "preheader", "date", "template", "segment", "title", "greeting")
_OPEN = re.compile(r"^:::\s*([a-z]+)\s*$")
_CLOSE = re.compile(r"^:::\s*$")
_FIELD = re.compile(r"^([a-z_]+):\s*(.*)$")
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)
_STATEMENT = re.compile(r"\{%|\{#")
SUBSCRIBER_VARIABLE = "subscriber"


def markdown() -> MarkdownIt:
    # Raw HTML is off: staff write Markdown, and nothing pasted can smuggle markup in.
    return MarkdownIt("commonmark", {"html": False, "typographer": True}).enable(
        ["table", "strikethrough", "replacements", "smartquotes"]
    )


_MD = markdown()
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

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def load_issue(path: str | Path) -> Issue:
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContentError(f"{path}: issue file not found") from None
    except UnicodeDecodeError as exc:
        raise ContentError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_issue(source, path)


def parse_issue(source: str, path: Path) -> Issue:
    front, body, body_line = split_front_matter(source, path)
    nonce = secrets.token_hex(4)
    slots: dict[str, Slot] = {}
    body = lift_expressions(body, body_line, path, nonce, slots)
    blocks = parse_blocks(body, body_line, path)
    for block in blocks:
        block.html = _MD.render(block.body)
    when = front.get("date", "")
    if not isinstance(front.get("greeting", True), bool):
        raise ContentError(f"{path}:1: front matter 'greeting' must be true or false (false leaves out \"Hi Ana,\")")
    return Issue(
        path=path,
        slug=path.stem,
        subject=_front_text(front, "subject", path),
        preheader=_front_text(front, "preheader", path),
        date=when.isoformat() if isinstance(when, date) else str(when or ""),
        template=_front_text(front, "template", path) or "newsletter",
        segment=_front_list(front, "segment", path),
        title=_front_text(front, "title", path),
        blocks=blocks,
        slots=slots,
        nonce=nonce,
        source=source,
        body_line=body_line,
        meta=front,
    )


def _front_text(front: dict[str, Any], key: str, path: Path) -> str:
    value = front.get(key)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise ContentError(f"{path}:1: front matter '{key}' must be text")
    text = str(value).strip()
    if "\n" in text or "\r" in text:
        raise ContentError(f"{path}:1: front matter '{key}' must be one line")
    if "{{" in text or "{%" in text:
        raise ContentError(f"{path}:1: front matter '{key}' cannot use template expressions")
    return text


def _front_list(front: dict[str, Any], key: str, path: Path) -> list[str]:
    value = front.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ContentError(f"{path}:1: front matter '{key}' must be a list of tags")
    return value


def split_front_matter(source: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """Return (front matter, body, line number where the body starts)."""
    lines = source.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ContentError(f"{path}:1: missing front matter (start the file with a '---' line)")
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            try:
                front = yaml.safe_load("".join(lines[1:index])) or {}
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                line = mark.line + 2 if mark else 1
                problem = getattr(exc, "problem", None) or str(exc)
                raise ContentError(f"{path}:{line}: front matter: {problem}") from None
            if not isinstance(front, dict):
                raise ContentError(f"{path}:2: front matter must be 'key: value' lines")
            unknown = sorted(set(front) - set(FRONT_MATTER_FIELDS))
            if unknown:
                raise ContentError(
                    f"{path}:1: unknown front matter field '{unknown[0]}' (known: {', '.join(FRONT_MATTER_FIELDS)})"
                )
            return front, "".join(lines[index + 1 :]), index + 2
    raise ContentError(f"{path}:1: front matter is not closed with a '---' line")


def lift_expressions(body: str, first_line: int, path: Path, nonce: str, slots: dict[str, Slot]) -> str:
    """Replace every {{ expression }} with a slot marker, checking it compiles and is known."""
    statement = _STATEMENT.search(body)
    if statement:
        line = first_line + body.count("\n", 0, statement.start())
        raise ContentError(
            f"{path}:{line}: only {{{{ ... }}}} expressions are allowed in issues, not {{% %}} or {{# #}}"
        )

    def replace(match: re.Match) -> str:
        line = first_line + body.count("\n", 0, match.start())
        expression = match.group(1).strip()
        check_expression(expression, f"{path}:{line}")
        marker = slot_marker(nonce, len(slots))
        slots[marker] = Slot(marker, "expression", expression, line)
        return marker

    lifted = _EXPRESSION.sub(replace, body)
    if "{{" in lifted or "}}" in lifted:
        offset = lifted.find("{{") if "{{" in lifted else lifted.find("}}")
        line = first_line + lifted.count("\n", 0, offset)
        raise ContentError(f"{path}:{line}: unbalanced '{{{{' or '}}}}'")
    return lifted


def check_expression(expression: str, where: str) -> None:
    try:
        parsed = expression_env.parse("{{ " + expression + " }}")
        names = meta.find_undeclared_variables(parsed)
        expression_env.compile_expression(expression)
    except TemplateSyntaxError as exc:  # includes unknown filters and tests
        raise ContentError(f"{where}: {exc.message}") from None
    unknown = sorted(names - {SUBSCRIBER_VARIABLE})
    if unknown:
        raise ContentError(
            f"{where}: unknown variable '{unknown[0]}' (issues can use subscriber.name, "
            "subscriber.first_name, subscriber.email and subscriber.attributes.NAME)"
        )


def slot_marker(nonce: str, index: int) -> str:
    # Letters and digits only: survives Markdown, premailer's URL quoting and text wrapping.
    return f"zslot{nonce}x{index}z"


def parse_blocks(body: str, first_line: int, path: Path) -> list[Block]:
    blocks: list[Block] = []
    loose: list[str] = []
    loose_line = first_line
    current: Block | None = None
    body_lines: list[str] = []
    in_header = False

    def flush_loose() -> None:
        text = "".join(loose)
        if text.strip():
            blocks.append(Block("article", loose_line, {}, text))
        loose.clear()

    for offset, line in enumerate(body.splitlines(keepends=True)):
        number = first_line + offset
        stripped = line.strip()
        if current is None:
            opened = _OPEN.match(stripped)
            if opened:
                kind = opened.group(1)
                if kind not in BLOCK_KINDS:
                    raise ContentError(f"{path}:{number}: unknown block '{kind}' (use one of {', '.join(BLOCK_KINDS)})")
                flush_loose()
                current, body_lines, in_header = Block(kind, number, {}, ""), [], True
            elif _CLOSE.match(stripped):
                raise ContentError(f"{path}:{number}: ':::' closes a block that was never opened")
            else:
                if not loose:
                    loose_line = number
                loose.append(line)
            continue
        if _CLOSE.match(stripped):
            current.body = "".join(body_lines)
            _check_fields(current, path)
            blocks.append(current)
            current = None
            continue
        if _OPEN.match(stripped):
            raise ContentError(f"{path}:{number}: blocks cannot be nested; close '{current.kind}' first")
        if in_header:
            field_match = _FIELD.match(stripped)
            if field_match and field_match.group(1) in BLOCK_FIELDS[current.kind]:
                current.fields[field_match.group(1)] = field_match.group(2).strip()
                continue
            in_header = False
        body_lines.append(line)
    if current is not None:
        raise ContentError(f"{path}:{current.line}: '{current.kind}' block is not closed with ':::'")
    flush_loose()
    return blocks


def _check_fields(block: Block, path: Path) -> None:
    for name, required in BLOCK_FIELDS[block.kind].items():
        if required and not block.fields.get(name):
            raise ContentError(f"{path}:{block.line}: {block.kind} block needs a '{name}:' line")
