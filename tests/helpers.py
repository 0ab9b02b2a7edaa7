"""Small helpers shared by tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

ISSUES = Path(__file__).resolve().parent.parent / "issues"
SAMPLE_ISSUE = ISSUES / "2026-12-understanding-anxiety.md"
SAMPLE_ISSUES = sorted(ISSUES.glob("*.md"))


def write_issue(directory: Path, body: str, front: str | None = None, name: str = "test-issue") -> Path:
    front = front if front is not None else 'subject: "A calm subject"\npreheader: "A preview line"\n'
    path = directory / f"{name}.md"
    path.write_text(f"---\n{front}---\n{textwrap.dedent(body)}", encoding="utf-8")
    return path


POSTAL = "Calm Harbor Clinic, 100 Example Street, Springfield, IL 62701"
# Settings every rendering test needs, passed as the environment layer.
ENV = {"NEWSLETTER_SECRET_KEY": "test-secret-0123456789abcdef", "NEWSLETTER_POSTAL_ADDRESS": POSTAL}
