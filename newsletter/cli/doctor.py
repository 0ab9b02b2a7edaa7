"""`newsletter doctor`: deliverability checks before the first real send."""

from __future__ import annotations

import json
import sys

import click

from .app import App, pass_app

MARK = {"ok": "ok", "warning": "WARNING", "problem": "PROBLEM"}


@click.command()
@click.option("--resolver", help="DNS server to ask, HOST:PORT (default: dns_resolver, else the system's).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def doctor(app: App, resolver: str | None, fmt: str) -> None:
    """Check SPF, DKIM, DMARC, MX, the SMTP relay and one-click unsubscribe; exit 1 on any problem."""
    from ..doctor import CHECKLIST, Doctor, make_resolver

    if resolver:
        app.override(dns_resolver=resolver)
    settings = app.settings
    diagnosis = Doctor(settings, make_resolver(settings.dns_resolver)).run()
    if fmt == "json":
        click.echo(json.dumps(diagnosis.as_dict(), indent=2))
    else:
        for finding in diagnosis.findings:
            click.echo(f"{finding.check:<10} {MARK[finding.status]:<8} {finding.message}")
            if finding.fix and finding.status != "ok":
                click.echo(f"{'':<10} {'':<8} fix: {finding.fix}")
            for link in finding.links if finding.status != "ok" else []:
                click.echo(f"{'':<10} {'':<8} see: {link}")
        click.echo("\nWhat the doctor cannot see (Gmail/Yahoo bulk-sender rules, 2024):")
        for item, links in CHECKLIST:
            click.echo(f"  - {item}: {' '.join(links)}")
        problems = len(diagnosis.problems)
        warnings = sum(1 for finding in diagnosis.findings if finding.status == "warning")
        click.echo(
            f"\n{problems} problem(s), {warnings} warning(s)."
            + (" Fix the problems before a real send." if problems else " Ready to send.")
        )
    if not diagnosis.healthy:
        sys.exit(1)
