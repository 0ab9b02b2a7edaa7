"""Sending through a real SMTP server (aiosmtpd): headers, retries, bounces, resume, exactly once."""

from __future__ import annotations

import email.policy
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from newsletter.db import Database
from newsletter.subscribers import SubscriberList

from .conftest import SECRET
from .helpers import ENV, SAMPLE_ISSUE, add_subscribers, address_for_link, delivery_states, subscriber_status
from .smtp_server import Script, SMTPServer, free_port


def test_every_message_is_well_formed(cli, send_env, monkeypatch):
    addresses = [f"reader{i}@example.com" for i in range(5)]
    add_subscribers(cli.database_url, addresses)
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        messages = list(server.handler.messages)
    assert "sent 5, failed 0" in result.stdout
    assert sorted(server.handler.received_by()) == addresses
    ids, tokens = set(), set()
    for message in messages:
        assert message.defects == []
        assert message.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        assert all(part.get_content_charset() == "utf-8" for part in message.iter_parts())
        assert message["Subject"] == "Understanding anxiety, and how ketamine treatment can help"
        assert message["From"] == "Calm Harbor Clinic <newsletter@calmharbor.example>"
        assert message["Date"] and message["List-Id"]
        assert message["Message-ID"].endswith("@calmharbor.example>")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
        assert https.startswith("https://news.calmharbor.example/u/") and mailto.startswith("mailto:")
        token = https.rsplit("/", 1)[1]
        person = str(message["To"].addresses[0].addr_spec)
        assert address_for_link(cli.database_url, "unsubscribe", token) == person
        html = message.get_body(("html",)).get_content()
        assert https in html
        ids.add(message["Message-ID"])
        tokens.add(token)
    assert len(ids) == 5 and len(tokens) == 5


def test_hostile_name_cannot_inject_headers(cli, send_env, monkeypatch):
    db = Database(cli.database_url)
    SubscriberList(db, SECRET).add("victim@example.com", name="Eve\r\nBcc: attacker@example.com", tags=("monthly",))
    db.dispose()
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes")
        (message,) = server.handler.messages
        raw = server.handler.raw[0]
    assert message["Bcc"] is None
    assert b"\r\nBcc:" not in raw
    assert str(message["To"]) == '"Eve Bcc: attacker@example.com" <victim@example.com>'


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-command-at-a-time"])
def test_transient_and_permanent_answers(cli, send_env, monkeypatch, pipelining):
    addresses = [
        "ok@example.com",
        "greylisted@example.com",
        "full@example.com",
        "closing@example.com",
        "unknown@example.com",
        "blocked@example.com",
        "dropped@example.com",
    ]
    add_subscribers(cli.database_url, addresses)
    script = Script(
        rcpt={
            "greylisted@example.com": ["451 4.7.1 Greylisted, try again"],
            "full@example.com": ["452 4.2.2 Mailbox full"],
            "closing@example.com": ["421 4.3.2 Service shutting down"],
            "unknown@example.com": ["550 5.1.1 User unknown"],
            "blocked@example.com": ["554 5.7.1 Rejected by policy"],
            "dropped@example.com": ["DROP"],  # before the message: plainly not delivered, retried
        },
    )
    with SMTPServer(script, pipelining=pipelining) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        received = server.handler.received_by()
    assert "sent 5, failed 2" in result.stdout
    assert "550 5.1.1 User unknown" in result.stdout and "554 5.7.1 Rejected by policy" in result.stdout
    assert received == {a: 1 for a in addresses if a not in ("unknown@example.com", "blocked@example.com")}
    assert subscriber_status(cli.database_url, "unknown@example.com") == "bounced"
    # 5.7.1 is a policy block: the sender's problem, not a bad address.
    assert subscriber_status(cli.database_url, "blocked@example.com") == "active"
    states = delivery_states(cli.database_url)
    assert states["unknown@example.com"] == "failed" and states["greylisted@example.com"] == "sent"


def test_transient_failures_give_up_after_max_attempts(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["slow@example.com"])
    monkeypatch.setenv("NEWSLETTER_MAX_ATTEMPTS", "3")
    script = Script(rcpt={"slow@example.com": ["451 4.3.0 later"] * 10})
    with SMTPServer(script) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
    assert "failed 1" in result.stdout and "451 4.3.0 later" in result.stdout
    assert len(script.rcpt["slow@example.com"]) == 7  # three attempts were made
    assert subscriber_status(cli.database_url, "slow@example.com") == "active"


