"""Every command is documented in the README and has help text."""

from __future__ import annotations

import click

from newsletter.cli import main

from .conftest import ROOT


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
