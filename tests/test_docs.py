"""Every command is documented in the README and has help text."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import click
from click.testing import CliRunner

from newsletter.cli import main

from .conftest import ROOT
from .helpers import ENV


def commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        if isinstance(command, click.Group):
            yield from commands(command, path)
        else:
            yield path, command


def test_every_command_is_in_the_readme_with_help():
    readme = (ROOT / "README.md").read_text()
    missing = [" ".join(path) for path, _ in commands(main) if f"newsletter {' '.join(path)}" not in readme]
    assert missing == []
    assert [" ".join(path) for path, command in commands(main) if not command.help] == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest"
    assert command in readme and command in ci
    assert "set -euo pipefail" in ci


# --- Every `newsletter ...` example in the README's ```sh blocks runs -----------------------

# Examples that cannot run inside a test, matched by prefix, each with the reason.
SKIP = {
    # Never returns: a live preview server that reloads on save.
    "newsletter preview 2026-12-understanding-anxiety --serve": "serves until Ctrl-C",
    # Never returns: polls the database for campaigns until stopped.
    "newsletter worker": "runs until stopped",
    # Never returns: the web app.
    "newsletter serve": "serves until Ctrl-C",
    # Checks DNS (SPF/DKIM/DMARC), the SMTP server and the inbox of a live deployment.
    "newsletter doctor": "needs a live mail service, DNS and resolver",
    # Fetches every link in the issue; this machine has no internet.
    "newsletter lint 2026-12-understanding-anxiety --check-links": "needs the internet",
    # Reads the IMAP/maildir feedback mailbox of a deployment (inbox_url is not set here).
    "newsletter inbox check": "needs a live feedback mailbox",
    # Sends through a real SMTP server at the segment's rate.
    "newsletter send 2026-12-understanding-anxiety --segment caregivers --adapter smtp": "needs an SMTP server",
}
# Examples that run but, in README order, refuse by design: prefix -> (exit code, reason).
EXPECTED_FAILURE: dict[str, tuple[int, str]] = {
    # Campaign 1 is the quick start's, already done: only a running campaign can be cancelled.
    "newsletter campaigns cancel 1": (1, "campaign 1 is already done"),
    # Everyone already received this issue (quick start, then the prompted send): refuses without --again.
    "newsletter send 2026-12-understanding-anxiety --queue": (1, "second send of a sent issue refuses"),
}
# Placeholders stand for a value the reader supplies.
PLACEHOLDER = re.compile(r"<[^>]+>|\b(?:ID|ISSUE|TOKEN|N)\b|\.\.\.")


def readme_commands() -> list[str]:
    """Every `newsletter ...` command in the README's ```sh blocks, in order."""
    commands_found = []
    for block in re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("newsletter ") and not PLACEHOLDER.search(part):
                    commands_found.append(part)
    return commands_found


def prepare_like_the_quick_start(work: Path) -> None:
    shutil.copytree(ROOT / "issues", work / "issues")
    shutil.copytree(ROOT / "samples", work / "samples")
    # The subscriber examples import files a reader would bring; these stand in for them.
    sample = (ROOT / "samples" / "subscribers.csv").read_text(encoding="utf-8")
    (work / "list.csv").write_text(sample.replace("@example.com", "@list.example"), encoding="utf-8")
    (work / "mailchimp-export.csv").write_text(
        "Email Address,First Name,Last Name\nmc@example.com,Mia,Chen\n", encoding="utf-8"
    )
    (work / "excel-export.csv").write_bytes("email;name\nzoe@example.com;Zoë Weiß\n".encode("cp1252"))


def skip_reason(command: str) -> str | None:
    for prefix, reason in SKIP.items():
        if command.startswith(prefix):
            return reason
    needs_browser = command.startswith("newsletter proofs") or "--contrast" in command
    if needs_browser and shutil.which("chromium") is None:
        return "needs Chromium"
    if "postgresql" in command:
        return "needs PostgreSQL"
    return None


def test_every_readme_command_example_runs(workdir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_POSTAL_ADDRESS", ENV["NEWSLETTER_POSTAL_ADDRESS"])
    monkeypatch.setattr("webbrowser.open", lambda *args, **kwargs: True)
    prepare_like_the_quick_start(workdir)
    examples = readme_commands()
    assert examples[:2] == ["newsletter init", "newsletter subscribers import samples/subscribers.csv"]
    # Every skip and expected failure still names a README example, so neither list goes stale.
    assert [prefix for prefix in [*SKIP, *EXPECTED_FAILURE] if not any(c.startswith(prefix) for c in examples)] == []
    runner = CliRunner()
    failures = []
    for command in examples:
        if skip_reason(command):
            continue
        result = runner.invoke(main, shlex.split(command)[1:], input="y\n")  # a reader answering yes at a prompt
        expected = next((code for prefix, (code, _) in EXPECTED_FAILURE.items() if command.startswith(prefix)), 0)
        if result.exit_code != expected:
            failures.append(f"{command}\n  exit {result.exit_code}, expected {expected}: {result.output[-600:]}")
    assert failures == []