def test_bounced_and_unsubscribed_are_never_mailed_again(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com", "b@example.com", "c@example.com"])
    with SMTPServer(Script(rcpt={"b@example.com": ["550 5.1.1 no such user"]})) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes")
        cli("subscribers", "unsubscribe", "c@example.com")
        cli("send", str(SAMPLE_ISSUE), "--yes", "--again")
        assert server.handler.received_by() == {"a@example.com": 2, "c@example.com": 1}


def test_unsubscribe_during_campaign_stops_mail(cli, send_env, monkeypatch):
    addresses = [f"r{i:02d}@example.com" for i in range(30)]
    add_subscribers(cli.database_url, addresses)
    db = Database(cli.database_url)
    people = SubscriberList(db, SECRET)

    def leave_midway(handler, session):
        if len(handler.messages) == 10:
            people.unsubscribe("r25@example.com", reason="clicked the link")
        return None

    monkeypatch.setenv("NEWSLETTER_BATCH_SIZE", "5")
    with SMTPServer() as server:
        server.handler.on_data = leave_midway
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        received = server.handler.received_by()
    db.dispose()
    assert "r25@example.com" not in received and len(received) == 29
    assert "skipped 1" in result.stdout


def test_proof_copies_create_no_deliveries(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["reader@example.com"])
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--test-to", "staff@clinic.example")
        (message,) = server.handler.messages
    assert message["Subject"].startswith("[TEST] ")
    assert delivery_states(cli.database_url) == {}
    assert "No campaigns yet" in cli("campaigns", "list").stdout


def test_lint_errors_refuse_the_send(cli, send_env, tmp_path, monkeypatch):
    add_subscribers(cli.database_url, ["reader@example.com"])
    bad = tmp_path / "bad.md"
    bad.write_text('---\nsubject: "Hi"\npreheader: "p"\n---\nCall 1-800-273-TALK today.\n')
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(bad), "--yes", expect=1)
        assert "lint error" in result.stderr and "--force" in result.stderr
        assert server.handler.messages == []
        cli("issues", "approve", str(bad), "--by", "Dr. Test", "--force")  # a real send also needs the sign-off
        cli("send", str(bad), "--yes", "--force")
        assert len(server.handler.messages) == 1


def test_rate_cap(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, [f"r{i}@example.com" for i in range(12)])
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        started = time.monotonic()
        cli("send", str(SAMPLE_ISSUE), "--yes", "--rate", "20/s")
        elapsed = time.monotonic() - started
    assert len(server.handler.messages) == 12
    assert elapsed >= 0.5  # 12 messages at 20/s need at least 0.55 s after the first


