"""`newsletter doctor` against a real local DNS server (dnslib), SMTP server and web app."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server

from newsletter.config import load_settings
from newsletter.doctor import public_key_base64
from newsletter.web import create_app

from .conftest import Cli
from .dns_server import LocalDNS
from .helpers import ENV
from .smtp_server import SMTPServer, free_port


@pytest.fixture
def cli(sqlite_url, workdir):
    """The doctor reads no subscriber data: one database kind is enough."""
    return Cli(sqlite_url)


def write_key(path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # small: tests only
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key


def zone_for(domain: str, bounce_domain: str, dkim_p: str, dmarc: str, spf: bool = True) -> dict:
    records = {
        (f"nl2026._domainkey.{domain}", "TXT"): [["v=DKIM1; k=rsa; ", f"p={dkim_p}"]],
        (f"_dmarc.{domain}", "TXT"): [dmarc],
        (domain, "MX"): [f"mx.{domain}"],
        (bounce_domain, "MX"): [f"mx.{domain}"],
        (f"mx.{domain}", "A"): ["192.0.2.25"],
    }
    if spf:
        records[(bounce_domain, "TXT")] = ["v=spf1 ip4:127.0.0.1 ip4:192.0.2.0/24 -all"]
    return records


@pytest.fixture
def https_app(tmp_path, workdir, monkeypatch):
    """The subscriber web app over HTTPS (a self-signed certificate requests is told to trust)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))
    port = free_port()
    settings = load_settings(
        environ={**ENV, "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'web.db'}"},
    )
    from newsletter.db import make_engine, upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True, ssl_context=(cert_file, key_file))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{port}"
    server.shutdown()


def test_good_domain_passes(cli, send_env, monkeypatch, tmp_path, https_app):
    write_key(tmp_path / "dkim.pem")
    p = public_key_base64(str(tmp_path / "dkim.pem"))
    zone = zone_for("calmharbor.example", "news.calmharbor.example", p, "v=DMARC1; p=quarantine; adkim=r")
    monkeypatch.setenv("NEWSLETTER_BOUNCE_ADDRESS", "bounces@news.calmharbor.example")
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "nl2026")
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", str(tmp_path / "dkim.pem"))
    monkeypatch.setenv("NEWSLETTER_BASE_URL", https_app)
    with LocalDNS(zone) as dns, SMTPServer() as smtp:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp.url)
        result = cli("doctor", "--resolver", dns.address, expect=0)
        report = json.loads(cli("doctor", "--resolver", dns.address, "--format", "json", expect=0).stdout)
    assert "0 problem(s)" in result.stdout and "Ready to send." in result.stdout
    statuses = {(finding["check"], finding["status"]) for finding in report["findings"]}
    for check in ("SPF", "DKIM", "DMARC", "MX", "One-click"):
        assert (check, "ok") in statuses, (check, report)
    assert ("SMTP", "warning") in statuses  # reachable; a local relay without TLS is only a warning
    assert any("allows the relay 127.0.0.1" in finding["message"] for finding in report["findings"])
    assert report["ok"] is True
    assert any("0.3%" in item["item"] for item in report["checklist"])
    assert any("PTR" in item["item"] for item in report["checklist"])


