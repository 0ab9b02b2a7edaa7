"""Exactly once at the edges: lost replies, international addresses, long subjects, a
reader leaving mid-batch, one broken message, interrupted sends. Real aiosmtpd servers
inject the faults (tests/smtp_server.py)."""

from __future__ import annotations

import email.policy
import os
import signal
import subprocess
import sys
import time
from http.server import ThreadingHTTPServer

import pytest

from newsletter.db import Database
from newsletter.subscribers import SubscriberList

from .conftest import SECRET
from .helpers import ENV, SAMPLE_ISSUE, add_subscribers, delivery_states, subscriber_status, write_issue
from .provider_server import ProviderServer
from .smtp_server import Script, SMTPServer, parse


def process_env(database_url: str, adapter: str, provider: dict[str, str] | None = None, **settings) -> dict:
    """The environment of a command run as its own process: settings by name (smtp_pool=3)."""
    named = {f"NEWSLETTER_{name.upper()}": str(value) for name, value in settings.items()}
    return {
        **os.environ,
        **ENV,
        **(provider or {}),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_ADAPTER": adapter,
        **named,
    }


def start_send(env: dict[str, str]) -> subprocess.Popen:
    """`newsletter send` of the sample issue as its own process, to be signalled."""
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", str(SAMPLE_ISSUE), "--yes"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, seconds: float = 90, step: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(step)


def resume(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", "campaigns", "resume", "1"], env=env, capture_output=True, text=True
    )


@pytest.fixture
def quick_timeouts(send_env, monkeypatch):
    """Lost-reply tests wait 2 s for the answer after the final '.', not RFC 5321's 10 minutes."""
    monkeypatch.setenv("NEWSLETTER_SMTP_DATA_TIMEOUT", "2")
    monkeypatch.setenv("NEWSLETTER_HTTP_TIMEOUT", "2")
    return monkeypatch


@pytest.mark.parametrize("pool", [1, 3])
@pytest.mark.parametrize("fault", ["STORE_THEN_HANG", "STORE_THEN_CLOSE"])
def test_lost_reply_after_the_message_is_unknown_and_sent_again_only_on_request(cli, quick_timeouts, fault, pool):
    # With a pool, the other connections hold messages in flight while the reply is lost.
    addresses = ["a@example.com", "b@example.com", "lost@example.com", "c@example.com", "d@example.com"]
    add_subscribers(cli.database_url, addresses)
    quick_timeouts.setenv("NEWSLETTER_SMTP_POOL", str(pool))
    with SMTPServer(Script(data={"lost@example.com": [fault]})) as server:
        server.handler.hang_seconds = 4  # past smtp_data_timeout = 2
        quick_timeouts.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        assert server.handler.received_by() == {address: 1 for address in addresses}
        states = delivery_states(cli.database_url)
        assert states["lost@example.com"] == "unknown"
        assert {state for address, state in states.items() if address != "lost@example.com"} == {"sent"}
        assert "sent 4, failed 0, unknown 1" in result.stdout
        shown = cli("campaigns", "show", "1").stdout
        assert "unknown (the server may have them; not retried automatically)" in shown
        assert "no answer after the message was sent" in shown and "the server may have it" in shown
        assert "newsletter campaigns retry 1 --unknown" in shown
        # Nothing sends it again by itself: not a resume, not a plain retry.
        cli("campaigns", "resume", "1")
        plain = cli("campaigns", "retry", "1")
        assert "1 unknown left as they are; add --unknown" in plain.stdout
        assert server.handler.received_by()["lost@example.com"] == 1
        retried = cli("campaigns", "retry", "1", "--unknown")
        assert "Requeued 0 temporary failure(s) and 1 unknown." in retried.stdout
        assert server.handler.received_by() == {
            address: 2 if address.startswith("lost") else 1 for address in addresses
        }
        copies = [m for m in server.handler.messages if m["To"].addresses[0].addr_spec == "lost@example.com"]
    assert delivery_states(cli.database_url)["lost@example.com"] == "sent"
    # Both copies carry the same Message-ID: the receiver can tell the second is a duplicate.
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]


