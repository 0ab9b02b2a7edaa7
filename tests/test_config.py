"""Configuration layers, validation and `newsletter init` / `config show`."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.db import head_revision
from newsletter.errors import ConfigError


def test_layers_override_in_order(workdir):
    (workdir / "newsletter.toml").write_text('base_url = "https://file.example"\nrate = 5\n')
    settings = load_settings(environ={"NEWSLETTER_RATE": "7"}, overrides={"adapter": "smtp"})
    assert settings.base_url == "https://file.example"
    assert settings.rate == 7.0
    assert settings.adapter == "smtp"
    assert settings.sources["base_url"] == "newsletter.toml"
    assert settings.sources["rate"] == "env NEWSLETTER_RATE"
    assert settings.sources["adapter"] == "command line"


@pytest.mark.parametrize(
    "toml, message",
    [
        ('adapter = "pigeon"', "setting 'adapter' (newsletter.toml) must be one of"),
        ("batch_size = 0", "setting 'batch_size' (newsletter.toml) must be at least 1"),
        ('rate = "fast"', "setting 'rate' from newsletter.toml must be a float"),
        ('smtp_url = "http://x"', "setting 'smtp_url' (newsletter.toml) must look like"),
        ("colour = 1", "newsletter.toml: unknown setting 'colour'"),
        ("rate = ", "newsletter.toml: "),
    ],
)
def test_invalid_settings_name_the_key(workdir, toml, message):
    (workdir / "newsletter.toml").write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_settings(environ={})
    assert message in str(error.value)


def test_cli_reports_bad_config_in_one_line(workdir):
    (workdir / "newsletter.toml").write_text('adapter = "pigeon"')
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: setting 'adapter'")
    assert "Traceback" not in result.output


def test_config_show_masks_secrets_and_names_sources(workdir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp://mailer:hunter2hunter2@mail.example:587")
    monkeypatch.setenv("NEWSLETTER_POSTMARK_TOKEN", "pm-token-abcdefghijklmnop")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0
    assert "hunter2" not in result.stdout
    assert "smtp://mailer:****@mail.example:587  [env NEWSLETTER_SMTP_URL]" in result.stdout
    assert "abcdefghijklmnop" not in result.stdout and "****mnop" in result.stdout
    assert "test-secret" not in result.stdout
    assert re.search(r"^database_url +sqlite:///subscribers.db  \[default\]$", result.stdout, re.M)


def test_init_is_idempotent_and_writes_a_secret(workdir, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    runner = CliRunner()
    first = runner.invoke(main, ["init"])
    assert first.exit_code == 0, first.output
    assert "Wrote newsletter.toml" in first.stdout
    assert f"schema none -> {head_revision()}" in first.stdout
    config_text = (workdir / "newsletter.toml").read_text()
    second = runner.invoke(main, ["init"])
    assert second.exit_code == 0
    assert "up to date" in second.stdout
    assert (workdir / "newsletter.toml").read_text() == config_text
    assert (workdir / "subscribers.db").exists()


def test_schema_check_agrees_with_alembic(workdir):
    """Commands read the schema revision without importing alembic: the file-name rule
    (revision "0006" is 0006_*.py, the newest file the head) must match alembic's graph."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from newsletter.db import MIGRATIONS, current_revision, make_engine, upgrade

    script = ScriptDirectory(str(MIGRATIONS))
    assert head_revision() == script.get_current_head()
    for revision in script.walk_revisions():
        assert revision.module.__file__.rpartition("/")[2].startswith(f"{revision.revision}_")
    engine = make_engine(f"sqlite:///{workdir / 'schema.db'}")
    assert current_revision(engine) is None
    upgrade(engine)
    with engine.connect() as connection:
        assert current_revision(engine) == MigrationContext.configure(connection).get_current_revision()
    assert current_revision(engine) == head_revision()


def test_commands_before_init_say_what_to_do(workdir):
    for command in (["subscribers", "list"], ["campaigns", "list"], ["subscribers", "add", "a@example.com"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, command
        assert "not initialised" in result.stderr and "newsletter init" in result.stderr
    assert not (workdir / "subscribers.db").exists()  # no stray empty database left behind


def test_missing_secret_key_is_a_clear_error(workdir, monkeypatch, sqlite_url):
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    result = CliRunner().invoke(main, ["--database-url", sqlite_url, "subscribers", "add", "a@example.com"])
    assert result.exit_code == 1
    assert "setting 'secret_key' is required" in result.stderr


def test_unreachable_postgres_is_one_line(workdir):
    result = CliRunner().invoke(
        main, ["--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none", "subscribers", "list"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot open database")
    assert len(result.stderr.strip().splitlines()) == 1
