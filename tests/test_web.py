"""The subscriber web app through Flask's test client: tokens, one-click, forms, webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.subscribers import SubscriberList
from newsletter.tokens import Tokens
from newsletter.web import create_app

from .conftest import SECRET
from .helpers import ENV, SAMPLE_ISSUE

SENDGRID_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
MAILGUN_KEY = "mailgun-signing-key-test"


@pytest.fixture
def web(database_url, workdir, monkeypatch, tmp_path):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(
        overrides={
            "database_url": database_url,
            "outbox_dir": str(tmp_path / "outbox"),
            "postmark_webhook_auth": "hooks:s3cret-password",
            "sendgrid_webhook_public_key": SENDGRID_PUBLIC,
            "mailgun_webhook_signing_key": MAILGUN_KEY,
        }
    )
    app = create_app(settings, {"TESTING": True, "SIGNUP_QUEUE_THREAD": False})
    db = Database(database_url)
    people = SubscriberList(db, SECRET)
    yield app, people, tmp_path / "outbox"
    db.dispose()


def status(people, email):
    return people.show(email)["status"]


def events(people, email):
    return [(e["new_status"], e["source"]) for e in people.show(email)["events"]]


def csrf_from(response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True)).group(1)


def test_one_click_as_gmail_sends_it(web):
    app, people, _ = web
    subscriber = people.add("ana@example.com", tags=("monthly",))
    token = Tokens(SECRET).make("unsubscribe", subscriber.token, 3)
    client = app.test_client(use_cookies=False)
    response = client.post(
        f"/u/{token}", data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert status(people, "ana@example.com") == "unsubscribed"
    again = client.post(
        f"/u/{token}", data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert again.status_code == 200
    assert events(people, "ana@example.com") == [("active", "cli"), ("unsubscribed", "one-click")]
    event = people.show("ana@example.com")["events"][-1]
    assert event["campaign_id"] == 3


def test_get_only_asks_and_form_post_unsubscribes(web):
    app, people, _ = web
    subscriber = people.add("ana@example.com")
    token = Tokens(SECRET).make("unsubscribe", subscriber.token, None)
    client = app.test_client()
    page = client.get(f"/u/{token}")
    assert page.status_code == 200
    assert "Unsubscribe ana@example.com from the Calm Harbor Ketamine Clinic newsletter?" in page.get_data(as_text=True)
    assert status(people, "ana@example.com") == "active"  # link scanners change nothing
    no_csrf = client.post(f"/u/{token}", data={})
    assert no_csrf.status_code == 400 and status(people, "ana@example.com") == "active"
    done = client.post(f"/u/{token}", data={"csrf_token": csrf_from(page)})
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    assert status(people, "ana@example.com") == "unsubscribed"
    back = client.post(f"/u/{token}/resubscribe", data={"csrf_token": csrf_from(done)})
    assert back.status_code == 200 and status(people, "ana@example.com") == "active"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # tampered signature
        lambda t: "WzEsbnVsbF0.forgedsignature",  # forged
        lambda t: t[:-8],  # truncated
        lambda t: t.upper(),  # upper case reads the same: still valid, so the mangling below adds a letter
        lambda t: Tokens(SECRET).make("preferences", "00" * 10, None),  # sealed by us, nobody's value
        lambda t: Tokens("another-secret-key-000000").make("unsubscribe", "11" * 10, None),  # wrong key
        lambda t: Tokens(SECRET).legacy("unsubscribe", 999, None),  # pre-0006 link of a row that never existed
    ],
)
def test_forged_tokens_change_nothing(web, mangle):
    app, people, _ = web
    subscriber = people.add("ana@example.com")
    token = mangle(Tokens(SECRET).make("unsubscribe", subscriber.token, None))
    if token == token.upper():
        token += "a"
    client = app.test_client(use_cookies=False)
    assert client.get(f"/u/{token}").status_code == 400
    response = client.post(
        f"/u/{token}", data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "not valid" in response.get_data(as_text=True)
    assert status(people, "ana@example.com") == "active"


def test_security_headers(web):
    app, _, _ = web
    client = app.test_client()
    archive = client.get("/archive")
    assert archive.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in archive.headers["Content-Security-Policy"]
    assert archive.headers["Referrer-Policy"] == "no-referrer"
    assert archive.headers["X-Content-Type-Options"] == "nosniff"
    form = client.get("/subscribe")
    assert "X-Frame-Options" not in form.headers  # the signup form is meant to be embedded
    assert "frame-ancestors *" in form.headers["Content-Security-Policy"]


def subscribe(client, email, name="", consent="yes"):
    page = client.get("/subscribe")
    data = {"csrf_token": csrf_from(page), "email": email, "name": name}
    if consent:
        data["consent"] = consent
    return client.post("/subscribe", data=data, environ_base={"REMOTE_ADDR": "203.0.113.7"})


def drain(app):
    """What the signup queue's background thread does in `serve`."""
    return app.extensions["newsletter"].signups.drain()


