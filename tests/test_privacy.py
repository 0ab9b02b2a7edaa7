"""Privacy and hardening, against a running `newsletter serve` over real HTTP: links that
outlive a person, replayed confirmations, the undo window, signup timing, webhook
replays, erasure that forgets everything, the embeddable signup form."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update

from newsletter.db import Database
from newsletter.models import Event, Signup, Subscriber
from newsletter.subscribers import SubscriberList
from newsletter.tokens import Tokens

from .conftest import SECRET, Cli
from .helpers import ENV, SAMPLE_ISSUE
from .smtp_server import free_port

SENDGRID_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
MAILGUN_KEY = "mailgun-signing-key-test"
POSTMARK_AUTH = ("hooks", "s3cret-password")


class Stack:
    """`newsletter serve` as a real process over one SQLite database, mail to the outbox."""

    def __init__(self, root: Path, url: str, base: str, extra_env: dict[str, str]):
        self.root, self.url, self.base = root, url, base
        self.outbox = root / "outbox"
        self.env = {
            **ENV,
            "NEWSLETTER_SECRET_KEY": SECRET,
            "NEWSLETTER_DATABASE_URL": url,
            "NEWSLETTER_ADAPTER": "outbox",
            "NEWSLETTER_OUTBOX_DIR": str(self.outbox),
            "NEWSLETTER_BASE_URL": base,
            "NEWSLETTER_SUBSCRIBE_RATE_LIMIT": "1000 per minute",
            "NEWSLETTER_POSTMARK_WEBHOOK_AUTH": ":".join(POSTMARK_AUTH),
            "NEWSLETTER_SENDGRID_WEBHOOK_PUBLIC_KEY": SENDGRID_PUBLIC,
            "NEWSLETTER_MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY,
            **extra_env,
        }
        self.db = Database(url)
        self.people = SubscriberList(self.db, SECRET)
        self.tokens = Tokens(SECRET)

    def cli(self, *args: str, expect: int | None = 0):
        return Cli(self.url)(*args, expect=expect)

    def status(self, address: str) -> str | None:
        with self.db.session() as session:
            return session.scalar(select(Subscriber.status).where(Subscriber.email_key == address))

    def wait_for(self, condition, what: str, timeout: float = 15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def confirmation_links(self, address: str) -> list[str]:
        links = []
        for path in sorted((self.outbox / "transactional").glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"].addresses[0].addr_spec.lower() == address:
                text = message.get_body(("plain",)).get_content()
                links.append(re.search(r"(http://127\.0\.0\.1:\d+/confirm/\w+)", text).group(1))
        return links

    def wait_for_link(self, address: str, count: int = 1) -> str:
        return self.wait_for(
            lambda: (links := self.confirmation_links(address)) and len(links) >= count and links[-1],
            f"confirmation email {count} to {address}",
        )

    def signup(self, client: requests.Session, address: str, name: str = "", topics=()) -> requests.Response:
        page = client.get(f"{self.base}/subscribe")
        data = {"csrf_token": csrf_from(page.text), "email": address, "name": name, "consent": "yes"}
        if topics:
            data["topics"] = list(topics)
        return client.post(f"{self.base}/subscribe", data=data)

    def confirm(self, client: requests.Session, link: str) -> requests.Response:
        page = client.get(link)
        assert page.status_code == 200, page.text
        return client.post(link, data={"csrf_token": csrf_from(page.text)})


def shift_back(stack: Stack, model, column: str, delta: timedelta) -> None:
    """Move every row's timestamp into the past (rather than wait)."""
    with stack.db.session() as session:
        for row in session.scalars(select(model)):
            if getattr(row, column) is not None:
                setattr(row, column, getattr(row, column) - delta)


def set_status(stack: Stack, address: str, status: str) -> None:
    with stack.db.session() as session:
        session.execute(update(Subscriber).where(Subscriber.email_key == address).values(status=status))


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@contextmanager
def serve(tmp_path: Path, monkeypatch, extra_env: dict[str, str] | None = None):
    from .conftest import initialised

    root = tmp_path / "site"
    root.mkdir()
    url = initialised(f"sqlite:///{root / 'subscribers.db'}")
    port = free_port()
    stack = Stack(root, url, f"http://127.0.0.1:{port}", extra_env or {})
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        env={**os.environ, **stack.env},
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        stack.wait_for(lambda: _answers(f"{stack.base}/subscribe"), "newsletter serve to start", timeout=30)
        yield stack
    finally:
        process.terminate()
        process.wait(timeout=10)
        stack.db.dispose()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def stack(tmp_path, workdir, monkeypatch):
    with serve(tmp_path, monkeypatch) as running:
        yield running


