"""`newsletter subscribers ...`: the subscriber list."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from ..errors import NewsletterError
from ..models import STATUSES
from ..subscribers import EXPORT_COLUMNS
from .app import App, pass_app


@click.group()
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
    help="Write rejected rows, as they were plus a reject_reason column, to this CSV file (fix it, import it again).",
)
@click.option(
    "--delimiter",
    type=click.Choice([",", ";", "tab", "|", "pipe"]),
    metavar="CHAR",
    help="Field delimiter: , ; tab or | (default: detected from the header).",
)
@click.option("--encoding", help="Text encoding, e.g. utf-8, cp1252, utf-16 (default: detected).")
@pass_app
def subscribers_import(
    app: App,
    file: Path,
    tags: tuple[str, ...],
    status: str,
    dry_run: bool,
    rejects_file: Path | None,
    delimiter: str | None,
    encoding: str | None,
) -> None:
    """Import a CSV file (ours, a Mailchimp audience export or a listmonk export)."""
    from ..importer import Importer

    importer = Importer(
        app.subscribers(),
        tags=tags,
        status=status,
        dry_run=dry_run,
        source=f"import:{file.name}",
        encoding=encoding,
        delimiter={"tab": "\t", "pipe": "|"}.get(delimiter or "", delimiter),
    )
    size = file.stat().st_size
    with click.progressbar(length=size, label="Importing", file=sys.stderr, show_pos=False, show_percent=True) as bar:
        report = importer.run(file, progress=bar.update, rejects_path=rejects_file)
    if report.format:
        click.echo(f"Read {file} with {report.format.describe()}.", err=True)
    prefix = "Dry run: would have " if dry_run else ""
    click.echo(
        f"{prefix}added {report.added}, updated {report.updated}, "
        f"unchanged {report.unchanged}, rejected {report.rejected}."
    )
    for reject in report.rejects:
        click.echo(f"  {file}:{reject.line}: {reject.reason}", err=True)
    if report.rejected > len(report.rejects):
        more = report.rejected - len(report.rejects)
        click.echo(f"  ... and {more} more" + ("" if rejects_file else " (use --rejects FILE)"), err=True)
    if report.rejects_written:
        click.echo(f"Rejected rows written to {rejects_file}: fix them there and import that file.")
    again = "run the same import again: rows already imported are reported unchanged"
    if report.stopped:
        raise NewsletterError(f"{report.stopped}; rows through line {report.committed_through} were saved", hint=again)
    if report.interrupted:  # exit 130, as every command stopped by Ctrl-C or SIGTERM
        click.echo(f"Interrupted: rows through line {report.committed_through} were saved.", err=True)
        click.echo(f"Hint: {again}", err=True)
        sys.exit(130)


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


def write_csv(records, stream, raw: bool = False) -> int:
    """CSV of the records; unless `raw`, every cell is made safe to open in a spreadsheet."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for record in records:
        row = dict(record)
        row["tags"] = ";".join(record["tags"])
        row["attributes"] = json.dumps(record["attributes"], ensure_ascii=False) if record["attributes"] else ""
        cells = ["" if row[column] is None else str(row[column]) for column in EXPORT_COLUMNS]
        writer.writerow(cells if raw else [spreadsheet_safe(cell) for cell in cells])
        count += 1
    return count


FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """OWASP CSV injection guidance: a cell a spreadsheet would evaluate starts with a quote."""
    return f"'{cell}" if cell.startswith(FORMULA_LEAD) else cell


@subscribers.command("export")
@click.argument("file", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--raw",
    is_flag=True,
    help="Write cells exactly as stored, even those a spreadsheet would run as a formula (=, +, -, @).",
)
@pass_app
def subscribers_export(app: App, file: str, raw: bool) -> None:
    """Export every subscriber as CSV (re-importable unchanged). FILE defaults to stdout.

    Cells starting with = + - @ (or a tab or carriage return) get a leading apostrophe
    so a spreadsheet shows them as text instead of running them (OWASP CSV injection).
    --raw writes them as stored: use it for a backup you mean to import again.
    """
    records = app.subscribers().iter_records()
    if file == "-":
        write_csv(records, sys.stdout, raw)
        return
    with open(file, "w", newline="", encoding="utf-8") as handle:
        count = write_csv(records, handle, raw)
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
    removed = app.subscribers().forget(email, outbox_dir=app.settings.outbox_dir)
    files = f" Deleted {removed} message file(s) from the outbox." if removed else ""
    click.echo(f"Erased.{files} The address is on the suppression list and will never be mailed or imported.")


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
