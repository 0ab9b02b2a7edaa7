"""The `newsletter` command: parse options, call the library, print. One module per command group."""

from __future__ import annotations

import importlib

import click

from .. import __version__
from ..config import CONFIG_FILE
from .app import App, NewsletterGroup

# Each command's module is imported only when that command runs: `worker` never loads the
# renderer or the browser, `subscribers import` neither (start-up is a large share of a
# short command, and of every worker process).
COMMANDS = {
    "init": "setup:init",
    "config": "setup:config",
    "subscribers": "subscribers:subscribers",
    "issues": "issues:issues",
    "render": "issues:render",
    "preview": "issues:preview",
    "lint": "issues:lint",
    "proofs": "proofs:proofs",
    "send": "campaigns:send",
    "campaigns": "campaigns:campaigns",
    "serve": "web:serve",
    "worker": "worker:worker",
    "inbox": "inbox:inbox",
    "doctor": "doctor:doctor",
}


class LazyGroup(NewsletterGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _, attribute = COMMANDS[cmd_name].partition(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