# -- links that outlive a person ------------------------------------------------------------
def test_erased_persons_links_open_nobody(stack):
    signup = requests.Session()
    stack.signup(signup, "zoe@example.com", "Zoe Private")
    zoe_confirm = stack.wait_for_link("zoe@example.com")
    zoe = stack.people.find("zoe@example.com")  # pending: her confirmation link is still unused
    unsubscribe = f"{stack.base}/u/{stack.tokens.make('unsubscribe', zoe.token, 1)}"
    preferences = f"{stack.base}/p/{stack.tokens.make('preferences', zoe.token, 1)}"
    legacy = f"{stack.base}/u/{stack.tokens.legacy('unsubscribe', zoe.id, None)}"  # links never carry ids now
    client = requests.Session()
    assert client.get(unsubscribe).status_code == 200
    stack.cli("subscribers", "forget", "zoe@example.com", "--yes")

    assert stack.signup(client, "next.person@example.com", "Next Person").status_code == 200
    link = stack.wait_for_link("next.person@example.com")
    assert stack.confirm(client, link).status_code == 200
    newcomer = stack.people.find("next.person@example.com")
    assert newcomer.id != zoe.id and newcomer.token != zoe.token

    answers = [
        client.get(unsubscribe),
        client.head(unsubscribe),
        client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}),
        client.post(f"{unsubscribe}/resubscribe", data={"csrf_token": "x"}),
        client.get(preferences),
        client.post(preferences, data={"action": "unsubscribe"}),
        client.get(legacy),
        client.get(zoe_confirm),
        client.head(zoe_confirm),
    ]
    for response in answers:
        assert response.status_code == 400, response.request.url
        assert "next.person" not in response.text and "Next Person" not in response.text
    assert stack.status("next.person@example.com") == "active"
    record = stack.people.show("next.person@example.com")
    assert [event["kind"] for event in record["events"]] == ["created", "status"]  # none of Zoe's


def test_old_links_keep_working_after_the_migration(tmp_path, workdir):
    """Links in messages sent before migration 0006 carried the row id; they still work,
    and an id erased before the migration is never handed out again."""
    from alembic import command
    from sqlalchemy import text

    from newsletter.db import _alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    command.upgrade(_alembic_config(engine), "0003")
    with engine.begin() as connection:
        for id_, address in ((1, "ana@example.com"), (2, "ben@example.com")):
            connection.execute(
                text(
                    "INSERT INTO subscribers (id, email, email_key, name, status, attributes, consent_source, "
                    "consent_ip, consent_text, created_at) VALUES (:id, :a, :a, '', 'active', '{}', '', '', '', "
                    "'2026-01-01 00:00:00')"
                ),
                {"id": id_, "a": address},
            )
        connection.execute(text("INSERT INTO subscriber_tags (subscriber_id, tag) VALUES (1, 'monthly')"))
        # Ben was erased before the upgrade: his id lives on in the events only.
        connection.execute(text("DELETE FROM subscribers WHERE id = 2"))
        connection.execute(
            text(
                "INSERT INTO events (subscriber_id, at, kind, old_status, new_status, source, reason) "
                "VALUES (2, '2026-01-02 00:00:00', 'forgotten', 'active', 'forgotten', 'cli', '')"
            )
        )
    command.upgrade(_alembic_config(engine), "head")
    engine.dispose()

    db = Database(url)
    people = SubscriberList(db, SECRET)
    assert people.show("ana@example.com")["tags"] == ["monthly"]  # the table rebuild kept the tags
    carol = people.add("carol@example.com")
    assert carol.id == 3  # never 2, Ben's
    tokens = Tokens(SECRET)
    ana = tokens.read("unsubscribe", tokens.legacy("unsubscribe", 1, 7))
    assert people.unsubscribe_link(ana, "one-click").email == "ana@example.com"
    ben = tokens.read("unsubscribe", tokens.legacy("unsubscribe", 2, 7))
    with pytest.raises(Exception, match="no such subscriber"):
        people.unsubscribe_link(ben, "one-click")
    db.dispose()


