"""`newsletter doctor`: deliverability checks before the first real send."""

from __future__ import annotations

import click


@click.command()
def doctor() -> None:
    """Check DNS (SPF, DKIM, DMARC, MX), the SMTP relay and one-click unsubscribe."""