def test_signup_double_opt_in(web):
    app, people, outbox = web
    client = app.test_client()
    response = subscribe(client, "New.Reader@Example.com", "Nia")
    assert response.status_code == 200 and "Check your inbox" in response.get_data(as_text=True)
    drain(app)
    record = people.show("new.reader@example.com")
    assert record["status"] == "pending"
    assert record["consent_ip"] == "203.0.113.7"
    assert record["consent_text"].startswith("Yes, send me the Calm Harbor newsletter")
    (sent,) = list((outbox / "transactional").glob("*.eml"))
    body = sent.read_text()
    link = re.search(r"https://news\.calmharbor\.example(/confirm/\w+)", body.replace("=\n", "")).group(1)
    page = client.get(link)
    assert page.status_code == 200 and "Yes, subscribe me" in page.get_data(as_text=True)
    assert status(people, "new.reader@example.com") == "pending"  # opening the link changes nothing
    confirmed = client.post(link, data={"csrf_token": csrf_from(page)})
    text = confirmed.get_data(as_text=True)
    assert confirmed.status_code == 200 and "You are subscribed" in text and "Monthly" in text
    assert status(people, "new.reader@example.com") == "active"
    assert people.show("new.reader@example.com")["tags"] == ["monthly"]


def test_signup_never_reveals_membership(web):
    app, people, outbox = web
    people.add("member@example.com")
    client = app.test_client()
    known = subscribe(client, "member@example.com").get_data(as_text=True)
    unknown = subscribe(client, "stranger@example.com").get_data(as_text=True)
    drain(app)
    strip = lambda html: re.sub(r'name="csrf_token" value="[^"]+"', "", html)  # noqa: E731
    assert strip(known) == strip(unknown)
    assert len(list((outbox / "transactional").glob("*.eml"))) == 1  # only the stranger gets mail
    assert status(people, "member@example.com") == "active"


def test_signup_form_errors_and_rate_limit(web):
    app, _, _ = web
    client = app.test_client()
    bad = subscribe(client, "not-an-address")
    assert bad.status_code == 400 and "valid email address" in bad.get_data(as_text=True)
    no_consent = subscribe(client, "a@example.com", consent=None)
    assert no_consent.status_code == 400 and "tick the box" in no_consent.get_data(as_text=True)
    codes = [subscribe(client, f"r{i}@example.com").status_code for i in range(5)]
    assert codes[-1] == 429  # five per ten minutes per address, the two above included


def test_preferences(web):
    app, people, _ = web
    subscriber = people.add("ana@example.com", name="Ana", tags=("monthly", "vip"))
    token = Tokens(SECRET).make("preferences", subscriber.token, None)
    client = app.test_client()
    page = client.get(f"/p/{token}")
    text = page.get_data(as_text=True)
    assert 'value="monthly" checked' in text and "vip" not in text  # internal tags stay internal
    saved = client.post(
        f"/p/{token}",
        data={"csrf_token": csrf_from(page), "name": "Ana L.", "topics": ["patients", "caregivers"], "action": "save"},
    )
    assert "Your preferences are saved" in saved.get_data(as_text=True)
    record = people.show("ana@example.com")
    assert record["name"] == "Ana L." and record["tags"] == ["caregivers", "patients", "vip"]
    client.post(f"/p/{token}", data={"csrf_token": csrf_from(saved), "action": "unsubscribe"})
    assert status(people, "ana@example.com") == "unsubscribed"


def test_archive_has_no_personal_data(web, cli, monkeypatch):
    app, people, outbox = web
    people.add("private.person@example.com", name="Private Person", tags=("monthly",))
    monkeypatch.setenv("NEWSLETTER_OUTBOX_DIR", str(outbox))
    cli("send", str(SAMPLE_ISSUE), "--yes")
    client = app.test_client()
    listing = client.get("/archive").get_data(as_text=True)
    assert "Understanding anxiety, and how ketamine treatment can help" in listing
    page = client.get("/archive/2026-12-understanding-anxiety")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Hello," in html
    assert "private.person" not in html and "Private" not in html
    assert "/u/" not in html and "/p/" not in html
    assert client.get("/archive/not-sent-yet").status_code == 404


# -- webhooks ------------------------------------------------------------------------------
def test_postmark_webhook(web):
    app, people, _ = web
    people.add("bounce@example.com")
    client = app.test_client()
    event = {"RecordType": "Bounce", "Type": "HardBounce", "Email": "bounce@example.com", "MessageID": "x"}
    bad = client.post("/webhooks/postmark", json=event, headers=basic("hooks", "wrong"))
    assert bad.status_code == 401 and status(people, "bounce@example.com") == "active"
    assert client.post("/webhooks/postmark", json=event).status_code == 401
    good = client.post("/webhooks/postmark", json=event, headers=basic("hooks", "s3cret-password"))
    assert good.status_code == 200 and status(people, "bounce@example.com") == "bounced"
    soft = {**event, "Type": "SoftBounce", "Email": "other@example.com"}
    assert client.post("/webhooks/postmark", json=soft, headers=basic("hooks", "s3cret-password")).json["applied"] == 0


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def sendgrid_headers(body: bytes, timestamp: int | None = None, key=SENDGRID_PRIVATE):
    timestamp = timestamp or int(time.time())
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        "Content-Type": "application/json",
    }


