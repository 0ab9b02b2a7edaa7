"""What every command shares: error handling, lazily loaded settings and database, issue lookup."""

from __future__ import annotations

import errno
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..addresses import redact_addresses
from ..config import Settings, load_settings
from ..db import Database, first_line
from ..errors import NewsletterError
from ..subscribers import SubscriberList


class NewsletterGroup(click.Group):
    """Turns every error into one `Error:` line on stderr (plus a `Hint:` line saying what
    to do, where there is one) and exit code 1; no traceback reaches the user. `newsletter
    --debug ...` shows the traceback of an unexpected error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise  # click's own exits and usage errors (exit code 2) print themselves
        except click.exceptions.Abort:  # "no" at a confirmation question
            fail(ctx, "not confirmed; nothing was done")
        except BrokenPipeError:
            # The reader of our output went away (`... | head`): what it wanted, it got.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except NewsletterError as exc:
            fail(ctx, str(exc), exc.hint)
        except OperationalError as exc:
            fail(ctx, f"database error: {first_line(exc.orig)}", "check database_url and that the database is running")
        except SQLAlchemyError as exc:
            fail(ctx, f"database error: {redact_addresses(first_line(getattr(exc, 'orig', None) or exc))}")
        except OSError as exc:
            # Files that cannot be read or written, full disks, refused connections.
            where = f"{exc.filename}: " if exc.filename else ""
            fail(ctx, f"{where}{exc.strerror or first_line(exc)}", _os_hint(exc))
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except ModuleNotFoundError as exc:
            if exc.name in ("psycopg", "psycopg2"):
                fail(
                    ctx,
                    f"the PostgreSQL driver is not installed (no module named {exc.name!r})",
                    "pip install 'psycopg[binary]' (newsletter depends on it: reinstall with pip install -e .)",
                )
            fail(ctx, f"a module is missing: {exc.name}", "reinstall: pip install -e .")
        except Exception as exc:
            if getattr(ctx.obj, "debug", False):
                raise
            fail(
                ctx,
                f"unexpected {type(exc).__name__}: {redact_addresses(first_line(exc))}",
                "this is a bug; run the command again with newsletter --debug ... for the traceback, and report it",
            )


def fail(ctx: click.Context, message: str, hint: str | None = None) -> None:
    click.echo(f"Error: {message}", err=True)
    if hint:
        click.echo(f"Hint: {hint}", err=True)
    ctx.exit(1)


def _os_hint(exc: OSError) -> str | None:
    if isinstance(exc, PermissionError):
        return "check the file's permissions, or choose another path"
    if exc.errno == errno.ENOSPC:
        return "free some disk space and run the command again"
    return None


def listen_error(host: str, port: int, exc: OSError) -> NewsletterError:
    """A port that cannot be listened on, as one line (before anything says it is serving)."""
    if exc.errno == errno.EADDRINUSE:
        return NewsletterError(
            f"cannot listen on {host}:{port}: the port is already in use",
            hint="stop the program using it, or choose another port with --port",
        )
    return NewsletterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="choose another --port")


class App:
    """Lazily loaded settings and database, shared by every command of one invocation."""

    def __init__(self, config_file: str | None, overrides: dict[str, Any], debug: bool = False):
        self.config_file = config_file
        self.debug = debug
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

SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the interpreter lock while another waits


@contextmanager
def tuned_for_sending() -> Iterator[None]:
    """What a sending process (`send`, `worker`) sets while it sends.

    - What start-up loaded lives as long as the process: frozen, the collector stops
      scanning it in every full collection and at exit (about 5% of a short worker's CPU).
    - The threads that send (a pool's connections, the claim renewal) wake for every SMTP
      and database reply: with Python's 5 ms switch interval each wake-up may wait that long
      for the interpreter lock while another thread computes; 0.5 ms keeps the wire busy
      (docs/performance.md: about 15% more messages/s for one worker, more for a pool).
    """
    gc.freeze()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        # As it was, for a program that called the command itself (a test runner, say):
        # frozen objects are never collected, and they may hold database connections.
        sys.setswitchinterval(switch_interval)
        gc.unfreeze()


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
