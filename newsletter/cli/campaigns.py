"""Sending: `send` and `newsletter campaigns ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import interrupts
from ..errors import ConfigError, DeliveryError, NewsletterError
from .app import App, pass_app, resolve_issue, tuned_for_sending


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


def refuse_private_base_url(settings, adapter: str | None = None) -> None:
    """A real send puts base_url in every List-Unsubscribe and footer link: it must be
    public https://, or nobody can unsubscribe (the outbox is not a real send)."""
    from ..config import public_base_url_problem

    if (adapter or settings.adapter) == "outbox":
        return
    problem = public_base_url_problem(settings.base_url)
    if problem:
        raise ConfigError(
            f"refusing a real send: {problem}",
            hint="set base_url to the public https:// address of `newsletter serve`, or pass --insecure-base-url",
        )


def campaigns_service(app: App):
    from ..campaigns import Campaigns
    from ..store import CampaignStore

    return Campaigns(app.settings, CampaignStore(app.db, app.settings.claim_lease))


def run_sender(app: App, campaign) -> None:
    """Send with a progress bar. Ctrl-C or SIGTERM stop after the message in flight (exit
    130); an outage pauses the campaign (exit 1); both say how to resume."""
    import signal

    from sqlalchemy.exc import OperationalError

    from ..db import first_line

    service = campaigns_service(app)
    resume_hint = f"newsletter campaigns resume {campaign.id}"
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

        limit = {"smtp": "smtp_data_timeout", "outbox": ""}.get(campaign.adapter, "http_timeout")
        patience = f" (its answer may take up to {limit})" if limit else ""

        def stop(_signum, _frame) -> None:
            if not sender.stop_requested:
                sender.request_stop()
                click.echo(
                    f"\nStopping after the message in flight{patience}; Ctrl-C again to stop now.",
                    err=True,
                )
                return
            if interrupts.stop_now() == "waiting":  # else it raised KeyboardInterrupt, or is stopping already
                click.echo("\nStopping as soon as the answer already received is recorded.", err=True)

        interrupts.reset()
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with tuned_for_sending():
                summary = sender.run(campaign.id)
        except DeliveryError as exc:
            then = f"the campaign is paused with its deliveries queued; then run: {resume_hint}"
            raise DeliveryError(str(exc), hint=f"{exc.hint}; {then}" if exc.hint else then) from None
        except OperationalError as exc:
            raise NewsletterError(
                f"database error while sending: {first_line(exc.orig)}",
                hint=f"another program may hold the database; when it is free, run: {resume_hint}",
            ) from None
        except KeyboardInterrupt:
            service.pause_if_running(campaign.id)
            click.echo(f"Interrupted: campaign {campaign.id} is paused. Resume with: {resume_hint}", err=True)
            sys.exit(130)
        finally:
            # Stopping: the command is about to exit 130, and a late press (a held-down key)
            # must not kill it half-way through saying so.
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_IGN if sender.stop_requested else handler)
    print_summary(summary)
    if sender.stop_requested:
        click.echo(f"Interrupted: campaign {campaign.id} is paused. Resume with: {resume_hint}", err=True)
        sys.exit(130)
    if summary.campaign.status == "cancelled" and summary.counts["queued"]:
        raise NewsletterError(
            f"campaign {campaign.id} was cancelled while sending; {summary.counts['queued']} not sent",
            hint=f"to finish it: {resume_hint}",
        )
    if summary.campaign.status == "paused":
        click.echo(f"Stopped. Resume with: {resume_hint}")
    elif summary.counts["queued"] and summary.campaign.status != "cancelled":
        click.echo(f"{summary.counts['queued']} deliveries still queued; run: {resume_hint}")
    if campaign.adapter == "outbox":
        click.echo(
            f"Messages are in {Path(app.settings.outbox_dir) / f'campaign-{campaign.id}'}/ (one .eml each). "
            'To send for real set adapter = "smtp" and smtp_url (or a provider key) in newsletter.toml.'
        )