class LostResponseServer(ProviderServer):
    """Postmark that takes the batch, then closes the connection instead of answering."""

    def __init__(self):
        super().__init__()
        base = self.httpd.RequestHandlerClass
        state = self.state

        class Handler(base):
            def reply(self, status, body=None, headers=None):
                if getattr(state, "lose_replies", 0) and status == 200:
                    state.lose_replies -= 1
                    self.close_connection = True
                    self.connection.close()
                    return
                super().reply(status, body, headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def test_http_response_lost_after_the_request_is_unknown(cli, quick_timeouts):
    addresses = ["a@example.com", "b@example.com"]
    add_subscribers(cli.database_url, addresses)
    with LostResponseServer() as server:
        server.state.lose_replies = 1
        quick_timeouts.setenv("NEWSLETTER_ADAPTER", "postmark")
        for name, value in server.env("postmark").items():
            quick_timeouts.setenv(name, value)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        assert server.state.received_by() == {address: 1 for address in addresses}  # one request, never repeated
        assert "unknown 2" in result.stdout and "the provider may have it" in result.stdout
        cli("campaigns", "retry", "1", "--unknown")
        assert server.state.received_by() == {address: 2 for address in addresses}
    assert set(delivery_states(cli.database_url).values()) == {"sent"}


def test_provider_unreachable_pauses(cli, send_env, monkeypatch):
    from .smtp_server import free_port

    add_subscribers(cli.database_url, ["a@example.com"])
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "postmark")
    monkeypatch.setenv("NEWSLETTER_POSTMARK_TOKEN", "token")
    monkeypatch.setenv("NEWSLETTER_POSTMARK_API_URL", f"http://127.0.0.1:{free_port()}")
    result = cli("send", str(SAMPLE_ISSUE), "--yes", expect=1)
    assert "postmark: cannot reach" in result.stderr and "newsletter campaigns resume 1" in result.stderr
    assert delivery_states(cli.database_url) == {"a@example.com": "queued"}
    assert "[paused]" in cli("campaigns", "show", "1").stdout


def test_international_addresses(cli, send_env, monkeypatch):
    added = cli("subscribers", "add", "user@bücher.example", "--tag", "monthly").stdout
    assert "user@xn--bcher-kva.example" in added  # stored as it goes on the wire
    cli("subscribers", "add", "mañana@example.com", "--name", "Ana Muñoz", "--tag", "monthly")
    cli("subscribers", "add", "plain@example.com", "--tag", "monthly")
    refused = cli("subscribers", "add", "two@@example.com", expect=1)
    assert "invalid email address" in refused.stderr and "@" in refused.stderr
    with SMTPServer(smtputf8=False) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        assert server.handler.received_by() == {"user@xn--bcher-kva.example": 1, "plain@example.com": 1}
        assert server.handler.rcpt_attempts["user@xn--bcher-kva.example"] == 1
    assert "sent 2, failed 1" in result.stdout and "does not offer SMTPUTF8" in result.stdout
    assert subscriber_status(cli.database_url, "mañana@example.com") == "active"
    # An SMTPUTF8 server takes the non-ASCII address; --again sends the issue a second time.
    with SMTPServer(smtputf8=True) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes", "--again")
        received = server.handler.received_by()
        (raw,) = [r for r in server.handler.raw if "mañana".encode() in r]
    assert received == {"user@xn--bcher-kva.example": 1, "plain@example.com": 1, "mañana@example.com": 1}
    message = parse(raw)
    assert message["To"].addresses[0].addr_spec == "mañana@example.com"
    assert message["To"].addresses[0].display_name == "Ana Muñoz"


def test_long_subject_is_folded_and_decodes_intact(cli, send_env, monkeypatch, tmp_path):
    words = ["Understanding", "anxiety", "ketamine", "treatment", "évaluation", "calm"]
    subject = " ".join(words[i % len(words)] for i in range(200))[:1199].strip()
    subject = subject + "x" * (1199 - len(subject))
    unbroken = "y" * 1100  # one word too long to fold at a space
    for title, name in ((subject, "long"), (unbroken, "unbroken")):
        issue = write_issue(tmp_path, "Hello.\n", front=f'subject: "{title}"\npreheader: "p"\n', name=name)
        lint = cli("lint", str(issue), expect=1)
        assert "shorten it to at most 150" in lint.stdout + lint.stderr
        cli("issues", "approve", str(issue), "--by", "Dr. Test", "--force")  # a real send needs the sign-off
    add_subscribers(cli.database_url, ["a@example.com"])
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        for name in ("long", "unbroken"):  # a real send needs a clinical sign-off (main's review)
            cli("issues", "approve", str(tmp_path / f"{name}.md"), "--by", "Dr. Test", "--force")
            cli("send", str(tmp_path / f"{name}.md"), "--yes", "--force")
        raws = list(server.handler.raw)
    assert len(raws) == 2
    for raw, expected in zip(raws, (subject, unbroken), strict=True):
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert max(len(line) for line in head.split(b"\r\n")) <= 998
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert message["Subject"] == expected
        assert message.defects == []