def test_confirmation_prompt_and_dry_run(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com", "b@example.com"])
    add_subscribers(cli.database_url, ["other@example.com"], tags=("caregivers",))
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        dry = cli("send", str(SAMPLE_ISSUE), "--dry-run")
        assert "would go to 2 recipient(s) (monthly)" in dry.stdout
        aborted = cli("send", str(SAMPLE_ISSUE), "--segment", "caregivers", input="n\n", expect=1)
        assert "to 1 recipient(s) (caregivers)" in aborted.stderr
        assert server.handler.messages == []
        cli("send", str(SAMPLE_ISSUE), "--segment", "caregivers", input="y\n")
        assert server.handler.received_by() == {"other@example.com": 1}


def test_server_down_pauses_then_resume_sends_each_once(cli, send_env, monkeypatch):
    addresses = [f"r{i}@example.com" for i in range(6)]
    add_subscribers(cli.database_url, addresses)
    port = free_port()  # nothing listens there yet: connection refused
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{port}")
    result = cli("send", str(SAMPLE_ISSUE), "--yes", expect=1)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error_lines == [f"Error: 127.0.0.1:{port}: cannot connect: Connection refused"]
    assert "newsletter campaigns resume 1" in result.stderr
    shown = cli("campaigns", "show", "1").stdout
    assert "[paused]" in shown and "failed 0" in shown and "queued 6" in shown
    with SMTPServer(port=port) as server:
        resumed = cli("campaigns", "resume", "1")
        assert server.handler.received_by() == {address: 1 for address in addresses}
    assert "sent 6, failed 0" in resumed.stdout and "[done]" in resumed.stdout


def test_a_run_of_temporary_failures_pauses_instead_of_failing(cli, send_env, monkeypatch):
    addresses = [f"r{i:02d}@example.com" for i in range(12)]
    add_subscribers(cli.database_url, addresses)
    monkeypatch.setenv("NEWSLETTER_PAUSE_AFTER_FAILURES", "4")
    with SMTPServer() as server:
        server.handler.on_rcpt = lambda handler, address: "451 4.3.0 try later" if handler.outage else None
        server.handler.outage = True
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes", expect=1)
        assert "4 messages in a row to different readers could not be delivered" in result.stderr
        assert "newsletter campaigns resume 1" in result.stderr
        shown = cli("campaigns", "show", "1").stdout
        assert "[paused]" in shown and "failed 0" in shown
        server.handler.outage = False
        cli("campaigns", "resume", "1")
        assert server.handler.received_by() == {address: 1 for address in addresses}


def send_in_subprocess(database_url, smtp_url, env_extra=None):
    env = {
        **os.environ,
        **ENV,
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_ADAPTER": "smtp",
        "NEWSLETTER_SMTP_URL": smtp_url,
        **(env_extra or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", str(SAMPLE_ISSUE), "--yes"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def child_processes(pid: int) -> list[int]:
    """Linux: the processes `pid` started (none where /proc cannot tell)."""
    try:
        return [int(child) for child in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def exits_soon(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] == "Z":  # exited, waiting to be reaped
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_sigkill_midway_then_resume_delivers_exactly_once(sqlite_url, send_env):
    # SQLite here; on PostgreSQL, tests/test_worker.py kills a sender ten times in one campaign.
    database_url = sqlite_url
    addresses = [f"patient{i:04d}@example.com" for i in range(2000)]
    db = Database(database_url)
    from newsletter.importer import Importer

    csv_file = os.path.join(os.getcwd(), "people.csv")
    with open(csv_file, "w") as handle:
        handle.write("email,tags\n" + "".join(f"{a},monthly\n" for a in addresses))
    Importer(SubscriberList(db, SECRET)).run(__import__("pathlib").Path(csv_file))
    db.dispose()

    killed = {}
    with SMTPServer() as server:

        def kill_at_half(handler, session):
            # Kill while the server holds message 1,001 unanswered: no 250 was sent, so
            # by SMTP's rules it was not delivered, and it must be sent again on resume.
            if len(handler.messages) == 1000 and not killed:
                killed["pid"] = process.pid
                killed["helpers"] = child_processes(process.pid)  # the compose process
                os.kill(process.pid, signal.SIGKILL)
                return "451 4.3.0 sender vanished"
            return None

        server.handler.on_data = kill_at_half
        process = send_in_subprocess(database_url, server.url)
        process.wait(timeout=120)
        assert process.returncode == -signal.SIGKILL
        assert len(server.handler.messages) == 1000
        assert all(exits_soon(helper) for helper in killed["helpers"]), "a helper process outlived the sender"
        server.handler.on_data = None
        resumed = send_in_subprocess(database_url, server.url)
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err.decode()
        assert b"Resuming campaign 1" in out
        received = server.handler.received_by()
        messages = list(server.handler.messages)
    assert len(messages) == 2000
    assert set(received) == set(addresses)
    assert max(received.values()) == 1
    assert len({m["Message-ID"] for m in messages}) == 2000
    for message in messages[::97]:
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
        assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_dkim_signature_covers_list_unsubscribe(cli, send_env, monkeypatch, tmp_path):
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + __import__("base64").b64encode(public)
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "nl2026")
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", str(tmp_path / "dkim.pem"))
    add_subscribers(cli.database_url, ["a@example.com"])
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes")
        (raw,) = server.handler.raw
    message = email.message_from_bytes(raw, policy=email.policy.default)
    tags = dict(
        part.strip().split("=", 1)
        for part in " ".join(str(message["DKIM-Signature"]).split()).split(";")
        if "=" in part
    )
    assert tags["d"] == "calmharbor.example" and tags["s"] == "nl2026"
    signed = [name.strip().lower() for name in tags["h"].replace(" ", "").split(":")]
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
    assert dkim.verify(
        raw, dnsfunc=lambda name, timeout=5: record if name == b"nl2026._domainkey.calmharbor.example." else None
    )
    assert not dkim.verify(
        raw.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: List-Unsubscribe=Two-Click"
        ),
        dnsfunc=lambda name, timeout=5: record,
    )


def test_cancel_asks_shows_cancelled_and_can_be_resumed(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com", "b@example.com"])
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "outbox")
    result = cli("send", str(SAMPLE_ISSUE), "--yes", "--queue")
    assert "Campaign 1: 2 deliveries queued." in result.stdout
    if cli.database_url.startswith("sqlite"):
        assert "campaigns resume 1" in result.stdout  # SQLite has no workers: say how to send it
    else:
        assert "newsletter worker" in result.stdout
    kept = cli("campaigns", "cancel", "1", input="n\n", expect=1)
    assert "Cancel campaign 1" in kept.stderr and "2 deliveries not yet sent" in kept.stderr
    assert "[running]" in cli("campaigns", "show", "1").stdout
    cli("campaigns", "cancel", "1", "--yes")
    shown = cli("campaigns", "show", "1").stdout
    assert "[cancelled]" in shown and "cancelled 2" in shown and "queued" not in shown
    again = cli("campaigns", "cancel", "1", "--yes", expect=1)
    assert "already cancelled" in again.stderr
    finished = cli("campaigns", "resume", "1")
    assert "[done]" in finished.stdout and "sent 2" in finished.stdout


def test_cancel_then_plain_send_mails_nobody_again(cli, send_env, monkeypatch):
    addresses = [f"r{i}@example.com" for i in range(4)]
    add_subscribers(cli.database_url, addresses)
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes")
        # A second campaign with --again, cancelled before it sends anything.
        queued = cli("send", str(SAMPLE_ISSUE), "--yes", "--again", "--queue")
        assert "4 of them already received this issue and will get it again" in queued.stdout
        cli("campaigns", "cancel", "2", "--yes")
        refused = cli("send", str(SAMPLE_ISSUE), "--yes", expect=1)
        assert "everyone in monthly already received" in refused.stderr and "--again" in refused.stderr
        assert cli("send", str(SAMPLE_ISSUE), "--dry-run", expect=1).exit_code == 1
        assert server.handler.received_by() == {address: 1 for address in addresses}
        # A new reader arrives: a plain send goes to them alone.
        add_subscribers(cli.database_url, ["new@example.com"])
        newcomer = cli("send", str(SAMPLE_ISSUE), "--yes")
        assert "4 already received this issue and are left out" in newcomer.stdout
        assert server.handler.received_by() == {**{address: 1 for address in addresses}, "new@example.com": 1}
        # Resuming the cancelled --again campaign sends what it was asked to, once.
        cli("campaigns", "resume", "2")
        assert server.handler.received_by() == {**{address: 2 for address in addresses}, "new@example.com": 1}
        assert "sent 4" in cli("campaigns", "show", "2").stdout


def test_resuming_a_cancelled_campaign_skips_who_got_it_elsewhere(cli, send_env, monkeypatch):
    addresses = [f"r{i}@example.com" for i in range(3)]
    add_subscribers(cli.database_url, addresses)
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes", "--queue")
        cli("campaigns", "cancel", "1", "--yes")
        cli("send", str(SAMPLE_ISSUE), "--yes")  # campaign 2: the same readers, since 1 sent nothing
        shown = cli("campaigns", "resume", "1").stdout
        assert server.handler.received_by() == {address: 1 for address in addresses}
    assert "skipped 3" in shown


def test_failure_reasons_keep_addresses_out_and_group(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["x1@example.com", "x2@example.com"])
    script = Script(
        rcpt={
            "x1@example.com": ["550 5.1.1 <x1@example.com>: Recipient address rejected"],
            "x2@example.com": ["550 5.1.1 <x2@example.com>: Recipient address rejected"],
        }
    )
    with SMTPServer(script) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
    assert "     2  550 5.1.1 <recipient>: Recipient address rejected" in result.stdout
    assert "x1@example.com" not in result.stdout


def test_connection_pool_sends_in_parallel_once_each(cli, send_env, monkeypatch):
    addresses = [f"p{i:02d}@example.com" for i in range(40)]
    add_subscribers(cli.database_url, addresses)
    monkeypatch.setenv("NEWSLETTER_SMTP_POOL", "3")
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        connections = server.handler.connections
        received = server.handler.received_by()
    assert "sent 40, failed 0" in result.stdout
    assert received == {address: 1 for address in addresses}
    assert connections == 3  # one per pooled connection, each reused for every message it sent


def test_no_real_send_without_a_postal_address_even_forced(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com"])
    monkeypatch.setenv("NEWSLETTER_POSTAL_ADDRESS", "")
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes", "--force", expect=1)
        assert "setting 'postal_address' is required before mail goes to real inboxes" in result.stderr
        assert server.handler.messages == []
