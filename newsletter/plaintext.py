"""Markdown to 72-column plain text, with links collected as numbered footnotes."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .content import shared_markdown

if TYPE_CHECKING:
    from markdown_it.token import Token

WIDTH = 72


@dataclass
class Footnotes:
    """Numbered links shared by every block of one message."""

    urls: list[str] = field(default_factory=list)

    def number(self, url: str) -> int:
        if url not in self.urls:
            self.urls.append(url)
        return self.urls.index(url) + 1

    def render(self) -> str:
        return "\n".join(f"[{index}] {url}" for index, url in enumerate(self.urls, 1))


def wrap(text: str, indent: str = "", hanging: str | None = None, width: int = WIDTH) -> str:
    hanging = indent if hanging is None else hanging
    lines = []
    for index, paragraph_line in enumerate(text.split("\n")):
        lines.append(
            textwrap.fill(
                paragraph_line,
                width=width,
                initial_indent=indent if index == 0 else hanging,
                subsequent_indent=hanging,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or (indent if index == 0 else hanging).rstrip()
        )
    return "\n".join(lines)


def inline_text(children: list[Token], notes: Footnotes) -> str:
    parts: list[str] = []
    href_stack: list[tuple[str, int]] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "link_open":
            href_stack.append((str(child.attrs.get("href", "")), len(parts)))
        elif child.type == "link_close" and href_stack:
            href, start = href_stack.pop()
            label = "".join(parts[start:])
            if href and label.strip() != href and not href.startswith("mailto:"):
                parts.append(f" [{notes.number(href)}]")
            elif href.startswith("mailto:") and label.strip() != href[7:]:
                parts.append(f" <{href[7:]}>")
        elif child.type == "image":
            alt = child.content or "".join(c.content for c in child.children or [])
            parts.append(f"[Image: {alt}]" if alt else "")
    return "".join(parts).strip()


def markdown_to_text(source: str, notes: Footnotes, width: int = WIDTH) -> str:
    """Render Markdown as wrapped plain text; link URLs go to `notes`."""
    tokens = shared_markdown().parse(source)
    blocks: list[str] = []
    lists: list[dict] = []  # one entry per open list: ordered?, next number
    quote = 0
    item_prefix: str | None = None
    heading_level = 0

    def indent() -> str:
        return "> " * quote + "   " * max(0, len(lists) - 1)

    for index, token in enumerate(tokens):
        kind = token.type
        if kind == "heading_open":
            heading_level = int(token.tag[1])
        elif kind in ("bullet_list_open", "ordered_list_open"):
            lists.append({"ordered": kind == "ordered_list_open", "n": int(token.attrs.get("start", 1) or 1)})
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            current = lists[-1]
            item_prefix = f"{current['n']}. " if current["ordered"] else "- "
            current["n"] += 1
        elif kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            quote -= 1
        elif kind == "hr":
            blocks.append("-" * 24)
        elif kind in ("fence", "code_block"):
            blocks.append(textwrap.indent(token.content.rstrip("\n"), indent() + "    "))
        elif kind == "inline":
            text = inline_text(token.children or [], notes)
            parent = tokens[index - 1].type
            if parent == "heading_open":
                underline = "=" if heading_level <= 2 else "-"
                blocks.append(f"{text}\n{underline * min(len(text), width)}")
            elif parent in ("th_open", "td_open"):
                continue
            elif item_prefix is not None:
                base = indent()
                blocks.append(wrap(text, base + item_prefix, base + " " * len(item_prefix), width))
                item_prefix = None
            elif lists:
                base = indent() + "  "
                blocks.append(wrap(text, base, base, width))
            else:
                blocks.append(wrap(text, indent(), indent(), width))
        elif kind == "tr_close":
            cells = []
            back = index - 1
            while back >= 0 and tokens[back].type != "tr_open":
                if tokens[back].type == "inline":
                    cells.insert(0, inline_text(tokens[back].children or [], notes))
                back -= 1
            blocks.append(" | ".join(cells))
    return _join(blocks)


def _join(blocks: list[str]) -> str:
    """Blank line between blocks, except between consecutive list items."""
    out: list[str] = []
    for block in blocks:
        stripped = block.lstrip("> ")
        is_item = stripped[:2] == "- " or (stripped[:1].isdigit() and ". " in stripped[:5])
        if out and is_item and out[-1].endswith("\n") is False and _last_was_item(out):
            out.append("\n" + block)
        else:
            out.append(("\n\n" if out else "") + block)
    return "".join(out)


def _last_was_item(out: list[str]) -> bool:
    last = out[-1].lstrip("\n").splitlines()[0].lstrip("> ") if out[-1].strip() else ""
    return last[:2] == "- " or (last[:1].isdigit() and ". " in last[:5])