def test_tokens_are_opaque_and_bound_to_their_purpose():
    tokens = Tokens(SECRET)
    key = secrets.token_hex(10)
    token = tokens.make("unsubscribe", key, 42)
    assert re.fullmatch(r"[a-z2-7]{48}", token)  # fits unsubscribe+TOKEN@ in a 64-character local part
    assert key not in token and "42" not in token
    assert tokens.read("unsubscribe", token).key == key
    assert tokens.read("unsubscribe", token.upper()).campaign_id == 42  # mail systems may change case
    for purpose in ("preferences", "confirm"):
        with pytest.raises(Exception, match="not valid"):
            tokens.read(purpose, token)


# -- confirmation ---------------------------------------------------------------------------
def test_confirmation_is_single_use_post_only_and_expires(stack):
    client = requests.Session()
    stack.signup(client, "ana@example.com", "Ana")
    link = stack.wait_for_link("ana@example.com")
    assert stack.status("ana@example.com") == "pending"

    assert client.head(link).status_code == 200  # link scanners send HEAD and GET
    assert client.get(link).status_code == 200
    assert stack.status("ana@example.com") == "pending"
    confirmed = stack.confirm(client, link)
    assert "You are subscribed" in confirmed.text and "Monthly" in confirmed.text
    assert stack.status("ana@example.com") == "active"

    stack.cli("subscribers", "unsubscribe", "ana@example.com")
    replay = client.get(link)
    assert replay.status_code == 400 and "already used or has expired" in replay.text
    csrf_token = csrf_from(client.get(f"{stack.base}/subscribe").text)
    assert client.post(link, data={"csrf_token": csrf_token}).status_code == 400
    assert stack.status("ana@example.com") == "unsubscribed"

    stack.signup(client, "old.link@example.com")
    stale = stack.wait_for_link("old.link@example.com")
    shift_back(stack, Signup, "sent_at", timedelta(days=8))
    assert client.get(stale).status_code == 400
    assert stack.status("old.link@example.com") == "pending"


def test_resignup_keeps_the_old_consent_until_confirmed(stack):
    client = requests.Session()
    stack.people.add("ana@example.com", name="Ana", consent_text="The old wording", consent_ip="198.51.100.1")
    stack.cli("subscribers", "unsubscribe", "ana@example.com")
    stack.signup(client, "ana@example.com", "Mallory's name for her")
    link = stack.wait_for_link("ana@example.com")
    record = stack.people.show("ana@example.com")
    assert (record["status"], record["consent_text"], record["name"]) == ("unsubscribed", "The old wording", "Ana")
    stack.confirm(client, link)
    record = stack.people.show("ana@example.com")
    assert record["status"] == "active" and record["consent_text"].startswith("Yes, send me")
    assert record["consent_ip"] == "127.0.0.1"


# -- resubscribe: a short undo, then a new double opt-in -----------------------------------
def test_resubscribe_is_an_undo_only_for_a_while_and_only_for_the_readers_own_click(stack):
    client = requests.Session()
    for address in ("quick@example.com", "late@example.com", "staff@example.com"):
        stack.people.add(address, tags=("monthly",))

    def unsubscribe_page(address: str) -> tuple[str, requests.Response]:
        token = stack.tokens.make("unsubscribe", stack.people.find(address).token, 5)
        page = client.get(f"{stack.base}/u/{token}")
        return token, client.post(f"{stack.base}/u/{token}", data={"csrf_token": csrf_from(page.text)})

    token, done = unsubscribe_page("quick@example.com")
    back = client.post(f"{stack.base}/u/{token}/resubscribe", data={"csrf_token": csrf_from(done.text)})
    assert "Welcome back" in back.text and stack.status("quick@example.com") == "active"

    token, done = unsubscribe_page("late@example.com")
    shift_back(stack, Event, "at", timedelta(hours=25))
    late = client.post(f"{stack.base}/u/{token}/resubscribe", data={"csrf_token": csrf_from(done.text)})
    assert "Check your inbox" in late.text and stack.status("late@example.com") == "unsubscribed"
    stack.confirm(client, stack.wait_for_link("late@example.com"))
    assert stack.status("late@example.com") == "active"

    stack.cli("subscribers", "unsubscribe", "staff@example.com", "--reason", "asked by phone")
    token = stack.tokens.make("unsubscribe", stack.people.find("staff@example.com").token, 5)
    page = client.get(f"{stack.base}/u/{token}")
    staff = client.post(f"{stack.base}/u/{token}/resubscribe", data={"csrf_token": csrf_from(page.text)})
    assert "Check your inbox" in staff.text and stack.status("staff@example.com") == "unsubscribed"
    stack.wait_for_link("staff@example.com")
    sources = [event["source"] for event in stack.people.show("quick@example.com")["events"]]
    assert sources[-1] == "web:undo"


