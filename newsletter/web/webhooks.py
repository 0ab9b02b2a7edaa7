"""Bounce and complaint webhooks from Postmark, SendGrid and Mailgun, each verified its own way.

An unverified request is refused (401/403) and changes nothing. Each event becomes one
neutral `Feedback`, applied by the same function as the feedback mailbox's (feedback.py);
unknown addresses are ignored (the provider may know people we erased).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from flask import Blueprint, Response, current_app, jsonify, request

from ..feedback import Feedback

webhooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")
MAX_SKEW = 15 * 60  # seconds a signed timestamp may be old (replay window)


def web():
    return current_app.extensions["newsletter"]


def refuse(status: int, why: str) -> Response:
    return Response(f"{why}\n", status, mimetype="text/plain")


def json_body() -> Any:
    data = request.get_json(silent=True)
    return data


def apply(events: list[tuple[str, str, str]], source: str, message_id: str | None = None) -> Response:
    """(email, feedback kind, reason) per event."""
    applied = 0
    for email, kind, reason in events:
        event = Feedback(kind, source, reason, email=email, message_id=message_id)
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
    record_type, email = body.get("RecordType"), body.get("Email")
    if not isinstance(email, str):
        return refuse(400, "missing Email")
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
    if not signature or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW:
        return refuse(401, "missing, stale or malformed signature")
    try:
        _sendgrid_key().verify(
            base64.b64decode(signature), timestamp.encode() + request.get_data(), ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError, binascii.Error):
        return refuse(401, "bad signature")
    events = json_body()
    if not isinstance(events, list):
        return refuse(400, "expected a JSON array of events")
    changes = []
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("email"), str):
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
    timestamp, token, signature = (str(signed.get(k, "")) for k in ("timestamp", "token", "signature"))
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW:
        return refuse(401, "stale or malformed timestamp")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return refuse(401, "bad signature")
    event = body.get("event-data")
    if not isinstance(event, dict) or not isinstance(event.get("recipient"), str):
        return refuse(400, "missing event-data.recipient")
    kind = event.get("event")
    if kind == "failed" and event.get("severity") == "permanent":
        reason = str(event.get("delivery-status", {}).get("description", ""))[:200]
        return apply([(event["recipient"], "bounce", f"mailgun permanent failure: {reason}")], "webhook:mailgun")
    if kind == "complained":
        return apply([(event["recipient"], "complaint", "mailgun complaint")], "webhook:mailgun")
    return apply([], "webhook:mailgun")
