"""`init` and `config show`."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import CONFIG_FILE, write_starter_config
from ..db import make_engine, upgrade
from .app import App, pass_app


@click.command()
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


@click.group()
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
