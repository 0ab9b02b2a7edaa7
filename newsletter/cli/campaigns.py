"""Sending: `send` and `newsletter campaigns ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import DeliveryError, NewsletterError
from .app import App, pass_app, resolve_issue


def parse_rate(_ctx, _param, value: str | None) -> float | None:
    if value is None:
        return None
    number = value.strip().lower().removesuffix("/s")
    try:
        rate = float(number)
    except ValueError:
        raise click.BadParameter("use messages per second, e.g. 50/s") from None
    if rate <= 0:
        raise click.BadParameter("must be more than 0")
    return rate


def campaigns_service(app: App):
    from ..campaigns import Campaigns
    from ..store import CampaignStore

    return Campaigns(app.settings, CampaignStore(app.db, app.settings.claim_lease))


def run_sender(app: App, campaign) -> None:
    """Send with a progress bar; Ctrl-C or SIGTERM stop after the message in flight."""
    import signal

    service = campaigns_service(app)
    total = service.store.summary(campaign.id).total
    with click.progressbar(
        length=total,
        label=f"Campaign {campaign.id}",
        file=sys.stderr,
        show_eta=True,
        show_pos=True,
        item_show_func=lambda p: f"sent {p.sent}, failed {p.failed}, {p.rate:.0f}/s" if p else "",
    ) as bar:
        done = service.store.summary(campaign.id).finished
        bar.update(done)

        def on_progress(progress) -> None:
            nonlocal done
            bar.update(progress.done - done, progress)
            done = progress.done

        sender = service.sender(campaign, on_progress)

        def stop(_signum, _frame) -> None:
            if sender.stop_requested:
                raise KeyboardInterrupt
            sender.request_stop()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            summary = sender.run(campaign.id)
        except DeliveryError as exc:
            then = f"then run: newsletter campaigns resume {campaign.id}"
            raise DeliveryError(str(exc), hint=f"{exc.hint}; {then}" if exc.hint else then) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print_summary(summary)
    if summary.campaign.status == "paused" or sender.stop_requested:
        click.echo(f"Stopped. Resume with: newsletter campaigns resume {campaign.id}")
    elif summary.counts["queued"]:
        click.echo(
            f"{summary.counts['queued']} deliveries still queued; run: newsletter campaigns resume {campaign.id}"
        )
    if campaign.adapter == "outbox":
        click.echo(
            f"Messages are in {Path(app.settings.outbox_dir) / f'campaign-{campaign.id}'}/ (one .eml each). "
            'To send for real set adapter = "smtp" and smtp_url (or a provider key) in newsletter.toml.'
        )


def print_summary(summary) -> None:
    campaign = summary.campaign
    click.echo(f"Campaign {campaign.id} '{campaign.slug}' [{campaign.status}] via {campaign.adapter}")
    counts = summary.counts
    click.echo(
        f"  recipients {summary.total}: sent {counts['sent']}, failed {counts['failed']}, "
        f"skipped {counts['skipped']}, queued {counts['queued']}"
    )
    if summary.duration is not None:
        rate = f", {summary.rate:.1f} messages/s" if summary.rate else ""
        click.echo(f"  duration {summary.duration:.1f}s{rate}")
    if summary.next_retry_at and counts["queued"]:
        click.echo(f"  next retry at {summary.next_retry_at.isoformat(timespec='seconds')}")
    if summary.failures:
        click.echo("  failures by reason:")
        for reason, count in summary.failures:
            click.echo(f"    {count:>6}  {reason or '(no reason given)'}")


@click.command()
@click.argument("issue")
@click.option(
    "--segment",
    "segments",
    multiple=True,
    metavar="TAG",
    help="Send to active subscribers with this tag (repeatable; default: the issue's segment).",
)
@click.option("--adapter", type=click.Choice(["outbox", "smtp", "postmark", "sendgrid", "mailgun"]))
@click.option("--rate", callback=parse_rate, help="Cap on messages per second, e.g. 20/s.")
@click.option("--dry-run", is_flag=True, help="Show who would get it and check a message; send nothing.")
@click.option(
    "--test-to",
    "test_to",
    multiple=True,
    metavar="EMAIL",
    help="Send a [TEST] proof copy to this address only (repeatable).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Send even if lint reports errors.")
@click.option("--again", is_flag=True, help="Send an issue that was already sent, as a new campaign.")
@click.option("--queue", "queue_only", is_flag=True, help="Create the campaign and leave the sending to workers.")
@click.option(
    "--at",
    "at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d %H:%M%z"]),
    help='Queue for workers to start at this time, e.g. "2026-12-01T09:00:00+00:00".',
)
@pass_app
def send(
    app: App,
    issue: str,
    segments: tuple[str, ...],
    adapter: str | None,
    rate: float | None,
    dry_run: bool,
    test_to: tuple[str, ...],
    yes: bool,
    force: bool,
    again: bool,
    queue_only: bool,
    at,
) -> None:
    """Send an issue to a segment, exactly once per subscriber; re-running resumes."""
    from ..delivery import make_adapter

    app.override(adapter=adapter, rate=rate)
    settings = app.settings
    service = campaigns_service(app)
    path = resolve_issue(app, issue)
    parsed, rendered = service.prepare(path, force=force)
    if test_to:
        problems = service.send_proofs(rendered, test_to, make_adapter(settings, folder="proofs"))
        for problem in problems:
            click.echo(f"Not sent: {problem}", err=True)
        if problems:
            sys.exit(1)
        click.echo(f"Sent {len(test_to)} proof cop{'y' if len(test_to) == 1 else 'ies'} via {settings.adapter}.")
        return
    existing = service.open_campaign(rendered.slug, again)
    if existing is not None and (queue_only or at):
        click.echo(f"Campaign {existing.id} for '{existing.slug}' is already {existing.status}.")
        return
    if existing is not None:
        if existing.content_hash != rendered.content_hash:
            click.echo(
                "Note: the issue changed since this campaign started; it resumes with the version it started with.",
                err=True,
            )
        click.echo(f"Resuming campaign {existing.id} for '{existing.slug}'.")
        run_sender(app, existing)
        return
    segment = service.segment_for(parsed, segments)
    count = service.store.count_recipients(segment)
    label = ", ".join(segment) or "all active subscribers"
    if dry_run:
        click.echo(
            f"Dry run: '{rendered.subject}' would go to {count} recipient(s) ({label}) via "
            f"{settings.adapter}. Nothing was sent."
        )
        return
    if count == 0:
        raise NewsletterError(f"no active subscribers in segment {label}")
    if not yes:
        click.confirm(
            f"Send '{rendered.subject}' to {count} recipient(s) ({label}) via {settings.adapter}?",
            abort=True,
            err=True,
        )
    campaign, queued = service.create(rendered, segment, settings.adapter, settings.rate, scheduled_at=at)
    when = f" to start at {at.isoformat()}" if at else ""
    click.echo(f"Campaign {campaign.id}: {queued} deliveries queued{when}.")
    if queue_only or at:
        if app.db.dialect == "postgresql":
            click.echo("Workers send it: newsletter worker (on as many machines as you like).")
        else:
            click.echo(f"Workers need PostgreSQL; on SQLite send it with: newsletter campaigns resume {campaign.id}")
        return
    run_sender(app, campaign)


@click.group()
def campaigns() -> None:
    """List, inspect, resume and cancel campaigns."""


@campaigns.command("list")
@pass_app
def campaigns_list(app: App) -> None:
    """Every campaign, newest first."""
    rows = campaigns_service(app).store.list()
    if not rows:
        click.echo("No campaigns yet. Send one: newsletter send ISSUE")
        return
    click.echo(f"{'ID':>4}  {'STATUS':<10} {'CREATED':<20} {'ADAPTER':<9} SLUG")
    for campaign in rows:
        created = campaign.created_at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{campaign.id:>4}  {campaign.status:<10} {created:<20} {campaign.adapter:<9} {campaign.slug}")


@campaigns.command("show")
@click.argument("campaign_id", type=int)
@pass_app
def campaigns_show(app: App, campaign_id: int) -> None:
    """Counts per status, duration, rate, failures grouped by reason, the clinical sign-off, what came back."""
    from ..feedback import FeedbackLog, describe_counts
    from ..review import describe

    summary = campaigns_service(app).store.summary(campaign_id)
    print_summary(summary)
    click.echo(f"  {describe(summary.campaign.snapshot)}")
    click.echo(f"Came back: {describe_counts(FeedbackLog(app.db).counts_for_campaign(campaign_id))}")


@campaigns.command("resume")
@click.argument("campaign_id", type=int)
@pass_app
def campaigns_resume(app: App, campaign_id: int) -> None:
    """Send what a stopped or crashed campaign has left; nobody gets it twice."""
    campaign = campaigns_service(app).store.get(campaign_id)
    if campaign.status == "cancelled":
        raise NewsletterError(f"campaign {campaign_id} was cancelled")
    run_sender(app, campaign)  # a scheduled campaign resumed by hand starts now


@campaigns.command("cancel")
@click.argument("campaign_id", type=int)
@pass_app
def campaigns_cancel(app: App, campaign_id: int) -> None:
    """Stop a campaign for good; queued deliveries are not sent."""
    campaigns_service(app).cancel(campaign_id)
    click.echo(f"Campaign {campaign_id} cancelled.")
