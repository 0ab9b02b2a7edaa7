"""Clinical sign-off: a clinician approves one version of an issue before it goes out.

`newsletter issues approve ISSUE --by NAME` writes three lines into the front matter:
who (`reviewed_by:`), when (`reviewed_on:`) and the content hash of what they approved
(`reviewed_hash:`, SHA-256 of the file without these lines). A real send refuses an issue
without a sign-off, or whose content changed after it; the campaign keeps the sign-off
next to the hash of the version it sent.
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Settings
from .content import REVIEW_FIELDS, Issue, content_hash, load_issue
from .errors import DataError
from .render import RenderedIssue


def approve(
    path: Path,
    by: str,
    when: datetime | None = None,
    *,
    settings: Settings | None = None,
    force: bool = False,
    given: str | None = None,
) -> dict[str, str]:
    """Record the sign-off in the issue's front matter; returns it (by, on, hash).

    With `settings`, an issue with lint errors is refused unless `force`: a clinician
    signs off what lint passes. `given` is the issue as the user named it, for the hint.
    """
    name = " ".join(by.split())
    if not name:
        raise DataError("--by needs the reviewer's name", hint='e.g. --by "Dr. Ana Ruiz, MD"')
    load_issue(path)  # only an issue that parses can be approved
    if settings is not None and not force:
        from .lint import Linter  # lint renders the issue: only loaded when asked for

        errors = [finding for finding in Linter(settings).lint(path) if finding.severity == "error"]
        if errors:
            first = errors[0]
            raise DataError(
                f"{first.location}: not approved: {len(errors)} lint error(s), the first: {first.message[:90]}",
                hint=f"run: newsletter lint {shlex.quote(given or str(path))}; fix them, "
                "or approve anyway with --force",
            )
    source = path.read_text(encoding="utf-8")
    review = {
        "by": name,
        "on": (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%MZ"),
        "hash": content_hash(source),
    }
    lines = source.splitlines(keepends=True)
    closing = next(index for index in range(1, len(lines)) if lines[index].strip() == "---")
    newline = "\r\n" if lines[0].endswith("\r\n") else "\n"
    kept = [line for line in lines[1:closing] if not line.startswith(tuple(f"{f}:" for f in REVIEW_FIELDS))]
    signed = [f"reviewed_{key}: {json.dumps(value, ensure_ascii=False)}{newline}" for key, value in review.items()]
    path.write_text("".join([lines[0], *kept, *signed, *lines[closing:]]), encoding="utf-8")
    return review


def sign_off_state(issue: Issue) -> str:
    """'approved', 'changed' (since its approval) or 'unreviewed'."""
    if not issue.review:
        return "unreviewed"
    return "approved" if issue.review["hash"] == issue.content_hash else "changed"


def require_sign_off(rendered: RenderedIssue, adapter: str, given: str | None = None) -> None:
    """A real send (any adapter but the outbox) needs a sign-off of exactly this version.
    `given` is the issue as the user named it (a path or a slug), repeated in the hint."""
    if adapter == "outbox":
        return
    issue = shlex.quote(given or rendered.slug)
    hint = f'a clinician reviews it, then: newsletter issues approve {issue} --by "NAME"'
    review = rendered.review
    if not review:
        raise DataError(f"issue '{rendered.slug}' has no clinical sign-off; a real send needs one", hint=hint)
    if review.get("hash") != rendered.content_hash:
        raise DataError(
            f"issue '{rendered.slug}' changed since {review.get('by')} approved it on {review.get('on')}",
            hint=hint,
        )


def describe(snapshot: dict[str, Any]) -> str:
    """One line for `campaigns show`: who approved which version, and whether it was this one."""
    review = snapshot.get("review")
    sent = str(snapshot.get("content_hash", ""))
    if not review:
        return f"not clinically reviewed (version {sent[:12]})"
    same = "the version sent" if review.get("hash") == sent else f"a different version than sent ({sent[:12]})"
    return f"reviewed by {review.get('by')} on {review.get('on')}, version {str(review.get('hash'))[:12]}: {same}"