# -- signup timing ----------------------------------------------------------------------------
def test_signup_answers_in_the_same_time_whatever_the_address(stack):
    """Medians over 30 requests each, interleaved in random order, within 2 ms of each
    other: the request path does one insert for every address, the email goes out from
    the queue. The machine is shared, so a round spoilt by a neighbour's burst of work is
    measured again (at most three rounds); a real leak (the issue measured 30 ms for a new
    address against 2.5 ms for an erased one) fails every round with the same state
    slowest, where noise on a loaded machine (seen: spreads of 2.2-3.2 ms, raw medians of
    14-27 ms) picks a different one each round."""
    import random

    stack.people.add("active@example.com")
    stack.people.add("left@example.com")
    stack.people.unsubscribe("left@example.com")
    stack.people.add("erased@example.com")
    stack.people.forget("erased@example.com")
    client = requests.Session()
    token = csrf_from(client.get(f"{stack.base}/subscribe").text)
    fresh = iter(range(10**6))
    states = {
        "new": lambda: f"new{next(fresh)}@example.com",
        "active": lambda: "active@example.com",
        "unsubscribed": lambda: "left@example.com",
        "erased": lambda: "erased@example.com",
    }

    def post(state: str) -> float:
        data = {"csrf_token": token, "email": states[state](), "name": "", "consent": "yes"}
        started = time.perf_counter()
        response = client.post(f"{stack.base}/subscribe", data=data)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200 and "Check your inbox" in response.text
        return elapsed

    rounds = []
    for _ in range(3):
        for state in list(states) * 3:  # warm-up
            post(state)
        # 30 blocks of one request per state, in random order within each block. The
        # machine is shared: a neighbour's burst slows everything for a while, so each
        # time is taken relative to its own block's median before the medians are compared.
        relative: dict[str, list[float]] = {state: [] for state in states}
        raw: dict[str, list[float]] = {state: [] for state in states}
        for _ in range(30):
            block = random.sample(list(states), len(states))
            times = {state: post(state) for state in block}
            middle = statistics.median(times.values())
            for state, elapsed in times.items():
                relative[state].append(elapsed - middle)
                raw[state].append(elapsed)
        medians = {state: round(statistics.median(values), 2) for state, values in relative.items()}
        rounds.append({"relative": medians, "raw": {s: round(statistics.median(v), 2) for s, v in raw.items()}})
        if max(medians.values()) - min(medians.values()) < 2.0:
            print(f"signup medians in ms per round (relative to each block, and raw): {rounds}")
            return
    # Every round spread 2 ms or more. A leak sets one state apart from the others, the
    # same way, every round; a busy machine's noise does not keep picking the same one.
    for state in states:
        apart = [
            r["relative"][state] - statistics.median(v for s, v in r["relative"].items() if s != state) for r in rounds
        ]
        assert not (all(gap >= 1.5 for gap in apart) or all(gap <= -1.5 for gap in apart)), (
            f"signup time depends on the address's state ({state}; medians in ms per round): {rounds}"
        )


# -- webhooks -------------------------------------------------------------------------------
def sendgrid_headers(body: bytes, timestamp: str | None = None) -> dict[str, str]:
    timestamp = timestamp or str(int(time.time()))
    signature = SENDGRID_PRIVATE.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def mailgun_signature(timestamp: str | None = None) -> dict[str, str]:
    timestamp = timestamp or str(int(time.time()))
    token = secrets.token_hex(25)
    signature = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": signature}


