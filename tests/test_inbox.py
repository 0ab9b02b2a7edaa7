"""The feedback loop: VERP, DSNs, ARF complaints, mailto unsubscribes, from real mailboxes.

Real-shaped messages (Postfix, Exim, Microsoft 365, Gmail, a Yahoo ARF report, an
auto-reply, a Gmail mailto unsubscribe, spam) live in tests/feedback_mail/ with
placeholders for what only a real send knows (the VERP envelope sender, the Message-ID,
the unsubscribe address); each test first sends a campaign through a real SMTP server.
"""

from __future__ import annotations

import email
import json
import mailbox
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

import pytest
from sqlalchemy import select

from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import Delivery
from newsletter.verp import ReturnPaths

from .dovecot import Dovecot, DovecotUnavailable
from .helpers import ENV, SAMPLE_ISSUE, add_subscribers, subscriber_status
from .smtp_server import SMTPServer

MAIL = Path(__file__).resolve().parent / "feedback_mail"
BOUNCES = "bounces@news.calmharbor.example"


@dataclass
class Sent:
    email: str
    name: str
    verp: str
    message_id: str
    headers: str
    unsubscribe_mailbox: str


def send_campaign(cli, monkeypatch, addresses: list[str], again: bool = False) -> dict[str, Sent]:
    """Send the sample issue to `addresses` through an accept-all SMTP server; what each got."""
    monkeypatch.setenv("NEWSLETTER_BOUNCE_ADDRESS", BOUNCES)
    if not again:
        add_subscribers(cli.database_url, addresses)
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes", *(["--again"] if again else []))
        received = list(zip(server.handler.raw, server.handler.envelopes, strict=True))
    assert f"sent {len(addresses)}, failed 0" in result.stdout
    sent = {}
    for raw, (mail_from, rcpt_tos) in received:
        message = email.message_from_bytes(raw)
        mailto = re.search(r"<mailto:([^?>]+)", message["List-Unsubscribe"]).group(1)
        head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n", "\n")
        address = rcpt_tos[0].lower()
        name = f"Reader {address.split('@')[0]}"
        sent[address] = Sent(address, name, mail_from, message["Message-ID"], head, mailto)
    return sent


def fill(name: str, sent: Sent, n: int = 0) -> bytes:
    """A fixture message about one delivery, CRLF line ends as on the wire."""
    text = Template((MAIL / name).read_text()).substitute(
        verp=sent.verp,
        rcpt=sent.email,
        rcpt_name=sent.name,
        message_id=sent.message_id,
        original_headers=sent.headers,
        redacted_original_headers=sent.headers.replace(sent.email, "redacted@yahoo.example").replace(
            sent.name, "redacted"
        ),
        unsubscribe_mailbox=sent.unsubscribe_mailbox,
        n=f"{n:02d}",
    )
    return text.replace("\n", "\r\n").encode()


def status_and_sources(cli, address: str) -> tuple[str, list[tuple[str, str, str]]]:
    shown = json.loads(cli("subscribers", "show", address).stdout)
    return shown["status"], [(e["kind"], e["source"], e["new_status"]) for e in shown["events"][1:]]


PEOPLE = [f"{name}@example.com" for name in ("ana", "ben", "cai", "dee", "eli", "fay", "gus", "hal", "ivy")]


def the_mailbag(sent: dict[str, Sent]) -> list[bytes]:
    ana, ben, cai, dee, eli, fay, gus, hal, _ = (sent[address] for address in PEOPLE)
    return [
        fill("postfix-dsn.eml", ana, 1),
        fill("exim-bounce.eml", ben, 2),
        fill("m365-ndr.eml", cai, 3),
        fill("gmail-dsn.eml", dee, 4),
        fill("postfix-delayed.eml", eli, 5),
        fill("arf-complaint.eml", fay, 6),
        fill("auto-reply.eml", gus, 7),
        fill("mailto-unsubscribe.eml", hal, 8),
        fill("spam.eml", ana, 9),
    ]


