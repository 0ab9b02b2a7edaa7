"""Engine, sessions and schema upgrades (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .errors import ConfigError, DataError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"


def make_engine(database_url: str) -> Engine:
    try:
        engine = create_engine(database_url)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"setting 'database_url' is not usable: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a campaign writes; NORMAL sync is durable across
    # process crashes (only power loss can lose the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Deleted rows are overwritten with zeros, so an erased address does not linger in
    # free pages of the file (see SubscriberList.forget).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest migration; return (before, after) revisions."""
    from alembic import command  # only when migrating: alembic (and Mako) take a fifth of a second to import

    config = _alembic_config(engine)
    before = current_revision(engine)
    try:
        command.upgrade(config, "head")
    except OperationalError as exc:
        raise ConfigError(f"cannot open database: {first_line(exc.orig)}") from None
    return before, head_revision()


def head_revision() -> str:
    """The newest migration's revision. Revisions are numbered like their files
    (`0006_private_links.py` is revision "0006", after "0005"), so every command can check
    the schema without importing alembic; tests/test_config.py holds alembic to this."""
    return max(path.name.partition("_")[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def current_revision(engine: Engine) -> str | None:
    """The database's revision, read from alembic's own table (None: not initialised)."""
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except OperationalError as exc:
        raise ConfigError(f"cannot open database: {first_line(exc.orig)}") from None


def first_line(error: BaseException) -> str:
    """Drivers add hint lines; the CLI promises one line per error."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _require_sqlite_file(engine: Engine) -> None:
    """Refuse before SQLite creates an empty file where no database was initialised (a
    command run in the wrong directory would otherwise leave a stray subscribers.db)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not url.database.startswith("file:") and not Path(url.database).exists():
            raise DataError(f"the database is not initialised (no file {url.database})", hint="run: newsletter init")


class Database:
    """An engine plus a session factory, checked to be at the current schema."""

    def __init__(self, database_url: str, *, check_schema: bool = True):
        self.engine = make_engine(database_url)
        if check_schema:
            _require_sqlite_file(self.engine)
            revision = current_revision(self.engine)
            if revision is None:
                raise DataError("the database is not initialised", hint="run: newsletter init")
            if revision != head_revision():
                raise DataError("the database schema is out of date", hint="run: newsletter init")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self._sessions() as session:
            with session.begin():
                yield session

    def new_session(self) -> Session:
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()
