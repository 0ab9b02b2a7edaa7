"""Every failure a user can cause is one `Error:` line (plus a `Hint:` line), exit code 1,
and no traceback: busy ports, unwritable files, a missing PostgreSQL driver."""

from __future__ import annotations

import socket
import sys

import pytest

from .helpers import SAMPLE_ISSUE


@pytest.fixture
def busy_port():
    """A port something is already listening on (an ephemeral one, never a fixed number)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert lines and lines[0].startswith("Error:") and len(lines) <= 2
    return lines


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_on_a_busy_port_is_one_line_before_anything_claims_to_serve(cli, busy_port):
    result = cli("serve", "--port", str(busy_port), expect=1)
    assert "Serving" not in result.output
    assert error_lines(result) == [
        f"Error: cannot listen on 127.0.0.1:{busy_port}: the port is already in use",
        "Hint: stop the program using it, or choose another port with --port",
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_preview_serve_on_a_busy_port_is_one_line(cli, busy_port):
    result = cli("preview", str(SAMPLE_ISSUE), "--serve", "--no-browser", "--port", str(busy_port), expect=1)
    assert "Serving" not in result.output
    assert error_lines(result)[0] == f"Error: cannot listen on 127.0.0.1:{busy_port}: the port is already in use"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_file_errors_are_one_line(cli, tmp_path):
    cli("subscribers", "add", "ana@example.com")
    missing_dir = tmp_path / "no-such-dir" / "out.csv"
    result = cli("subscribers", "export", str(missing_dir), expect=1)
    assert error_lines(result)[0] == f"Error: {missing_dir}: No such file or directory"
    source = tmp_path / "people.csv"
    source.write_text("email\nnot-an-address\n", encoding="utf-8")
    result = cli("subscribers", "import", str(source), "--rejects", str(missing_dir), expect=1)
    assert error_lines(result)[0] == f"Error: {missing_dir}: cannot write the rejects file: No such file or directory"


def test_missing_postgresql_driver_is_one_line(workdir, monkeypatch):
    from click.testing import CliRunner

    from newsletter.cli import main

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    result = CliRunner().invoke(
        main, ["--database-url", "postgresql+psycopg://postgres@127.0.0.1:5432/test", "subscribers", "stats"]
    )
    assert result.exit_code == 1
    assert error_lines(result) == [
        "Error: the PostgreSQL driver is not installed (no module named 'psycopg')",
        "Hint: pip install 'psycopg[binary]' (newsletter depends on it: reinstall with pip install -e .)",
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unexpected_error_is_two_lines_and_debug_shows_the_traceback(cli, monkeypatch):
    from newsletter.subscribers import SubscriberList

    def broken(self):
        raise ValueError("something nobody expected\nsecond line")

    monkeypatch.setattr(SubscriberList, "stats", broken)
    result = cli("subscribers", "stats", expect=1)
    assert error_lines(result) == [
        "Error: unexpected ValueError: something nobody expected",
        "Hint: this is a bug; run the command again with newsletter --debug ... for the traceback, and report it",
    ]
    result = cli.runner.invoke(main_command(), ["--debug", "--database-url", cli.database_url, "subscribers", "stats"])
    assert isinstance(result.exception, ValueError)


def main_command():
    from newsletter.cli import main

    return main