def assert_mailbag_applied(cli) -> None:
    for address in PEOPLE[:4]:
        status, events = status_and_sources(cli, address)
        assert status == "bounced", address
        assert ("bounce", "inbox", "") in events and ("status", "inbox", "bounced") in events
    assert status_and_sources(cli, "eli@example.com") == ("active", [("soft_bounce", "inbox", "")])
    status, events = status_and_sources(cli, "fay@example.com")
    assert status == "complained" and ("status", "inbox", "complained") in events
    assert status_and_sources(cli, "gus@example.com") == ("active", [])
    assert status_and_sources(cli, "hal@example.com") == ("unsubscribed", [("status", "mailto", "unsubscribed")])
    assert status_and_sources(cli, "ivy@example.com") == ("active", [])


EXPECTED_REPORT = {
    "seen": 9,
    "verdicts": {"bounce": 5, "complaint": 1, "auto-reply": 1, "unsubscribe": 1, "unrecognised": 1},
    "changes": {"bounced": 4, "complained": 1, "unsubscribed": 1},
    "unknown": 0,
    "notes": {},
}


@pytest.fixture
def dovecot():
    try:
        server = Dovecot().start()
    except DovecotUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def test_imap_inbox_applies_each_message_exactly_once(cli, send_env, monkeypatch, dovecot):
    sent = send_campaign(cli, monkeypatch, PEOPLE)
    assert all(s.verp.startswith("bounces+") and s.verp.endswith("@news.calmharbor.example") for s in sent.values())
    assert len({s.verp for s in sent.values()}) == len(PEOPLE)
    assert all(re.match(r"unsubscribe\+[^@]+@news\.calmharbor\.example$", s.unsubscribe_mailbox) for s in sent.values())
    dovecot.append(*the_mailbag(sent))
    monkeypatch.setenv("NEWSLETTER_INBOX_URL", dovecot.url("imap"))

    first = cli("inbox", "check", "--format", "json")
    assert json.loads(first.stdout) == EXPECTED_REPORT
    assert_mailbag_applied(cli)
    assert dovecot.count("INBOX") == 0 and dovecot.count("Processed") == 9

    second = cli("inbox", "check", "--format", "json")
    assert json.loads(second.stdout)["seen"] == 0

    # The same DSN arriving again (a relay retrying) is recognised, not applied twice.
    dovecot.append(the_mailbag(sent)[4])
    third = json.loads(cli("inbox", "check", "--format", "json").stdout)
    assert third["verdicts"] == {"already-processed": 1} and third["changes"] == {}
    assert status_and_sources(cli, "eli@example.com") == ("active", [("soft_bounce", "inbox", "")])

    summary = cli("campaigns", "show", "1").stdout
    assert "Came back: 4 bounces, 1 soft bounce, 1 complaint, 1 unsubscribe" in summary


def test_pop3_inbox_applies_once_and_leaves_mail(cli, send_env, monkeypatch, dovecot):
    sent = send_campaign(cli, monkeypatch, PEOPLE)
    dovecot.append(*the_mailbag(sent))
    monkeypatch.setenv("NEWSLETTER_INBOX_URL", dovecot.url("pop3"))
    assert json.loads(cli("inbox", "check", "--format", "json").stdout) == EXPECTED_REPORT
    assert_mailbag_applied(cli)
    again = json.loads(cli("inbox", "check", "--format", "json").stdout)
    assert again["verdicts"] == {"already-processed": 9} and again["changes"] == {}


