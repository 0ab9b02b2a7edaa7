"""What every command shares: error handling, lazily loaded settings and database, issue lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from ..config import Settings, load_settings
from ..db import Database, first_line
from ..errors import NewsletterError
from ..subscribers import SubscriberList


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


def recipient_for(app: App, email: str | None):
    from ..render import SAMPLE_RECIPIENT, Recipient

    if not email:
        return SAMPLE_RECIPIENT
    record = app.subscribers().find(email)
    return Recipient(record.id, record.email, record.name, record.attributes, record.token)