def test_replayed_webhooks_change_nothing(stack):
    for address in ("ana@example.com", "ben@example.com", "cy@example.com", "dee@example.com"):
        stack.people.add(address)
    base = f"{stack.base}/webhooks"

    bounce = {"RecordType": "Bounce", "ID": 4242, "Type": "HardBounce", "Email": "ana@example.com"}
    assert requests.post(f"{base}/postmark", json=bounce, auth=POSTMARK_AUTH).json()["applied"] == 1
    set_status(stack, "ana@example.com", "active")  # say staff corrected it; the captured request comes again
    replay = requests.post(f"{base}/postmark", json=bounce, auth=POSTMARK_AUTH)
    assert replay.status_code == 200 and replay.json()["applied"] == 0
    assert stack.status("ana@example.com") == "active"

    body = json.dumps([{"email": "ben@example.com", "event": "bounce", "type": "bounce", "reason": "550"}]).encode()
    headers = sendgrid_headers(body)
    assert requests.post(f"{base}/sendgrid", data=body, headers=headers).json()["applied"] == 1
    set_status(stack, "ben@example.com", "active")
    replay = requests.post(f"{base}/sendgrid", data=body, headers=headers)
    assert replay.status_code == 200 and replay.json()["applied"] == 0
    assert stack.status("ben@example.com") == "active"

    signed = mailgun_signature()
    first = {"signature": signed, "event-data": {"event": "complained", "recipient": "cy@example.com"}}
    assert requests.post(f"{base}/mailgun", json=first).json()["applied"] == 1
    # The signature covers only timestamp + token: the same block with someone else's event.
    other = {"signature": signed, "event-data": {"event": "complained", "recipient": "dee@example.com"}}
    assert requests.post(f"{base}/mailgun", json=other).json()["applied"] == 0
    assert stack.status("dee@example.com") == "active"


def test_malformed_webhooks_get_400_never_500(stack):
    stack.people.add("ana@example.com")
    base = f"{stack.base}/webhooks"
    attempts = [
        ("mailgun", {"signature": {"timestamp": "²", "token": "t", "signature": "s"}}),
        ("mailgun", {"signature": {"timestamp": ["1"], "token": 5, "signature": None}}),
        ("mailgun", {"signature": "x"}),
        ("mailgun", []),
        (
            "mailgun",
            {
                "signature": mailgun_signature(),
                "event-data": {
                    "event": "failed",
                    "severity": "permanent",
                    "recipient": "ana@example.com",
                    "delivery-status": "not an object",
                },
            },
        ),
        ("mailgun", {"signature": mailgun_signature(), "event-data": ["x"]}),
        ("postmark", {"RecordType": "Bounce", "Email": ["x"]}),
        ("postmark", "just a string"),
    ]
    for provider, body in attempts:
        auth = POSTMARK_AUTH if provider == "postmark" else None
        response = requests.post(f"{base}/{provider}", json=body, auth=auth)
        assert 400 <= response.status_code < 500, (provider, body, response.status_code)
    for headers in (
        sendgrid_headers(b"[]", timestamp="²"),
        {**sendgrid_headers(b"[]"), "X-Twilio-Email-Event-Webhook-Signature": "ñ"},
        sendgrid_headers(b"{"),
    ):
        body = b"{" if headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "").isascii() else b"[]"
        response = requests.post(f"{base}/sendgrid", data=body, headers=headers)
        assert 400 <= response.status_code < 500, response.status_code
    sendgrid_object = b'{"email": "ana@example.com"}'
    assert (
        requests.post(f"{base}/sendgrid", data=sendgrid_object, headers=sendgrid_headers(sendgrid_object)).status_code
        == 400
    )
    assert stack.status("ana@example.com") == "active"