def test_campaign_then_three_dsns_in_a_maildir(cli, send_env, monkeypatch, tmp_path):
    addresses = [f"reader{i}@example.com" for i in range(5)]
    sent = send_campaign(cli, monkeypatch, addresses)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n, address in enumerate(addresses[:3]):
        box.add(fill("postfix-dsn.eml", sent[address], n))
    monkeypatch.setenv("NEWSLETTER_INBOX_URL", f"maildir:{tmp_path / 'Maildir'}")

    result = cli("inbox", "check")
    assert "Status changes: bounced 3." in result.stdout
    for address in addresses[:3]:
        assert subscriber_status(cli.database_url, address) == "bounced"
    for address in addresses[3:]:
        assert subscriber_status(cli.database_url, address) == "active"
    assert all(name.endswith(":2,S") for name in (p.name for p in (tmp_path / "Maildir" / "cur").iterdir()))
    assert "Messages: 0 (nothing)." in cli("inbox", "check").stdout
    summary = cli("campaigns", "show", "1").stdout
    assert "Came back: 3 bounces" in summary
    shown = json.loads(cli("subscribers", "show", "reader0@example.com").stdout)
    bounce = next(event for event in shown["events"] if event["kind"] == "bounce")
    assert bounce["campaign_id"] == 1 and "5.1.1" in bounce["reason"]
    assert "reader0@example.com" not in bounce["reason"] and "<recipient>" in bounce["reason"]


def test_mta_pipe_and_mbox(cli, send_env, monkeypatch, tmp_path):
    sent = send_campaign(cli, monkeypatch, ["ana@example.com", "ben@example.com"])
    unsubscribe = fill("mailto-unsubscribe.eml", sent["ana@example.com"])
    assert "Status changes: unsubscribed 1." in cli("inbox", "process", input=unsubscribe).stdout
    assert "already-processed 1" in cli("inbox", "process", input=unsubscribe).stdout
    assert status_and_sources(cli, "ana@example.com")[1] == [("status", "mailto", "unsubscribed")]
    # A vacation reply that reached the unsubscribe address is not an unsubscribe.
    vacation = fill("mailto-unsubscribe.eml", sent["ben@example.com"], 1).replace(
        b"Subject: unsubscribe", b"Auto-Submitted: auto-replied\r\nSubject: Out of office"
    )
    assert "auto-reply 1" in cli("inbox", "process", input=vacation).stdout
    assert subscriber_status(cli.database_url, "ben@example.com") == "active"

    box = mailbox.mbox(tmp_path / "bounces.mbox")
    box.add(fill("exim-bounce.eml", sent["ben@example.com"]))
    box.close()
    result = cli("inbox", "check", "--url", f"mbox:{tmp_path / 'bounces.mbox'}")
    assert "Status changes: bounced 1." in result.stdout
    assert "already-processed 1" in cli("inbox", "check", "--url", f"mbox:{tmp_path / 'bounces.mbox'}").stdout


def test_soft_bounces_add_up_to_bounced(cli, send_env, monkeypatch):
    """Soft bounces count per campaign: a relay repeating its "still delayed" warning for one
    message every day (Exim does) is one temporary failure, not a dead address."""
    sent = send_campaign(cli, monkeypatch, ["eli@example.com"])
    monkeypatch.setenv("NEWSLETTER_SOFT_BOUNCE_LIMIT", "2")
    for n in range(3):
        cli("inbox", "process", input=fill("postfix-delayed.eml", sent["eli@example.com"], n))
    status, events = status_and_sources(cli, "eli@example.com")
    assert status == "active"
    assert [kind for kind, _, _ in events] == ["soft_bounce"] * 3

    again = send_campaign(cli, monkeypatch, ["eli@example.com"], again=True)
    cli("inbox", "process", input=fill("postfix-delayed.eml", again["eli@example.com"], 3))
    status, events = status_and_sources(cli, "eli@example.com")
    assert status == "bounced"
    assert [kind for kind, _, _ in events] == ["soft_bounce"] * 4 + ["status"]


