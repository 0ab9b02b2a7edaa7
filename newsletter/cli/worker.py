"""`newsletter worker`: send queued campaigns alongside other workers."""

from __future__ import annotations

import click

from ..errors import NewsletterError
from .app import App, pass_app

SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the interpreter lock while another waits


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
    import gc
    import signal
    import sys

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
    # What start-up loaded (modules, the mapped schema) lives as long as the process: frozen,
    # the collector stops scanning it in every full collection and at exit (about 5% of a
    # short worker's CPU; docs/performance.md, "Workers on PostgreSQL").
    gc.freeze()
    # The sending thread wakes for every reply (SMTP, PostgreSQL) while the compose thread
    # computes: with Python's 5 ms switch interval each wake-up may wait that long for the
    # interpreter lock; 0.5 ms keeps the wire busy (about 15% more messages/s for one worker).
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        runner.run(idle_exit=exit_when_idle)
    finally:
        sys.setswitchinterval(switch_interval)  # as it was, for a program that called the command itself
        if queue is not None:
            queue.stop()
        if poller is not None:
            poller.close()
    if runner.errors and exit_when_idle:
        raise NewsletterError(runner.errors[-1])