@pytest.mark.parametrize("pool, leaver", [(1, "r05@example.com"), (3, "r12@example.com")])
def test_reader_who_unsubscribes_mid_batch_gets_nothing_after(cli, send_env, monkeypatch, pool, leaver):
    # With a pool, the check of the next message rides in whichever connection's commit
    # comes first; a reader not yet taken when they leave must still get nothing.
    addresses = [f"r{i:02d}@example.com" for i in range(30)]
    add_subscribers(cli.database_url, addresses)
    db = Database(cli.database_url)
    people = SubscriberList(db, SECRET)
    left = {}

    def leave_while_in_flight(handler, session):
        if len(handler.messages) == 3 and not left:
            people.unsubscribe(leaver, reason="clicked the link")  # returns before message 4
            left["at"] = len(handler.messages)
        return None

    monkeypatch.setenv("NEWSLETTER_BATCH_SIZE", "50")  # the whole campaign is one claimed batch
    monkeypatch.setenv("NEWSLETTER_SMTP_POOL", str(pool))
    with SMTPServer() as server:
        server.handler.on_data = leave_while_in_flight
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        received = server.handler.received_by()
    db.dispose()
    assert left and leaver not in received and len(received) == 29
    assert "skipped 1" in result.stdout


def test_one_broken_message_fails_alone(cli, send_env, monkeypatch):
    from newsletter.message import MessageBuilder

    add_subscribers(cli.database_url, ["a@example.com", "broken@example.com", "c@example.com"])
    build = MessageBuilder.build

    def build_or_break(self, rendered, recipient, *args, **kwargs):
        if recipient.email == "broken@example.com":
            raise UnicodeEncodeError("ascii", "ñ", 0, 1, "injected")
        return build(self, rendered, recipient, *args, **kwargs)

    monkeypatch.setattr(MessageBuilder, "build", build_or_break)
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        assert server.handler.received_by() == {"a@example.com": 1, "c@example.com": 1}
    assert "sent 2, failed 1" in result.stdout and "could not build this message: UnicodeEncodeError" in result.stdout
    assert "[done]" in result.stdout
    assert subscriber_status(cli.database_url, "broken@example.com") == "active"


def test_message_id_is_the_same_on_every_attempt(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com"])
    with SMTPServer(Script(data={"a@example.com": ["451 4.3.0 try again"]})) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(SAMPLE_ISSUE), "--yes")
        (message,) = server.handler.messages
    from newsletter.config import load_settings
    from newsletter.message import MessageBuilder

    settings = load_settings(overrides={"database_url": cli.database_url})
    assert message["Message-ID"] == MessageBuilder(settings).message_id(1, 1)
    assert message["Message-ID"].endswith("@calmharbor.example>")


def test_sigterm_exits_130_with_the_resume_hint(sqlite_url, send_env, monkeypatch):
    addresses = [f"r{i:03d}@example.com" for i in range(60)]
    add_subscribers(sqlite_url, addresses)
    with SMTPServer() as server:
        server.handler.delay = 0.05
        env = process_env(sqlite_url, "smtp", smtp_url=server.url)
        process = start_send(env)
        wait_for(lambda: len(server.handler.messages) >= 5, 60)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert "newsletter campaigns resume 1" in err and "[paused]" in out
        resumed = resume(env)
        assert resumed.returncode == 0, resumed.stderr
        assert server.handler.received_by() == {address: 1 for address in addresses}


def test_locked_database_says_how_to_resume(sqlite_url, send_env, monkeypatch):
    """A send that meets a database held by another program ends with one line and the way back."""
    import sqlite3

    add_subscribers(sqlite_url, ["a@example.com", "b@example.com"])
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "outbox")
    from click.testing import CliRunner

    from newsletter.cli import main

    runner = CliRunner()
    queued = runner.invoke(main, ["--database-url", sqlite_url, "send", str(SAMPLE_ISSUE), "--yes", "--queue"])
    assert queued.exit_code == 0, queued.output
    import newsletter.db

    pragmas = newsletter.db._sqlite_pragmas

    def impatient(connection, record):  # wait 0.2 s for the lock, not 30 s
        pragmas(connection, record)
        connection.execute("PRAGMA busy_timeout=200")

    monkeypatch.setattr(newsletter.db, "_sqlite_pragmas", impatient)
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = runner.invoke(main, ["--database-url", sqlite_url, "campaigns", "resume", "1"])
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "database is locked" in errors[0]
    assert "newsletter campaigns resume 1" in result.stderr
    assert "Traceback" not in result.output