def test_forged_bounce_and_unknown_token_change_nothing(cli, send_env, monkeypatch):
    sent = send_campaign(cli, monkeypatch, ["ana@example.com"])
    ana = sent["ana@example.com"]
    settings = load_settings(overrides={"database_url": cli.database_url})
    paths = ReturnPaths(settings)
    forged_token = paths.delivery_token(1)[:-2] + ("aa" if not paths.delivery_token(1).endswith("aa") else "bb")
    forged = Sent(ana.email, ana.name, f"bounces+{forged_token}@news.calmharbor.example", "<x@elsewhere>", "", "")
    result = cli("inbox", "process", input=fill("postfix-dsn.eml", forged))
    assert "unmatched 1" in result.stdout
    assert subscriber_status(cli.database_url, "ana@example.com") == "active"


def test_verp_tokens_are_opaque_and_round_trip(workdir):
    settings = load_settings(environ={**ENV, "NEWSLETTER_BOUNCE_ADDRESS": BOUNCES})
    paths = ReturnPaths(settings)
    sender = paths.envelope_sender(1234)
    local = sender.split("@")[0]
    assert "1234" not in local and len(local) <= 64
    assert paths.read(sender).value == 1234
    assert paths.read(sender.upper()).value == 1234  # an MTA that lower- or upper-cases the local part
    other = ReturnPaths(
        load_settings(environ={**ENV, "NEWSLETTER_SECRET_KEY": "x" * 32, "NEWSLETTER_BOUNCE_ADDRESS": BOUNCES})
    )
    assert other.read(sender) is None


def test_webhook_bounce_is_counted_for_its_campaign(cli, send_env, monkeypatch):
    """The provider webhooks and the mailbox apply through the same function."""
    from newsletter.feedback import Feedback, FeedbackLog

    send_campaign(cli, monkeypatch, ["ana@example.com"])
    db = Database(cli.database_url)
    with db.session() as session:
        message_id = session.scalar(select(Delivery.provider_id))
    outcome = FeedbackLog(db).apply(Feedback("bounce", "webhook:postmark", "hard bounce", message_id=message_id))
    db.dispose()
    assert outcome.changed and outcome.campaign_id == 1
    assert "Came back: 1 bounce" in cli("campaigns", "show", "1").stdout


def test_worker_and_serve_poll_the_inbox(cli, send_env, monkeypatch, tmp_path):
    """inbox_poll: `worker` (PostgreSQL) and `serve` check the mailbox themselves, no cron needed."""
    import os
    import subprocess
    import sys
    import time

    from .smtp_server import free_port

    sent = send_campaign(cli, monkeypatch, ["ana@example.com"])
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(fill("postfix-dsn.eml", sent["ana@example.com"]))
    env = {
        **os.environ,
        "NEWSLETTER_DATABASE_URL": cli.database_url,
        "NEWSLETTER_INBOX_URL": f"maildir:{tmp_path / 'Maildir'}",
        "NEWSLETTER_INBOX_POLL": "5",
    }
    if cli.database_url.startswith("postgresql"):
        done = subprocess.run(
            [sys.executable, "-m", "newsletter", "worker", "--exit-when-idle"],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert b"bounced 1" in done.stderr
    else:
        server = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(free_port())],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(600):  # readiness: until the first poll has run
                if subscriber_status(cli.database_url, "ana@example.com") == "bounced":
                    break
                time.sleep(0.1)
        finally:
            server.terminate()
            server.wait(timeout=10)
    assert subscriber_status(cli.database_url, "ana@example.com") == "bounced"


def test_policy_block_is_the_senders_problem(cli, send_env, monkeypatch):
    """5.7.x (spam filter, DMARC) changes nobody, and the report says why."""
    sent = send_campaign(cli, monkeypatch, ["ana@example.com"])
    blocked = fill("postfix-dsn.eml", sent["ana@example.com"]).replace(b"5.1.1", b"5.7.1")
    result = cli("inbox", "process", input=blocked)
    assert "policy-block 1" in result.stdout and "Status changes: none." in result.stdout
    assert "policy-block: 5.7.1" in result.stdout and "ana@example.com" not in result.stdout
    assert subscriber_status(cli.database_url, "ana@example.com") == "active"