def test_broken_domain_names_each_problem_with_its_fix(cli, send_env, monkeypatch, tmp_path, https_app):
    write_key(tmp_path / "dkim.pem")
    write_key(tmp_path / "other.pem")
    published = public_key_base64(str(tmp_path / "other.pem"))
    zone = zone_for("calmharbor.example", "esp-relay.example", published, "v=DMARC1; p=none", spf=False)
    monkeypatch.setenv("NEWSLETTER_BOUNCE_ADDRESS", "bounces@esp-relay.example")
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "nl2026")
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", str(tmp_path / "dkim.pem"))
    monkeypatch.setenv("NEWSLETTER_BASE_URL", https_app)
    monkeypatch.setenv("NEWSLETTER_DNS_RESOLVER", "127.0.0.1:1")  # overridden by --resolver
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "outbox")  # no relay to check here
    with LocalDNS(zone) as dns:
        result = cli("doctor", "--resolver", dns.address, expect=1)
        report = json.loads(cli("doctor", "--resolver", dns.address, "--format", "json", expect=1).stdout)
    out = result.stdout
    assert "SPF        PROBLEM  esp-relay.example (the envelope sender's domain) publishes no SPF record" in out
    assert 'fix: publish TXT "v=spf1' in out
    assert "does not match dkim_private_key" in out
    assert f"p={public_key_base64(str(tmp_path / 'dkim.pem'))}" in out  # the record to publish instead
    assert "p=none only monitors" in out and "change to p=quarantine" in out
    assert "aligned with neither" in out and "set bounce_address on calmharbor.example" in out
    problems = {finding["check"] for finding in report["findings"] if finding["status"] == "problem"}
    assert problems == {"SPF", "DKIM", "DMARC"}
    assert all(finding["fix"] for finding in report["findings"] if finding["status"] != "ok")
    assert report["ok"] is False


def test_one_click_against_a_running_serve(cli, send_env, monkeypatch, tmp_path):
    """`newsletter serve` answers the RFC 8058 POST; the doctor still flags plain http."""
    port = free_port()
    env = {**os.environ, "NEWSLETTER_DATABASE_URL": cli.database_url}
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # readiness: wait until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{port}")
        with LocalDNS({}) as dns:
            report = json.loads(cli("doctor", "--resolver", dns.address, "--format", "json", expect=1).stdout)
    finally:
        server.terminate()
        server.wait(timeout=10)
    one_click = [finding for finding in report["findings"] if finding["check"] == "One-click"]
    assert [finding["status"] for finding in one_click] == ["problem", "ok"]
    assert "not HTTPS" in one_click[0]["message"] and "answers 200" in one_click[1]["message"]
    assert one_click[0]["message"].endswith("Gmail ignores one-click unsubscribe links not served over HTTPS")


def test_one_click_redirect_is_a_problem(cli, send_env, monkeypatch):
    from flask import Flask, redirect

    app = Flask("redirector")

    @app.route("/u/<token>", methods=["POST"])
    def moved(token):
        return redirect(f"https://www.calmharbor.example/u/{token}", 301)

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{port}")
    try:
        with LocalDNS({}) as dns:
            result = cli("doctor", "--resolver", dns.address, expect=1)
    finally:
        server.shutdown()
    assert "the one-click POST is redirected (301" in result.stdout


def test_smtp_auth_is_tried_without_sending(cli, send_env, monkeypatch):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from .smtp_server import RecordingHandler

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"clinic", b"right"))

    handler = RecordingHandler()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        with LocalDNS({}) as dns:
            findings = {}
            for password in ("right", "wrong"):
                monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://clinic:{password}@127.0.0.1:{port}")
                report = json.loads(cli("doctor", "--resolver", dns.address, "--format", "json", expect=1).stdout)
                findings[password] = [
                    (f["status"], f["message"], f["fix"]) for f in report["findings"] if f["check"] == "SMTP"
                ]
    finally:
        controller.stop()
    assert ("ok", f"127.0.0.1:{port}: AUTH works (nothing was sent)", "") in findings["right"]
    assert (
        "problem",
        f"127.0.0.1:{port}: authentication failed",
        "check the user and password in smtp_url",
    ) in findings["wrong"]
    assert handler.messages == []


def test_dead_resolver_is_named(send_env, workdir, monkeypatch):
    """A resolver that never answers: the finding says which server was asked."""
    from newsletter.doctor import Doctor, make_resolver

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{free_port()}")
    try:
        settings = load_settings()
        findings = Doctor(settings, make_resolver(f"127.0.0.1:{port}", timeout=0.3)).run().findings
    finally:
        silent.close()
    dead = [finding for finding in findings if "did not answer" in finding.message]
    assert dead and all(f"the DNS server 127.0.0.1:{port} did not answer" == f.message for f in dead)