def print_summary(summary) -> None:
    campaign = summary.campaign
    click.echo(f"Campaign {campaign.id} '{campaign.slug}' [{campaign.status}] via {campaign.adapter}")
    counts = summary.counts
    queued = "cancelled" if campaign.status == "cancelled" else "queued"
    click.echo(
        f"  recipients {summary.total}: sent {counts['sent']}, failed {counts['failed']}, "
        f"unknown {counts['unknown']}, skipped {counts['skipped']}, {queued} {counts['queued']}"
    )
    if summary.duration is not None:
        rate = f", {summary.rate:.1f} messages/s" if summary.rate else ""
        click.echo(f"  sending time {summary.duration:.1f}s (pauses left out){rate}")
    if summary.next_retry_at and counts["queued"] and campaign.status != "cancelled":
        click.echo(f"  next retry at {summary.next_retry_at.isoformat(timespec='seconds')}")
    if summary.failures:
        click.echo("  failures by reason:")
        for reason, count in summary.failures:
            click.echo(f"    {count:>6}  {reason or '(no reason given)'}")
    if summary.transient_failed:
        click.echo(
            f"  {summary.transient_failed} failed for temporary reasons; to try them again: "
            f"newsletter campaigns retry {campaign.id}"
        )
    if summary.unknown_reasons:
        click.echo("  unknown (the server may have them; not retried automatically):")
        for reason, count in summary.unknown_reasons:
            click.echo(f"    {count:>6}  {reason or '(no reason given)'}")
        click.echo(
            "  to send them again (a reader may then get two copies): "
            f"newsletter campaigns retry {campaign.id} --unknown"
        )
    if campaign.late_results or summary.sent_late:
        click.echo(
            f"  late answers (arrived after a worker lost its claim): {campaign.late_results} possible second "
            f"cop{'y' if campaign.late_results == 1 else 'ies'}, {summary.sent_late} recorded as the send"
        )


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
@click.option("--dry-run", is_flag=True, help="List who would get it and check the adapter's settings; send nothing.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="With --dry-run: write every recipient (email, name, tags) to this CSV file.",
)
@click.option(
    "--test-to",
    "test_to",
    multiple=True,
    metavar="EMAIL",
    help="Send a [TEST] proof copy to this address only (repeatable).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Send even if lint reports errors.")
@click.option("--again", is_flag=True, help="Also send to people who already received this issue (a second copy).")
@click.option("--queue", "queue_only", is_flag=True, help="Create the campaign and leave the sending to workers.")
@click.option(
    "--insecure-base-url",
    is_flag=True,
    help="Send for real even though base_url is not public https:// (links will not work for readers).",
)
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
    output: str | None,
    test_to: tuple[str, ...],
    yes: bool,
    force: bool,
    again: bool,
    queue_only: bool,
    at,
    insecure_base_url: bool = False,
) -> None:
    """Send an issue to a segment, exactly once per subscriber; re-running resumes."""
    app.override(adapter=adapter, rate=rate)
    if not dry_run and not insecure_base_url:
        refuse_private_base_url(app.settings)
    service = campaigns_service(app)
    path = resolve_issue(app, issue)
    if test_to:
        send_proofs(app, service, path, test_to, force)
        return
    plan = service.plan_send(path, segments, again=again, force=force)
    if plan.resume is not None and dry_run:
        queued = service.store.summary(plan.resume.id).counts["queued"]
        click.echo(
            f"Dry run: campaign {plan.resume.id} of this issue is {plan.resume.status} with {queued} deliveries "
            f"queued; sending would resume it. Nothing was sent."
        )
    elif plan.resume is not None:
        resume_open_campaign(app, plan, queue_only or at is not None)
    elif dry_run:
        show_dry_run(service, plan, output)
    else:
        from ..review import require_sign_off

        require_sign_off(plan.rendered, app.settings.adapter, given=issue)  # the hint repeats the issue as given
        start_campaign(app, service, plan, yes, queue_only, at)


def send_proofs(app: App, service, path: Path, addresses: tuple[str, ...], force: bool) -> None:
    from ..delivery import make_adapter

    settings = app.settings
    _, rendered = service.prepare(path, force=force)
    adapter = make_adapter(settings, folder="proofs")
    results = service.send_proofs(rendered, addresses, adapter)
    for result in results:
        if not result.accepted:
            click.echo(f"Not sent: {result.message.to_email}: {result.reason}", err=True)
        elif settings.adapter == "outbox":
            click.echo(f"Proof for {result.message.to_email}: {adapter.path_for(result.message)}")
        else:
            click.echo(f"Proof for {result.message.to_email}: handed to {service.describe_adapter()}")
    if any(not result.accepted for result in results):
        sys.exit(1)


def resume_open_campaign(app: App, plan, queue_only: bool) -> None:
    existing = plan.resume
    if queue_only:
        click.echo(f"Campaign {existing.id} for '{existing.slug}' is already {existing.status}.")
        return
    if existing.content_hash != plan.rendered.content_hash:
        click.echo(
            "Note: the issue changed since this campaign started; it resumes with the version it started with.",
            err=True,
        )
    click.echo(f"Resuming campaign {existing.id} for '{existing.slug}'.")
    run_sender(app, existing)


DRY_RUN_SHOWN = 20


