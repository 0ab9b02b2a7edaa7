"""The `newsletter` command: parse options, call the library, print. No business logic here."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from . import __version__
from .config import CONFIG_FILE, Settings, load_settings, write_starter_config
from .db import Database, first_line, make_engine, upgrade
from .errors import DeliveryError, NewsletterError
from .models import STATUSES
from .subscribers import EXPORT_COLUMNS, SubscriberList


class NewsletterGroup(click.Group):
    """Turns the package's own errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            click.echo(f"Error: {exc}", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            ctx.exit(1)
        except OperationalError as exc:
            click.echo(f"Error: database error: {first_line(exc.orig)}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


class App:
    """Lazily loaded settings and database, shared by every command of one invocation."""

    def __init__(self, config_file: str | None, overrides: dict[str, Any]):
        self.config_file = config_file
        self.overrides = overrides
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file, overrides=self.overrides)
        return self._settings

    def override(self, **values: Any) -> None:
        """Apply command-level options, the highest layer of configuration."""
        self.overrides.update({k: v for k, v in values.items() if v is not None})
        self._settings = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.settings.database_url)
        return self._db

    def subscribers(self) -> SubscriberList:
        return SubscriberList(self.db, self.settings.secret_key)


pass_app = click.make_pass_decorator(App)


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help=f"Configuration file (default: ./{CONFIG_FILE}).",
)
@click.option("--database-url", help="Override the database_url setting.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, database_url: str | None) -> None:
    """Write newsletter issues in Markdown, render them for every mail client, send them once."""
    ctx.obj = App(config_file, {"database_url": database_url})


# -- init and config ---------------------------------------------------------------------
@main.command()
@pass_app
def init(app: App) -> None:
    """Create newsletter.toml (if missing) and create or upgrade the database schema."""
    if app.config_file is None and write_starter_config(Path(CONFIG_FILE)):
        click.echo(f"Wrote {CONFIG_FILE} with a new secret key (keep it out of version control).")
    engine = make_engine(app.settings.database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"Database is up to date (schema {after}).")
    else:
        click.echo(f"Database ready (schema {before or 'none'} -> {after}).")


@main.group()
def config() -> None:
    """Inspect the resolved configuration."""


@config.command("show")
@pass_app
def config_show(app: App) -> None:
    """Print every setting, its value (secrets masked) and where it came from."""
    rows = app.settings.describe()
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        click.echo(f"{name:<{width}}  {value or '(empty)'}  [{source}]")


# -- subscribers -------------------------------------------------------------------------
@main.group()
def subscribers() -> None:
    """Manage the subscriber list."""


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable).")
@click.option("--status", type=click.Choice(["active", "pending"]), default="active", show_default=True)
@pass_app
def subscribers_add(app: App, email: str, name: str, tags: tuple[str, ...], status: str) -> None:
    """Add one subscriber."""
    subscriber = app.subscribers().add(email, name=name, tags=tags, status=status)
    click.echo(f"Added {subscriber.email} ({subscriber.status}).")


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tag", "tags", multiple=True, help="Tag every imported row (repeatable).")
@click.option(
    "--status",
    type=click.Choice(["active", "pending", "unsubscribed"]),
    default="active",
    show_default=True,
    help="Status for new rows without a status column.",
)
@click.option("--dry-run", is_flag=True, help="Check the file and report, write nothing.")
@click.option(
    "--rejects",
    "rejects_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write rejected rows with line number and reason to this CSV file.",
)
@pass_app
def subscribers_import(
    app: App, file: Path, tags: tuple[str, ...], status: str, dry_run: bool, rejects_file: Path | None
) -> None:
    """Import a CSV file (ours, a Mailchimp audience export or a listmonk export)."""
    from .importer import Importer, write_rejects

    importer = Importer(app.subscribers(), tags=tags, status=status, dry_run=dry_run, source=f"import:{file.name}")
    size = file.stat().st_size
    with click.progressbar(length=size, label="Importing", file=sys.stderr, show_pos=False, show_percent=True) as bar:
        report = importer.run(file, progress=bar.update)
    prefix = "Dry run: would have " if dry_run else ""
    click.echo(
        f"{prefix}added {report.added}, updated {report.updated}, "
        f"unchanged {report.unchanged}, rejected {report.rejected}."
    )
    for reject in report.rejects[:20]:
        click.echo(f"  {file}:{reject.line}: {reject.reason}", err=True)
    if report.rejected > 20:
        click.echo(f"  ... and {report.rejected - 20} more (use --rejects FILE)", err=True)
    if rejects_file and report.rejects:
        write_rejects(rejects_file, report.rejects)
        click.echo(f"Rejected rows written to {rejects_file}.")
    if report.interrupted:
        raise NewsletterError(
            f"interrupted; rows through line {report.committed_through} were saved",
            hint="run the same import again: rows already imported are reported unchanged",
        )