def test_import_takes_what_can_be_delivered_and_says_why_not(cli, send_env, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text(
        "email,tags\nuser@bücher.example,monthly\nmañana@example.com,monthly\nbad@@example.com,monthly\n",
        encoding="utf-8",
    )
    result = cli("subscribers", "import", str(people), expect=None)
    assert "invalid email address" in result.stderr and ":4:" in result.stderr
    listed = cli("subscribers", "list").stdout
    assert "user@xn--bcher-kva.example" in listed and "mañana@example.com" in listed
    # The same reader typed with the Unicode domain is recognised as already subscribed.
    again = cli("subscribers", "add", "USER@bücher.example", expect=None)
    assert again.exit_code == 1 and "already" in (again.stderr + again.stdout).lower()


@pytest.mark.parametrize("presses", [2, 5])
@pytest.mark.parametrize("pool", [1, 3])
def test_a_second_ctrl_c_while_the_server_holds_the_message_leaves_it_unknown(sqlite_url, send_env, pool, presses):
    """Ctrl-C twice while waiting for the answer to a message the server has stored: the send
    stops at once, the delivery is `unknown` (not queued), and a resume never repeats it.
    With a pool, messages whose answer had already come are recorded as what it said. More
    presses right after the second (5 ms apart: a held-down key) change nothing: they used
    to cut short the recording of `unknown`, and the resume sent those messages again."""
    addresses = ["a@example.com", "b@example.com", "held@example.com", "c@example.com", "d@example.com"]
    add_subscribers(sqlite_url, addresses)
    with SMTPServer(Script(data={"held@example.com": ["STORE_THEN_HANG"]})) as server:
        server.handler.hang_seconds = 30
        env = process_env(sqlite_url, "smtp", smtp_url=server.url, smtp_data_timeout=60, smtp_pool=pool)
        process = start_send(env)
        wait_for(lambda: "held@example.com" in server.handler.received_by())
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        for _ in range(presses - 2):
            time.sleep(0.005)
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)  # well before the 30 s answer
        assert process.returncode == 130, err
        assert "Ctrl-C again to stop now" in err and "newsletter campaigns resume 1" in err
        states = delivery_states(sqlite_url)
        assert states["held@example.com"] == "unknown"
        # Every other reader was either answered (sent) or never started (still queued).
        assert {state for address, state in states.items() if address != "held@example.com"} <= {"sent", "queued"}
        server.handler.hang_seconds = 0
        resumed = resume(env)
        assert resumed.returncode == 0, resumed.stderr
        assert server.handler.received_by() == {address: 1 for address in addresses}


def test_a_send_whose_adapter_lacks_a_setting_creates_no_campaign(cli, send_env, monkeypatch):
    """Refused before anything exists: otherwise the stuck campaign would take over every later send."""
    add_subscribers(cli.database_url, ["a@example.com"])
    monkeypatch.delenv("NEWSLETTER_SMTP_URL", raising=False)
    refused = cli("send", str(SAMPLE_ISSUE), "--adapter", "postmark", "--yes", expect=1)
    assert "postmark_token" in refused.stderr
    assert "No campaigns yet" in cli("campaigns", "list").stdout
    dry = cli("send", str(SAMPLE_ISSUE), "--adapter", "outbox", "--dry-run")
    assert "would go to 1 recipient" in dry.stdout


