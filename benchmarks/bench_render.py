"""Personalising N messages: inline CSS once per issue vs once per message, same run.

python benchmarks/bench_render.py --messages 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import Recipient, Renderer
from newsletter.tokens import Tokens

ISSUE = Path(__file__).resolve().parent.parent / "issues" / "2026-12-understanding-anxiety.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    settings = load_settings(environ={"NEWSLETTER_SECRET_KEY": "bench-secret", "NEWSLETTER_POSTAL_ADDRESS": "1 Main"})
    renderer = Renderer(settings)
    tokens = Tokens(settings.secret_key)
    issue = load_issue(ISSUE)
    readers = [Recipient(i, f"reader{i}@example.com", f"Reader {i}", {}) for i in range(args.messages)]

    started = time.perf_counter()
    rendered = renderer.render(issue)  # inline once, included in the timing
    once = [rendered.personalise(r, renderer.personal_fields(r, 1, tokens))[0] for r in readers]
    inline_once = time.perf_counter() - started

    started = time.perf_counter()
    each = [renderer.render_reference(issue, rendered, r, renderer.personal_fields(r, 1, tokens)) for r in readers]
    inline_each = time.perf_counter() - started

    assert once == each, "inline-once output differs from inlining each message"
    size = len(once[0].encode()) / 1024
    print(f"messages: {args.messages}, HTML size {size:.1f} KB")
    print(f"inline once per issue : {args.messages / inline_once:10.0f} messages/s")
    print(f"inline per message    : {args.messages / inline_each:10.0f} messages/s")
    print(f"ratio                 : {inline_each / inline_once:10.1f}x faster, identical output")


if __name__ == "__main__":
    main()