FORGED = MAIL / "forged"  # an outside tester's crafted messages (tied to nothing we can verify)
TESTER_LIST = ["ana.lopez@example.com", "ben.carter@example.com", "chloe.ng@example.org"]
TESTER_LIST += ["david.okafor@example.net", "farah.haddad@example.org"]


@pytest.mark.parametrize(
    "name",
    [
        "10-forged-dsn-farah-notoken.eml",  # no VERP, made-up Message-ID
        "11-forged-dsn-ben-badtoken.eml",  # a VERP token that does not decrypt
        "12-forged-dsn-david-fakemsgid.eml",
        "16-forged-arf-farah.eml",  # a Message-ID of our shape with a wrong hash
        "17-minimal-forged.eml",
        "18-forged-arf-redacted-msgid-enum.eml",
        "22-forged-any-msgid.eml",  # any Message-ID at all
        "23-forged-arf-anymsgid.eml",
    ],
)
def test_forged_reports_naming_a_subscriber_change_nothing(cli, send_env, monkeypatch, name):
    send_campaign(cli, monkeypatch, TESTER_LIST)
    result = cli("inbox", "process", input=(FORGED / name).read_bytes())
    assert "unmatched 1" in result.stdout and "Status changes: none." in result.stdout
    for address in TESTER_LIST:
        assert status_and_sources(cli, address) == ("active", []), address


def test_report_tied_by_our_message_id_concerns_that_delivery_not_the_named_address(cli, send_env, monkeypatch):
    """No VERP address, but the quoted Message-ID verifies: the reader is the one we sent that
    message to, whichever address the report names."""
    sent = send_campaign(cli, monkeypatch, ["ana@example.com", "ben@example.com"])
    ana = sent["ana@example.com"]
    names_ben = Sent("ben@example.com", "Ben", BOUNCES, ana.message_id, f"Message-ID: {ana.message_id}", "")
    result = cli("inbox", "process", input=fill("postfix-dsn.eml", names_ben))
    assert "Status changes: bounced 1." in result.stdout
    assert subscriber_status(cli.database_url, "ana@example.com") == "bounced"
    assert subscriber_status(cli.database_url, "ben@example.com") == "active"
    complaint = fill("arf-complaint.eml", names_ben, 1)
    assert "Status changes: complained 1." in cli("inbox", "process", input=complaint).stdout
    assert subscriber_status(cli.database_url, "ana@example.com") == "complained"
    assert subscriber_status(cli.database_url, "ben@example.com") == "active"


@pytest.mark.parametrize(
    "name",
    [
        "14-forged-mailto-david-tampered.eml",
        "19-mailto-spoof-from-david-notoken.eml",
        "20-mailto-spoof-from-farah-bare.eml",
    ],
)
def test_mailto_without_a_valid_token_unsubscribes_nobody(cli, send_env, monkeypatch, name):
    """From: is anyone's to write: only the token in the address we advertised unsubscribes."""
    send_campaign(cli, monkeypatch, TESTER_LIST)
    result = cli("inbox", "process", input=(FORGED / name).read_bytes())
    assert "unmatched 1" in result.stdout and "Status changes: none." in result.stdout
    assert "unmatched: unsubscribe request with an invalid or missing token" in result.stdout
    assert "not on the list" not in result.stdout
    for address in TESTER_LIST:
        assert subscriber_status(cli.database_url, address) == "active", address


