"""Bounce and complaint webhooks from Postmark, SendGrid and Mailgun, each verified its own way.

An unverified request is refused (401/403) and changes nothing; a malformed one gets 400
(never a 500). A verified request is applied once: the signature (SendGrid, Mailgun) and
each event id (all three) are remembered for the validity window, so a replay, even with
other event data under a captured signature, changes nothing. Each event becomes one
neutral `Feedback`, applied by the same function as the feedback mailbox's (feedback.py);
unknown addresses are ignored (the provider may know people we erased). Failure reasons
have addresses redacted before they are stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from ..addresses import redact_addresses
from ..feedback import Feedback
from ..models import WebhookReceipt, utcnow

webhooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")
MAX_SKEW = 15 * 60  # seconds a signed timestamp may be old (replay window)
# Postmark signs nothing and sends no timestamp: its event ids are kept this long.
POSTMARK_MEMORY = 30 * 24 * 3600
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: "²".isdigit() is True


class Malformed(ValueError):
    """A request body or header that is not what the provider sends."""


@webhooks.errorhandler(Malformed)
@webhooks.errorhandler(ValueError)
@webhooks.errorhandler(TypeError)
@webhooks.errorhandler(KeyError)
@webhooks.errorhandler(AttributeError)
@webhooks.errorhandler(UnicodeError)
def malformed(error: Exception) -> Response:
    # Whatever shape of input a parser did not expect: the sender's mistake, not ours.
    return refuse(400, "malformed request")


def web():
    return current_app.extensions["newsletter"]


def refuse(status: int, why: str) -> Response:
    return Response(f"{why}\n", status, mimetype="text/plain")


def json_body() -> Any:
    try:
        return request.get_json(silent=True)
    except RecursionError:  # deeply nested arrays: parsed before any signature can be checked
        raise Malformed("too deeply nested") from None


def timestamp_within_window(raw: object) -> bool:
    text = raw if isinstance(raw, str) else str(raw) if isinstance(raw, int) else ""
    return bool(_TIMESTAMP.fullmatch(text)) and abs(time.time() - int(text)) <= MAX_SKEW


def first_use(provider: str, kind: str, value: str, keep_seconds: float) -> bool:
    """Remember (a hash of) a signature or event id; False if it was seen before."""
    digest = hashlib.sha256(f"{provider}\0{kind}\0{value}".encode()).hexdigest()
    db = web().db
    now = utcnow()
    try:
        with db.session() as session:
            session.execute(delete(WebhookReceipt).where(WebhookReceipt.expires_at < now))
            session.add(WebhookReceipt(digest=digest, expires_at=now + timedelta(seconds=keep_seconds)))
    except IntegrityError:
        return False
    return True


def replayed(provider: str) -> Response:
    return jsonify({"received": 0, "applied": 0, "replayed": True})


def apply(events: list[tuple[str, str, str]], source: str, message_id: str | None = None) -> Response:
    """(email, feedback kind, reason) per event."""
    applied = 0
    for email, kind, reason in events:
        event = Feedback(kind, source, redact_addresses(reason), email=email, message_id=message_id)
        if web().feedback.apply(event).found:
            applied += 1
    return jsonify({"received": len(events), "applied": applied})


# -- Postmark: HTTP Basic credentials in the webhook URL (Postmark does not sign) ----------
@webhooks.route("/postmark", methods=["POST"])
def postmark():
    expected = web().settings.postmark_webhook_auth
    if not expected:
        return refuse(403, "postmark webhooks are not configured (postmark_webhook_auth)")
    auth = request.authorization
    given = f"{auth.username}:{auth.password}" if auth and auth.type == "basic" else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return refuse(401, "bad credentials")
    body = json_body()
    if not isinstance(body, dict):
        return refuse(400, "expected a JSON object")
    record_type, email, event_id = body.get("RecordType"), body.get("Email"), body.get("ID")
    if not isinstance(email, str):
        return refuse(400, "missing Email")
    if isinstance(event_id, bool) or not isinstance(event_id, (int, str)) or not str(event_id):
        # Postmark always sends an ID; without one, the body itself is the event's identity.
        event_id = hashlib.sha256(request.get_data()).hexdigest()
    if not first_use("postmark", str(record_type), str(event_id), POSTMARK_MEMORY):
        return replayed("postmark")
    if record_type == "Bounce" and body.get("Type") == "HardBounce":
        return apply(
            [(email, "bounce", f"postmark hard bounce: {str(body.get('Description', ''))[:200]}")],
            "webhook:postmark",
            message_id=str(body.get("MessageID") or "") or None,
        )
    if record_type == "SpamComplaint":
        return apply(
            [(email, "complaint", "postmark spam complaint")],
            "webhook:postmark",
            message_id=str(body.get("MessageID") or "") or None,
        )
    return apply([], "webhook:postmark")


# -- SendGrid: ECDSA (P-256, SHA-256) over timestamp + raw body -----------------------------
def _sendgrid_key():
    raw = web().settings.sendgrid_webhook_public_key.strip()
    if raw.startswith("-----BEGIN"):
        return load_pem_public_key(raw.encode())
    return load_der_public_key(base64.b64decode(raw))


@webhooks.route("/sendgrid", methods=["POST"])
def sendgrid():
    if not web().settings.sendgrid_webhook_public_key:
        return refuse(403, "sendgrid webhooks are not configured (sendgrid_webhook_public_key)")
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    if not signature or not timestamp_within_window(timestamp):
        return refuse(401, "missing, stale or malformed signature")
    try:
        _sendgrid_key().verify(
            base64.b64decode(signature), timestamp.encode() + request.get_data(), ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return refuse(401, "bad signature")
    events = json_body()
    if not isinstance(events, list):
        return refuse(400, "expected a JSON array of events")
    if not first_use("sendgrid", "signature", signature, 2 * MAX_SKEW):
        return replayed("sendgrid")
    changes = []
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("email"), str):
            continue
        event_id = event.get("sg_event_id")
        if isinstance(event_id, str) and event_id and not first_use("sendgrid", "event", event_id, 2 * MAX_SKEW):
            continue
        kind = event.get("event")
        if kind == "bounce" and event.get("type", "bounce") == "bounce":
            changes.append((event["email"], "bounce", f"sendgrid bounce: {str(event.get('reason', ''))[:200]}"))
        elif kind == "spamreport":
            changes.append((event["email"], "complaint", "sendgrid spam report"))
    return apply(changes, "webhook:sendgrid")


# -- Mailgun: HMAC-SHA256 of timestamp + token with the webhook signing key -----------------
@webhooks.route("/mailgun", methods=["POST"])
def mailgun():
    key = web().settings.mailgun_webhook_signing_key
    if not key:
        return refuse(403, "mailgun webhooks are not configured (mailgun_webhook_signing_key)")
    body = json_body()
    if not isinstance(body, dict) or not isinstance(body.get("signature"), dict):
        return refuse(400, "expected a JSON object with a signature")
    signed = body["signature"]
    timestamp, token, signature = (signed.get(k) for k in ("timestamp", "token", "signature"))
    if not isinstance(token, str) or not isinstance(signature, str) or not timestamp_within_window(timestamp):
        return refuse(401, "stale or malformed signature")
    expected = hmac.new(key.encode(), (str(timestamp) + token).encode(), hashlib.sha256).hexdigest()
    if not signature.isascii() or not hmac.compare_digest(expected, signature):
        return refuse(401, "bad signature")
    event = body.get("event-data")
    if not isinstance(event, dict) or not isinstance(event.get("recipient"), str):
        return refuse(400, "missing event-data.recipient")
    delivery_status = event.get("delivery-status", {})
    if not isinstance(delivery_status, dict):
        return refuse(400, "malformed event-data.delivery-status")
    # The signature covers only timestamp + token, not the event: one use per token.
    if not first_use("mailgun", "token", token, 2 * MAX_SKEW):
        return replayed("mailgun")
    event_id = event.get("id")
    if isinstance(event_id, str) and event_id and not first_use("mailgun", "event", event_id, 2 * MAX_SKEW):
        return replayed("mailgun")
    kind = event.get("event")
    if kind == "failed" and event.get("severity") == "permanent":
        reason = str(delivery_status.get("description", ""))[:200]
        return apply([(event["recipient"], "bounce", f"mailgun permanent failure: {reason}")], "webhook:mailgun")
    if kind == "complained":
        return apply([(event["recipient"], "complaint", "mailgun complaint")], "webhook:mailgun")
    return apply([], "webhook:mailgun")
