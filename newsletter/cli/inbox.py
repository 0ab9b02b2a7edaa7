"""`newsletter inbox ...`: bounces, complaints and mailto unsubscribes from the feedback mailbox."""

from __future__ import annotations

import json
import sys

import click

from .app import App, pass_app

EX_TEMPFAIL = 75  # sysexits.h: the MTA keeps the message and pipes it again later


@click.group()
def inbox() -> None:
    """Apply bounces, complaints and mailto unsubscribes from the feedback mailbox."""


@inbox.command("check")
@click.option("--url", help="Mailbox to read instead of the inbox_url setting.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def inbox_check(app: App, url: str | None, fmt: str) -> None:
    """Read the mailbox, apply what it holds, move or mark each message (safe to run again)."""
    from ..inbox import Inbox

    if url:
        app.override(inbox_url=url)
    report = Inbox(app.settings, app.db).check()
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)


@inbox.command("process")
@click.option("--recipient", "recipients", multiple=True, help="Envelope recipient, as the MTA knows it.")
@pass_app
def inbox_process(app: App, recipients: tuple[str, ...]) -> None:
    """Apply one message read from stdin (an MTA pipe: `| newsletter inbox process`)."""
    from ..errors import NewsletterError
    from ..inbox import Inbox

    raw = sys.stdin.buffer.read()
    if not raw.strip():
        raise NewsletterError("no message on stdin", hint="newsletter inbox process < message.eml")
    # Any failure, a missing database included, asks the MTA to keep the message and retry
    # rather than bounce the bounce: once the setup is fixed, nothing was lost.
    try:
        report = Inbox(app.settings, app.db).process(raw, recipients)
    except NewsletterError as exc:
        click.echo(f"Error: {exc}", err=True)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", err=True)
        sys.exit(EX_TEMPFAIL)
    except Exception as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    for line in report.lines():
        click.echo(line)