@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_tokens_survive_a_relay_changing_the_case_of_the_local_part(cli, send_env, monkeypatch, case):
    sent = send_campaign(cli, monkeypatch, ["ana@example.com", "ben@example.com"])
    ana, ben = sent["ana@example.com"], sent["ben@example.com"]
    unsubscribe = Sent(ana.email, ana.name, ana.verp, "", "", case(ana.unsubscribe_mailbox))
    assert (
        "Status changes: unsubscribed 1."
        in cli("inbox", "process", input=fill("mailto-unsubscribe.eml", unsubscribe)).stdout
    )
    bounce = Sent(ben.email, ben.name, case(ben.verp), "<x@elsewhere.example>", "", "")
    assert "Status changes: bounced 1." in cli("inbox", "process", input=fill("postfix-dsn.eml", bounce)).stdout
    assert subscriber_status(cli.database_url, "ana@example.com") == "unsubscribed"
    assert subscriber_status(cli.database_url, "ben@example.com") == "bounced"


def test_stored_reasons_carry_no_address_in_any_spelling(cli, send_env, monkeypatch):
    sent = send_campaign(cli, monkeypatch, ["ana.lopez@example.com"])
    diagnostic = (
        "<ANA.LOPEZ@EXAMPLE.COM> (forwarded to ana.l%40corp.example, =?utf-8?q?ana=40home.example?=,"
        ' "Ana Lopez"@x.example): <ana.lopez>... User unknown'
    )
    raw = fill("postfix-dsn.eml", sent["ana.lopez@example.com"]).replace(
        b"Diagnostic-Code: smtp; 550 5.1.1", b"Diagnostic-Code: smtp; 550 5.1.1 " + diagnostic.encode()
    )
    cli("inbox", "process", input=raw)
    shown = json.loads(cli("subscribers", "show", "ana.lopez@example.com").stdout)
    reason = next(event["reason"] for event in shown["events"] if event["kind"] == "bounce")
    assert "5.1.1" in reason and "User unknown" in reason
    for leak in ("ana.lopez", "ANA.LOPEZ", "ana.l", "%40", "home.example", "Ana Lopez", "=?utf-8"):
        assert leak not in reason, (leak, reason)


def test_message_without_a_sender_is_unrecognised_quietly(cli, send_env, workdir):
    """flufl.bounce's detectors trip over a message with no From: and log a traceback; not ours."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NEWSLETTER_DATABASE_URL": cli.database_url}

    for raw in (b"To: bounces@news.calmharbor.example\nSubject: hi\n\nhello\n", b"From:\nTo: x@y.example\n\nhi\n"):
        done = subprocess.run(
            [sys.executable, "-m", "newsletter", "inbox", "process"],
            input=raw,
            capture_output=True,
            cwd=workdir,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert b"unrecognised 1" in done.stdout
        assert b"Traceback" not in done.stderr and b"Exception in detector" not in done.stderr


def test_mailbox_setup_errors_are_one_line_with_a_hint(cli, send_env, monkeypatch, dovecot):
    wrong = dovecot.url("imap").replace(":" + dovecot.url("imap").split(":")[2].split("@")[0] + "@", ":wrong@")
    result = cli("inbox", "check", "--url", wrong, expect=1)
    assert result.stderr.startswith("Error: imap://127.0.0.1:")
    assert "AUTHENTICATIONFAILED" in result.stderr and "b'" not in result.stderr
    assert "Hint: check the user and password in inbox_url" in result.stderr
    for url in ("imap://[::1", "imap://127.0.0.1:99999/"):
        result = cli("inbox", "check", "--url", url, expect=1)
        assert result.stderr.startswith("Error: setting 'inbox_url' is not a valid URL")
        assert "this is a bug" not in result.stderr and "Hint:" in result.stderr


def test_inbox_without_a_database_says_run_init_and_creates_nothing(workdir):
    import subprocess
    import sys

    raw = (MAIL / "spam.eml").read_bytes()
    done = subprocess.run([sys.executable, "-m", "newsletter", "inbox", "process"], input=raw, capture_output=True)
    assert done.returncode == 75  # the MTA keeps the message until the setup is fixed
    assert b"Error: the database is not initialised" in done.stderr
    assert b"Hint: run: newsletter init" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "inbox", "check", "--url", "maildir:Maildir"], capture_output=True
    )
    assert done.returncode == 1
    assert not list(workdir.iterdir())
