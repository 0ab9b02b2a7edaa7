"""`newsletter worker`: send queued campaigns alongside other workers."""

from __future__ import annotations

import click

from ..errors import NewsletterError
from .app import App, pass_app, tuned_for_sending


@click.command()
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Campaign senders in this process (each with its own connection).",
)
@click.option("--exit-when-idle", is_flag=True, help="Stop once no campaign has queued deliveries (for cron/CI).")
@pass_app
def worker(app: App, concurrency: int, exit_when_idle: bool) -> None:
    """Send queued campaigns alongside other workers (PostgreSQL); stops cleanly on SIGTERM/Ctrl-C."""
    import signal

    from ..store import CampaignStore
    from ..worker import Worker

    runner = Worker(
        app.settings,
        CampaignStore(app.db, app.settings.claim_lease),
        concurrency,
        log=lambda line: click.echo(line, err=True),
    )

    def stop(_signum, _frame) -> None:
        click.echo("Stopping after the messages in flight...", err=True)
        runner.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    poller = None
    if app.settings.inbox_poll and app.settings.inbox_url:
        from ..inbox import InboxPoller

        poller = InboxPoller(app.settings, app.db, log=lambda line: click.echo(line, err=True)).start()
    click.echo(f"Worker started ({concurrency} sender(s)); waiting for campaigns.", err=True)
    # Workers also send the signup confirmation emails `serve` queued (retrying failures).
    from ..signups import SignupQueueRunner, Signups

    signups = Signups(app.db, app.settings)
    if exit_when_idle:
        signups.drain()
        queue = None
    else:
        queue = SignupQueueRunner(signups).start()
    try:
        with tuned_for_sending():
            runner.run(idle_exit=exit_when_idle)
    finally:
        if queue is not None:
            queue.stop()
        if poller is not None:
            poller.close()
    if runner.errors and exit_when_idle:
        raise NewsletterError(runner.errors[-1])
