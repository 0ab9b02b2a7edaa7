"""`proofs`: the proof sheet of an issue (phone and desktop, light and dark, inbox line, text, contrast)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import App, pass_app, recipient_for, resolve_issue


@click.command()
@click.argument("issue")
@click.option("--subscriber", "email", help="Personalise for this subscriber (default: a sample reader).")
@click.option(
    "-o",
    "--output",
    "directory",
    type=click.Path(file_okay=False),
    default="proofs",
    show_default=True,
    help="Directory for SLUG.html and SLUG.png.",
)
@pass_app
def proofs(app: App, issue: str, email: str | None, directory: str) -> None:
    """Draw the issue in headless Chromium: phone and desktop, light and dark, with a contrast check."""
    from ..proofs import make_proof_sheet

    sheet = make_proof_sheet(app.settings, resolve_issue(app, issue), recipient_for(app, email), Path(directory))
    click.echo(f"Wrote {sheet.html_path} and {sheet.png_path} ({sheet.width}x{sheet.height} px).")
    click.echo(f"Inbox line on a phone: {sheet.inbox.summary()}")
    for finding in sheet.findings:
        click.echo(str(finding))
    if sheet.findings:
        click.echo(f"Contrast: {len(sheet.findings)} text element(s) below WCAG AA (listed above).")
    else:
        light = sum(item.mode == "light" for item in sheet.measured)
        click.echo(f"Contrast: all {light} text elements pass WCAG AA, in light mode and in dark mode.")