def show_dry_run(service, plan, output: str | None) -> None:
    import csv

    where = service.describe_adapter()
    click.echo(f"Dry run: '{plan.rendered.subject}' would go to {plan.count} recipient(s) ({plan.label}) via {where}.")
    if plan.already:
        verb = "would get it again (--again)" if plan.repeat else "are left out"
        click.echo(f"{plan.already} already received this issue and {verb}.")
    recipients = service.store.recipients(plan.segment, None if plan.repeat else plan.rendered.slug)
    if output:
        with open(output, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["email", "name", "tags"])
            for email, name, tags in recipients:
                writer.writerow([email, name, ";".join(tags)])  # as `subscribers export` writes them
        click.echo(f"All {plan.count} recipient(s) written to {output}.")
    else:
        click.echo(f"{'EMAIL':<40} {'NAME':<24} TAGS")
        for shown, (email, name, tags) in enumerate(recipients):
            if shown == DRY_RUN_SHOWN:
                click.echo(f"... and {plan.count - DRY_RUN_SHOWN} more (--output FILE.csv writes them all)")
                break
            click.echo(f"{email:<40} {name[:24]:<24} {', '.join(tags)}")
    click.echo("Nothing was sent.")


def start_campaign(app: App, service, plan, yes: bool, queue_only: bool, at) -> None:
    settings = app.settings
    if plan.already:
        if plan.repeat:
            click.echo(f"--again: {plan.already} of them already received this issue and will get it again.")
        else:
            click.echo(f"{plan.already} already received this issue and are left out.")
    if not yes:
        click.confirm(
            f"Send '{plan.rendered.subject}' to {plan.count} recipient(s) ({plan.label}) via {settings.adapter}?",
            abort=True,
            err=True,
        )
    campaign, queued = service.create(
        plan, adapter=settings.adapter, rate=settings.rate, scheduled_at=at, check_adapter=not (queue_only or at)
    )
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
    """List, inspect, resume, retry and cancel campaigns."""


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
    """Counts per status, sending time, failures and unknowns by reason, the clinical sign-off, what came back."""
    from ..feedback import FeedbackLog, describe_counts
    from ..review import describe

    summary = campaigns_service(app).store.summary(campaign_id)
    print_summary(summary)
    click.echo(f"  {describe(summary.campaign.snapshot)}")
    click.echo(f"Came back: {describe_counts(FeedbackLog(app.db).counts_for_campaign(campaign_id))}")


@campaigns.command("resume")
@click.argument("campaign_id", type=int)
@click.option("--insecure-base-url", is_flag=True, help="Send even though base_url is not public https://.")
@pass_app
def campaigns_resume(app: App, campaign_id: int, insecure_base_url: bool) -> None:
    """Send what a stopped, crashed or cancelled campaign has left; nobody gets it twice."""
    if not insecure_base_url:  # the links are made at send time, from today's base_url
        refuse_private_base_url(app.settings, campaigns_service(app).store.get(campaign_id).adapter)
    campaign = campaigns_service(app).reopen(campaign_id)
    run_sender(app, campaign)  # a scheduled campaign resumed by hand starts now


@campaigns.command("retry")
@click.argument("campaign_id", type=int)
@click.option(
    "--unknown",
    "include_unknown",
    is_flag=True,
    help="Also send again the deliveries whose outcome is unknown (the reader may get two copies).",
)
@click.option("--insecure-base-url", is_flag=True, help="Send even though base_url is not public https://.")
@pass_app
def campaigns_retry(app: App, campaign_id: int, include_unknown: bool, insecure_base_url: bool) -> None:
    """Queue again what failed for temporary reasons (and, with --unknown, the unknown ones), then send."""
    service = campaigns_service(app)
    if not insecure_base_url:  # as resume: the links are made at send time, from today's base_url
        refuse_private_base_url(app.settings, service.store.get(campaign_id).adapter)
    campaign, transient_count, unknown_count = service.retry(campaign_id, include_unknown)
    left = service.store.summary(campaign_id).counts["unknown"]
    click.echo(f"Requeued {transient_count} temporary failure(s) and {unknown_count} unknown.")
    if left:
        click.echo(f"{left} unknown left as they are; add --unknown to send them again.")
    if transient_count + unknown_count == 0:
        return
    run_sender(app, campaign)


@campaigns.command("cancel")
@click.argument("campaign_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def campaigns_cancel(app: App, campaign_id: int, yes: bool) -> None:
    """Stop a campaign; its unsent deliveries are not sent unless it is resumed."""
    service = campaigns_service(app)
    summary = service.store.summary(campaign_id)
    if not yes and summary.campaign.status not in ("done", "cancelled"):
        click.confirm(
            f"Cancel campaign {campaign_id} '{summary.campaign.slug}' with {summary.counts['queued']} "
            "deliveries not yet sent?",
            abort=True,
            err=True,
        )
    service.cancel(campaign_id)
    click.echo(f"Campaign {campaign_id} cancelled. To finish it later: newsletter campaigns resume {campaign_id}")