# -- erasure --------------------------------------------------------------------------------
def test_forget_leaves_the_address_nowhere(stack):
    """Campaign message, proof, confirmation email, a webhook reason quoting the address,
    a staff note: after `forget`, the address is in no table, no file under the
    database's directory (database, WAL) and no outbox file."""
    address = "ana.lopez@example.com"
    client = requests.Session()
    stack.signup(client, address, "Ana López")
    stack.confirm(client, stack.wait_for_link(address))
    stack.cli("subscribers", "add", "someone.else@example.com", "--tag", "monthly")
    stack.cli("send", str(SAMPLE_ISSUE), "--yes")
    stack.cli("send", str(SAMPLE_ISSUE), "--test-to", address)
    bounce = {
        "RecordType": "Bounce",
        "ID": 7,
        "Type": "HardBounce",
        "Email": address,
        "Description": f"unknown user {address}",
    }
    assert requests.post(f"{stack.base}/webhooks/postmark", json=bounce, auth=POSTMARK_AUTH).status_code == 200
    assert address not in json.dumps(stack.people.show(address)["events"])  # redacted before it was stored
    assert len([path for path in _files_holding(stack.root, address) if path.suffix == ".eml"]) == 3

    result = stack.cli("subscribers", "forget", address, "--yes")
    assert "Deleted 3 message file(s)" in result.stdout
    assert _files_holding(stack.root, address) == []
    someone = _files_holding(stack.root, "someone.else@example.com")
    assert any(path.suffix == ".eml" for path in someone)  # other people's mail stays
    with pytest.raises(Exception, match="no subscriber"):
        stack.people.show(address)


def _files_holding(root: Path, address: str) -> list[Path]:
    needles = [address.encode(), address.upper().encode(), address.encode("utf-16-le")]
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(needle in data or needle.lower() in data.lower() for needle in needles):
                found.append(path)
    return found


# -- the embeddable signup form -------------------------------------------------------------
@pytest.mark.browser
def test_embedded_form_posted_from_another_site(tmp_path, workdir, monkeypatch, browser):
    clinic_port = free_port()
    clinic_origin = f"http://127.0.0.1:{clinic_port}"
    with serve(tmp_path, monkeypatch, {"NEWSLETTER_SIGNUP_ORIGINS": clinic_origin}) as stack:
        embed = requests.get(f"{stack.base}/subscribe/embed")
        snippet = re.search(r"<textarea[^>]*>(.*?)</textarea>", embed.text, re.S).group(1)
        import html as html_module

        snippet = html_module.unescape(snippet)
        site = tmp_path / "clinic-site"
        site.mkdir()
        (site / "index.html").write_text(
            f"<!DOCTYPE html><html><body><h1>Calm Harbor Clinic</h1>{snippet}</body></html>", encoding="utf-8"
        )
        with _static_site(site, clinic_port):
            page = browser.new_page()
            page.goto(f"{clinic_origin}/index.html")
            page.get_by_label("Email address").fill("embedded@example.com")
            page.get_by_label("Caregivers").check()
            page.get_by_label(re.compile("Yes, send me")).check()
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_selector("text=Check your inbox")
            cookies = page.context.cookies(stack.base)
            page.close()
        assert cookies == []  # no session cookie is needed or set
        stack.wait_for(lambda: stack.status("embedded@example.com") == "pending", "the signup to land pending")
        confirm = requests.Session()
        confirmed = stack.confirm(confirm, stack.wait_for_link("embedded@example.com"))
        assert "Caregivers" in confirmed.text and "Monthly" in confirmed.text  # what they will get
        assert stack.people.show("embedded@example.com")["tags"] == ["caregivers", "monthly"]

        stack.cli("send", str(SAMPLE_ISSUE), "--yes")  # segment: [monthly]
        received = [
            path for path in (stack.outbox / "campaign-1").glob("*.eml") if b"embedded@example.com" in path.read_bytes()
        ]
        assert len(received) == 1

        # The same snippet posted from a site not on the list, or with the honeypot filled.
        form = {
            "form_token": re.search(r'name="form_token" value="([^"]+)"', snippet).group(1),
            "email": "other@example.com",
            "consent": "yes",
        }
        action = f"{stack.base}/subscribe/embedded"
        assert requests.post(action, data=form, headers={"Origin": "https://evil.example"}).status_code == 403
        assert (
            requests.post(action, data={**form, "form_token": "forged"}, headers={"Origin": clinic_origin}).status_code
            == 400
        )
        bot = requests.post(action, data={**form, "website": "http://spam"}, headers={"Origin": clinic_origin})
        assert bot.status_code == 200 and "Check your inbox" in bot.text
        with stack.db.session() as session:
            assert session.scalar(select(Signup).where(Signup.email_key == "other@example.com")) is None
        assert requests.get(f"{stack.base}/subscribe").status_code == 200  # the standalone page still works


@contextmanager
def _static_site(directory: Path, port: int):
    handler = lambda *args, **kwargs: SimpleHTTPRequestHandler(*args, directory=str(directory), **kwargs)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
