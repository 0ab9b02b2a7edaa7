"""The `newsletter` command: parse options, call the library, print. One module per command group."""

from __future__ import annotations

import click

from .. import __version__
from ..config import CONFIG_FILE
from . import campaigns, doctor, inbox, issues, proofs, setup, subscribers, web, worker
from .app import App, NewsletterGroup


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help=f"Configuration file (default: ./{CONFIG_FILE}).",
)
@click.option("--database-url", help="Override the database_url setting.")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error (for a bug report).")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, database_url: str | None, debug: bool) -> None:
    """Write newsletter issues in Markdown, render them for every mail client, send them once."""
    ctx.obj = App(config_file, {"database_url": database_url}, debug=debug)


for command in (
    setup.init,
    setup.config,
    subscribers.subscribers,
    issues.issues,
    issues.render,
    issues.preview,
    issues.lint,
    proofs.proofs,
    campaigns.send,
    campaigns.campaigns,
    web.serve,
    worker.worker,
    inbox.inbox,
    doctor.doctor,
):
    main.add_command(command)