def test_sendgrid_webhook(web):
    app, people, _ = web
    people.add("spam@example.com")
    people.add("bounce@example.com")
    client = app.test_client()
    body = json.dumps(
        [
            {"email": "spam@example.com", "event": "spamreport"},
            {"email": "bounce@example.com", "event": "bounce", "type": "bounce", "reason": "550 5.1.1"},
        ]
    ).encode()
    tampered = body.replace(b"spamreport", b"delivered_")
    assert client.post("/webhooks/sendgrid", data=tampered, headers=sendgrid_headers(body)).status_code == 401
    other_key = ec.generate_private_key(ec.SECP256R1())
    assert (
        client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(body, key=other_key)).status_code == 401
    )
    stale = sendgrid_headers(body, timestamp=int(time.time()) - 3600)
    assert client.post("/webhooks/sendgrid", data=body, headers=stale).status_code == 401
    assert status(people, "spam@example.com") == "active"
    good = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(body))
    assert good.status_code == 200 and good.json == {"received": 2, "applied": 2}
    assert status(people, "spam@example.com") == "complained"
    assert status(people, "bounce@example.com") == "bounced"
    assert events(people, "spam@example.com")[-1] == ("complained", "webhook:sendgrid")


def mailgun_body(recipient, event="failed", severity="permanent", key=MAILGUN_KEY, timestamp=None):
    timestamp = str(timestamp or int(time.time()))
    token = secrets.token_hex(25)  # Mailgun's token is random per request
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {
            "event": event,
            "severity": severity,
            "recipient": recipient,
            "delivery-status": {"description": "No such mailbox"},
        },
    }


def test_mailgun_webhook(web):
    app, people, _ = web
    people.add("gone@example.com")
    client = app.test_client()
    forged = mailgun_body("gone@example.com", key="not-the-key")
    assert client.post("/webhooks/mailgun", json=forged).status_code == 401
    replayed = mailgun_body("gone@example.com", timestamp=int(time.time()) - 7200)
    assert client.post("/webhooks/mailgun", json=replayed).status_code == 401
    assert (
        client.post("/webhooks/mailgun", json=mailgun_body("gone@example.com", severity="temporary")).json["applied"]
        == 0
    )
    assert status(people, "gone@example.com") == "active"
    assert client.post("/webhooks/mailgun", json=mailgun_body("gone@example.com")).status_code == 200
    assert status(people, "gone@example.com") == "bounced"


@pytest.mark.parametrize("path", ["/webhooks/postmark", "/webhooks/sendgrid", "/webhooks/mailgun"])
def test_malformed_and_oversized_bodies(web, path):
    app, people, _ = web
    people.add("x@example.com")
    client = app.test_client()
    headers = basic("hooks", "s3cret-password")
    garbage = b"{not json"
    if path.endswith("sendgrid"):
        headers = sendgrid_headers(garbage)
    response = client.post(path, data=garbage, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code in (400, 401)
    huge = b'{"Email": "x@example.com", "pad": "' + b"x" * 70_000 + b'"}'
    assert client.post(path, data=huge, headers={**headers, "Content-Type": "application/json"}).status_code == 413
    assert status(people, "x@example.com") == "active"


def test_signup_limit_shared_through_redis(database_url, workdir, monkeypatch, tmp_path):
    """Two `serve` processes (two apps here) count signups from one address together."""
    import socket
    import uuid

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    overrides = {
        "database_url": database_url,
        "outbox_dir": str(tmp_path / "outbox"),
        "rate_limit_storage": "redis://127.0.0.1:6379",
        "subscribe_rate_limit": "3 per 10 minutes",
    }
    ip = f"198.51.100.{uuid.uuid4().int % 250}"  # a fresh key in a shared Redis
    apps = [
        create_app(load_settings(overrides=overrides), {"TESTING": True, "SIGNUP_QUEUE_THREAD": False})
        for _ in range(2)
    ]
    clients = [app.test_client() for app in apps]

    def post(client, n):
        page = client.get("/subscribe")
        return client.post(
            "/subscribe",
            data={"csrf_token": csrf_from(page), "email": f"r{n}@example.com", "consent": "yes"},
            environ_base={"REMOTE_ADDR": ip},
        ).status_code

    codes = [post(clients[n % 2], n) for n in range(4)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.parametrize("route", ["/webhooks/mailgun", "/webhooks/postmark", "/webhooks/sendgrid"])
def test_deeply_nested_webhook_json_is_a_400_not_a_500(web, route):
    """Mailgun's signature is inside the body, so an unauthenticated caller reaches the JSON parser."""
    app, _, _ = web
    client = app.test_client()
    for body in ("[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000):
        answer = client.post(route, data=body, content_type="application/json")
        assert answer.status_code in (400, 401), (route, answer.status_code)
