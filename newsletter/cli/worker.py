"""`newsletter worker`: send queued campaigns alongside other workers."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from ..errors import NewsletterError
from .app import App, pass_app, tuned_for_sending

if TYPE_CHECKING:
    from ..worker import Worker


@click.command()
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Campaign senders in this process (each with its own connection).",
)
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes, forked after one start-up (Linux, macOS); each as if started on its own.",
)
@click.option("--exit-when-idle", is_flag=True, help="Stop once no campaign has queued deliveries (for cron/CI).")
@pass_app
def worker(app: App, concurrency: int, processes: int, exit_when_idle: bool) -> None:
    """Send queued campaigns alongside other workers (PostgreSQL); stops cleanly on SIGTERM/Ctrl-C."""
    import signal

    from ..store import CampaignStore
    from ..worker import Worker

    if processes > 1 and not hasattr(os, "fork"):
        raise NewsletterError("--processes needs a platform that can fork", hint="start one worker per process instead")
    # Senders beyond the cores cannot use a compose process's spare core: they compose themselves.
    compose_process = processes * concurrency < (os.cpu_count() or 1)

    def make_runner() -> Worker:
        return Worker(
            app.settings,
            CampaignStore(app.db, app.settings.claim_lease),
            concurrency,
            log=lambda line: click.echo(line, err=True),
            compose_process=compose_process,
        )

    runner = make_runner()  # settings and database checked once, before any fork
    children = _fork_workers(processes - 1, lambda: _child(app, make_runner, exit_when_idle))

    def stop(signum, _frame) -> None:
        click.echo("Stopping after the messages in flight...", err=True)
        runner.request_stop()
        for pid in children:  # a SIGTERM sent to this process alone reaches every worker
            _signal(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    poller = None
    if app.settings.inbox_poll and app.settings.inbox_url:
        from ..inbox import InboxPoller

        poller = InboxPoller(app.settings, app.db, log=lambda line: click.echo(line, err=True)).start()
    shown = f"{processes} processes of {concurrency}" if processes > 1 else str(concurrency)
    click.echo(f"Worker started ({shown} sender(s)); waiting for campaigns.", err=True)
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
        failed = _wait_for(children)
    if runner.errors and exit_when_idle:
        raise NewsletterError(runner.errors[-1])
    if failed:
        raise NewsletterError(f"{failed} of the {processes} worker processes stopped with an error (see above)")


def _fork_workers(count: int, child: Callable[[], int]) -> list[int]:
    """Fork `count` more workers; each runs `child` and exits with its status. Forked after
    the imports and checks, so N processes pay for one start-up."""
    pids = []
    for _ in range(count):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(child())
        pids.append(pid)
    return pids


def _child(app: App, make_runner: Callable[[], Worker], exit_when_idle: bool) -> int:
    """A forked worker: its own database connections, stops with its parent."""
    import signal

    status = 1
    try:
        app.db.engine.dispose(close=False)  # the parent's pooled connections stay the parent's
        runner = make_runner()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _signum, _frame: runner.request_stop())
        parent = os.getppid()
        threading.Thread(target=_stop_when_orphaned, args=(parent, runner), daemon=True).start()
        with tuned_for_sending():
            runner.run(idle_exit=exit_when_idle)
        status = 1 if runner.errors and exit_when_idle else 0
    except NewsletterError as exc:
        click.echo(f"Error: {exc}", err=True)
    except Exception as exc:  # noqa: BLE001 - one line, as the parent's errors are
        click.echo(f"Error: worker process {os.getpid()}: {type(exc).__name__}: {exc}", err=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return status


def _stop_when_orphaned(parent: int, runner: Worker) -> None:
    """A parent killed outright (SIGKILL) cannot forward the stop: finish the batch and go."""
    while not runner.stop.wait(1.0):
        if os.getppid() != parent:
            runner.request_stop()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_for(children: list[int]) -> int:
    """Wait for the forked workers; how many of them failed."""
    failed = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status = 0
                break
        failed += os.waitstatus_to_exitcode(status) != 0
    return failed
