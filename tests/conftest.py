"""Shared fixtures: a real database (SQLite, and PostgreSQL where reachable) and the CLI."""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.db import Database, make_engine, upgrade

from .helpers import ENV

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SECRET = ENV["NEWSLETTER_SECRET_KEY"]
POSTGRES_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
        engine = create_engine(POSTGRES_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


_POSTGRES = postgres_available()


def postgres_schema_url() -> tuple[str, str]:
    """A fresh schema in the test database, so tests never see each other's rows."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    # Named after the schema, so its teardown can close what a test left open.
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}&application_name={schema}", schema


def drop_postgres_schema(schema: str) -> None:
    """Drop the schema and end every session a test left open on it: three test processes
    share the server's 100 connections, and engines a test never disposed would otherwise
    hold theirs until the garbage collector found them."""
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": schema},
        )
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


def initialised(url: str) -> str:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@contextmanager
def fresh_postgres():
    """A new, initialised schema in the test database, dropped afterwards; skip without PostgreSQL."""
    if not _POSTGRES:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test')")
    url, schema = postgres_schema_url()
    try:
        yield initialised(url)
    finally:
        drop_postgres_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An initialised, empty database: SQLite file, then PostgreSQL where reachable."""
    if request.param == "sqlite":
        yield initialised(f"sqlite:///{tmp_path / 'subscribers.db'}")
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def postgres_url():
    """For PostgreSQL-only features such as workers."""
    with fresh_postgres() as url:
        yield url


@pytest.fixture(autouse=True, scope="session")
def own_cache_folder(tmp_path_factory):
    """Contrast measurements are remembered in the user's cache folder: the suite keeps
    its own (one per test process), so it neither reads nor fills the developer's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def sqlite_url(tmp_path):
    return initialised(f"sqlite:///{tmp_path / 'subscribers.db'}")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory with a clean NEWSLETTER_* environment."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    return work


@pytest.fixture
def db(database_url, workdir):
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(database_url, workdir):
    return load_settings(overrides={"database_url": database_url})


@pytest.fixture
def send_env(monkeypatch, workdir):
    """Settings for sending tests: fast retries, the SMTP adapter unless a test says otherwise."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEWSLETTER_RETRY_BASE_DELAY", "0.05")
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "smtp")


class Cli:
    def __init__(self, database_url: str):
        self.database_url = database_url
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, expect: int | None = 0):
        result = self.runner.invoke(
            main, ["--database-url", self.database_url, *args], input=input, catch_exceptions=False
        )
        if expect is not None:
            assert result.exit_code == expect, (
                f"exit {result.exit_code}, expected {expect}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


@pytest.fixture
def cli(database_url, workdir):
    return Cli(database_url)


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; never a downloaded browser build."""
    import shutil

    executable = shutil.which("chromium")
    if not executable:
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