@subscribers.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--tag")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@pass_app
def subscribers_list(app: App, status: str | None, tag: str | None, fmt: str) -> None:
    """List subscribers."""
    records = app.subscribers().iter_records(status=status, tag=tag)
    if fmt == "csv":
        write_csv(records, sys.stdout)
    elif fmt == "json":
        click.echo("[", nl=False)
        for index, record in enumerate(records):
            click.echo(("," if index else "") + "\n  " + json.dumps(record, ensure_ascii=False), nl=False)
        click.echo("\n]")
    else:
        click.echo(f"{'EMAIL':<40} {'NAME':<24} {'STATUS':<13} TAGS")
        for record in records:
            click.echo(
                f"{record['email']:<40} {record['name'][:24]:<24} {record['status']:<13} {', '.join(record['tags'])}"
            )


def write_csv(records, stream) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for record in records:
        row = dict(record)
        row["tags"] = ";".join(record["tags"])
        row["attributes"] = json.dumps(record["attributes"], ensure_ascii=False) if record["attributes"] else ""
        writer.writerow(["" if row[column] is None else row[column] for column in EXPORT_COLUMNS])
        count += 1
    return count


@subscribers.command("export")
@click.argument("file", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@pass_app
def subscribers_export(app: App, file: str) -> None:
    """Export every subscriber as CSV (re-importable unchanged). FILE defaults to stdout."""
    records = app.subscribers().iter_records()
    if file == "-":
        write_csv(records, sys.stdout)
        return
    with open(file, "w", newline="", encoding="utf-8") as handle:
        count = write_csv(records, handle)
    click.echo(f"Exported {count} subscribers to {file}.")


@subscribers.command("unsubscribe")
@click.argument("email")
@click.option("--reason", default="", help="Why (kept in the event log).")
@pass_app
def subscribers_unsubscribe(app: App, email: str, reason: str) -> None:
    """Unsubscribe an address."""
    if app.subscribers().unsubscribe(email, reason=reason):
        click.echo("Unsubscribed.")
    else:
        click.echo("Already not receiving mail; nothing changed.")


@subscribers.command("tag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
@pass_app
def subscribers_tag(app: App, email: str, tags: tuple[str, ...]) -> None:
    """Add tags to a subscriber."""
    now = app.subscribers().tag(email, tags)
    click.echo(f"Tags: {', '.join(now) or '(none)'}")


@subscribers.command("untag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
@pass_app
def subscribers_untag(app: App, email: str, tags: tuple[str, ...]) -> None:
    """Remove tags from a subscriber."""
    now = app.subscribers().untag(email, tags)
    click.echo(f"Tags: {', '.join(now) or '(none)'}")


@subscribers.command("show")
@click.argument("email")
@pass_app
def subscribers_show(app: App, email: str) -> None:
    """Print everything held about one subscriber as JSON (GDPR access request)."""
    click.echo(json.dumps(app.subscribers().show(email), indent=2, ensure_ascii=False))


@subscribers.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def subscribers_forget(app: App, email: str, yes: bool) -> None:
    """Erase a subscriber's personal data; the address is suppressed for good."""
    if not yes:
        click.confirm("Erase this subscriber's data permanently?", abort=True, err=True)
    app.subscribers().forget(email)
    click.echo("Erased. The address is on the suppression list and will never be mailed or imported.")


@subscribers.command("stats")
@pass_app
def subscribers_stats(app: App) -> None:
    """Counts by status and by tag."""
    stats = app.subscribers().stats()
    click.echo(f"Total: {stats.total}")
    for status, count in stats.by_status.items():
        click.echo(f"  {status:<13} {count}")
    click.echo(f"Suppressed (erased): {stats.suppressed}")
    if stats.by_tag:
        click.echo("Tags:")
        for tag, count in stats.by_tag.items():
            click.echo(f"  {tag:<24} {count}")


# -- issues: list, new, render, preview, lint --------------------------------------------
def resolve_issue(app: App, name: str) -> Path:
    """Accept a path, a file name in issues_dir, or a bare slug."""
    candidates = [
        Path(name),
        Path(app.settings.issues_dir) / name,
        Path(app.settings.issues_dir) / f"{name}.md",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NewsletterError(
        f"issue '{name}' not found (looked in {app.settings.issues_dir}/)", hint="run: newsletter issues list"
    )


@main.group()
def issues() -> None:
    """List issues and scaffold new ones."""


@issues.command("list")
@pass_app
def issues_list(app: App) -> None:
    """List the issues in issues_dir with their subject and date."""
    from .content import load_issue
    from .errors import ContentError

    directory = Path(app.settings.issues_dir)
    paths = sorted(directory.glob("*.md")) if directory.is_dir() else []
    if not paths:
        click.echo(f"No issues in {directory}/ yet. Start one: newsletter issues new SLUG")
        return
    for path in paths:
        try:
            issue = load_issue(path)
            click.echo(f"{issue.slug:<40} {issue.date:<11} {issue.subject}")
        except ContentError as exc:
            click.echo(f"{path.stem:<40} {'':<11} (cannot read: {exc})")


@issues.command("new")
@click.argument("slug")
@pass_app
def issues_new(app: App, slug: str) -> None:
    """Create issues/SLUG.md from the scaffold, with one example of every block."""
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,80}", slug):
        raise NewsletterError("SLUG must be lower-case letters, digits and dashes, e.g. 2027-02-sleep")
    target = Path(app.settings.issues_dir) / f"{slug}.md"
    if target.exists():
        raise NewsletterError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((app.settings.templates_path / "issue-scaffold.md").read_text(encoding="utf-8"), encoding="utf-8")
    click.echo(f"Created {target}. Edit it, then: newsletter lint {slug}")


def recipient_for(app: App, email: str | None):
    from .render import SAMPLE_RECIPIENT, Recipient

    if not email:
        return SAMPLE_RECIPIENT
    record = app.subscribers().find(email)
    return Recipient(record.id, record.email, record.name, record.attributes)


@main.command()
@click.argument("issue")
@click.option("--subscriber", "email", help="Personalise for this subscriber (default: a sample reader).")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write here instead of stdout.",
)
@pass_app
def render(app: App, issue: str, email: str | None, fmt: str, output: str) -> None:
    """Render an issue as HTML, plain text or the full MIME message."""
    from .content import load_issue
    from .render import Renderer
    from .tokens import Tokens

    settings = app.settings
    renderer = Renderer(settings)
    parsed = load_issue(resolve_issue(app, issue))
    rendered = renderer.render(parsed)
    recipient = recipient_for(app, email)
    fields = renderer.personal_fields(recipient, None, Tokens(settings.secret_key))
    html, text = rendered.personalise(recipient, fields)
    if fmt == "eml":
        from .message import MessageBuilder

        data = MessageBuilder(settings).build(rendered, recipient, html, text, fields).as_bytes()
    else:
        data = (html if fmt == "html" else text).encode("utf-8")
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(output).write_bytes(data)
        click.echo(f"Wrote {output} ({len(data)} bytes).", err=True)


@main.command()
@click.argument("issue")
@click.option("--subscriber", "email", help="Personalise for this subscriber.")
@click.option("--serve", is_flag=True, help="Serve on localhost and re-render when files change.")
@click.option("--port", default=8025, show_default=True)
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@pass_app
def preview(app: App, issue: str, email: str | None, serve: bool, port: int, no_browser: bool) -> None:
    """Write the HTML and text previews and open them in a browser."""
    import webbrowser

    from .preview import PreviewServer, write_preview

    path = resolve_issue(app, issue)
    recipient = recipient_for(app, email)
    if serve:
        server = PreviewServer(app.settings, path, recipient, port)
        click.echo(f"Serving {path} at {server.url} (text at {server.url}text); Ctrl-C to stop.")
        if not no_browser:
            webbrowser.open(server.url)
        server.serve_forever()
        return
    html_path, text_path = write_preview(app.settings, path, recipient, Path("preview"))
    click.echo(f"Wrote {html_path} and {text_path}.")
    if not no_browser:
        webbrowser.open(html_path.resolve().as_uri())


@main.command()
@click.argument("issue")
@click.option("--check-links", is_flag=True, help="Also request every link (with a timeout).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per link for --check-links.")
@pass_app
def lint(app: App, issue: str, check_links: bool, timeout: float) -> None:
    """Check an issue: subject, images, links, footer, disclaimers, crisis resources."""
    from .lint import Linter

    findings = Linter(app.settings, check_links=check_links, link_timeout=timeout).lint(resolve_issue(app, issue))
    for finding in findings:
        click.echo(str(finding))
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if errors:
        click.echo(f"{errors} error(s), {warnings} warning(s).", err=True)
        sys.exit(1)
    click.echo(f"OK: no errors, {warnings} warning(s).")


# -- sending and campaigns ---------------------------------------------------------------
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
    from .campaigns import Campaigns
    from .store import CampaignStore

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


@main.command()
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
    from .delivery import make_adapter

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


@main.group()
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
    """Counts per status, duration, rate and failures grouped by reason."""
    print_summary(campaigns_service(app).store.summary(campaign_id))


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


# -- web app -------------------------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@pass_app
def serve(app: App, host: str, port: int, threads: int) -> None:
    """Serve the subscriber web app (unsubscribe, signup, preferences, archive, webhooks) with waitress."""
    import waitress

    from .web import create_app

    web_app = create_app(app.settings)
    click.echo(f"Serving on http://{host}:{port}/ (public URL: {app.settings.base_url}); Ctrl-C to stop.")
    waitress.serve(web_app, host=host, port=port, threads=threads, ident="newsletter")


@main.command()
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

    from .store import CampaignStore
    from .worker import Worker

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
    click.echo(f"Worker started ({concurrency} sender(s)); waiting for campaigns.", err=True)
    runner.run(idle_exit=exit_when_idle)
    if runner.errors and exit_when_idle:
        raise NewsletterError(runner.errors[-1])