def test_an_smtp_url_with_a_bad_port_is_a_setting_error(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com"])
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp://127.0.0.1:99999")
    refused = cli("send", str(SAMPLE_ISSUE), "--yes", expect=1)
    assert "smtp_url" in refused.stderr and "port" in refused.stderr and "unexpected" not in refused.stderr
    monkeypatch.delenv("NEWSLETTER_SMTP_URL")
    assert "No campaigns yet" in cli("campaigns", "list").stdout


@pytest.mark.parametrize("pool", [1, 3])
def test_ctrl_c_twice_while_an_answer_waits_for_a_locked_row_keeps_the_answer(postgres_url, send_env, pool):
    """The server accepted a message, and its record waits for a row another program holds
    locked (PostgreSQL): Ctrl-C twice (and more) must not drop that answer, or the resume
    would send the message again. The stop waits for the record, then happens."""
    from sqlalchemy import create_engine, text

    addresses = ["a@example.com", "held@example.com", "b@example.com", "c@example.com", "d@example.com"]
    add_subscribers(postgres_url, addresses)
    with SMTPServer(Script(data={"held@example.com": ["STORE_THEN_HANG"]})) as server:
        server.handler.hang_seconds = 2.0
        env = process_env(postgres_url, "smtp", smtp_url=server.url, smtp_pool=pool)
        process = start_send(env)
        wait_for(lambda: "held@example.com" in server.handler.received_by(), step=0.02)
        # While the server holds its answer, another program locks that delivery's row.
        engine = create_engine(postgres_url)
        blocker = engine.connect()
        blocker.execute(
            text(
                "SELECT d.id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
                "WHERE s.email_key = 'held@example.com' FOR UPDATE"
            )
        )
        time.sleep(2.5)  # the answer (250) has come and its record waits for the row
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        for _ in range(4):
            process.send_signal(signal.SIGINT)
            time.sleep(0.005)
        time.sleep(1.0)
        assert process.poll() is None  # still holding the answer: not gone without recording it
        blocker.rollback()
        blocker.close()
        engine.dispose()
        out, err = process.communicate(timeout=30)
        assert process.returncode == 130, err
        assert "Stopping as soon as the answer already received is recorded" in err
        states = delivery_states(postgres_url)
        assert states["held@example.com"] == "sent"
        resumed = resume(env)
        assert resumed.returncode == 0, resumed.stderr
        assert server.handler.received_by() == {address: 1 for address in addresses}


class SlowResponseServer(ProviderServer):
    """Postmark that takes the batch, then answers only after `hold_seconds`."""

    def __init__(self, hold_seconds: float):
        super().__init__()
        base = self.httpd.RequestHandlerClass

        class Handler(base):
            def reply(self, status, body=None, headers=None):
                if status == 200:
                    time.sleep(hold_seconds)
                super().reply(status, body, headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def test_ctrl_c_twice_while_the_provider_holds_the_answer_leaves_the_batch_unknown(sqlite_url, send_env):
    """Ctrl-C twice while an API request is out: the provider may have accepted the batch,
    so every message in it is `unknown` (not queued) and a resume sends none of them again."""
    addresses = [f"r{i}@example.com" for i in range(6)]
    add_subscribers(sqlite_url, addresses)
    with SlowResponseServer(hold_seconds=20) as server:
        env = process_env(sqlite_url, "postmark", server.env("postmark"), http_timeout=60)
        process = start_send(env)
        wait_for(lambda: len(server.state.received_by()) >= len(addresses))
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        for _ in range(3):
            process.send_signal(signal.SIGINT)
            time.sleep(0.005)
        out, err = process.communicate(timeout=15)  # well before the provider's answer
        assert process.returncode == 130, err
        assert set(delivery_states(sqlite_url).values()) == {"unknown"}
        resumed = resume(env)
        assert resumed.returncode == 0, resumed.stderr
        assert server.state.received_by() == {address: 1 for address in addresses}


def test_ctrl_c_twice_while_waiting_to_ask_again_after_a_refusal_leaves_the_batch_queued(sqlite_url, send_env):
    """The provider refused the batch (503) and the adapter waits to ask again: a Ctrl-C
    twice then stops with the batch queued, not `unknown`: nothing of it was accepted, and
    a resume sends it once."""
    addresses = [f"r{i}@example.com" for i in range(4)]
    add_subscribers(sqlite_url, addresses)
    with ProviderServer() as server:
        server.state.faults = [503] * 4
        env = process_env(sqlite_url, "postmark", server.env("postmark"))
        process = start_send(env)
        wait_for(lambda: len(server.state.faults) <= 2, step=0.01)  # refused twice: waits about 1 s
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 130, err
        assert set(delivery_states(sqlite_url).values()) == {"queued"}
        server.state.faults = []
        resumed = resume(env)
        assert resumed.returncode == 0, resumed.stderr
        assert server.state.received_by() == {address: 1 for address in addresses}
