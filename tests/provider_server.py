"""A local HTTP server that plays Postmark, SendGrid and Mailgun, checking what they check."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

POSTMARK_TOKEN = "pm-server-token-test"
SENDGRID_KEY = "SG.test-key"
MAILGUN_KEY = "key-mailgun-test"
MAILGUN_DOMAIN = "mg.calmharbor.example"
LIMITS = {"postmark": 500, "sendgrid": 1000, "mailgun": 1000}


@dataclass
class Delivered:
    to: str
    subject: str
    html: str
    text: str
    headers: dict[str, str]


@dataclass
class ProviderState:
    faults: list[int] = field(default_factory=list)  # statuses to answer before accepting
    inactive: set[str] = field(default_factory=set)  # Postmark answers ErrorCode 406 for these
    delivered: list[Delivered] = field(default_factory=list)
    requests: list[tuple[str, int]] = field(default_factory=list)  # (provider, batch size)
    problems: list[str] = field(default_factory=list)  # what a real provider would reject
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received_by(self) -> Counter:
        return Counter(d.to for d in self.delivered)


def _handler(state: ProviderState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, body=None, headers: dict[str, str] | None = None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def fault(self) -> bool:
            with state.lock:
                status = state.faults.pop(0) if state.faults else None
            if status is None:
                return False
            self.reply(status, {"message": "injected"}, {"Retry-After": "0"} if status == 429 else None)
            return True

        def problem(self, text: str) -> None:
            state.problems.append(text)
            self.reply(400, {"errors": [{"message": text}]})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path == "/email/batch":
                self.postmark(raw)
            elif self.path == "/v3/mail/send":
                self.sendgrid(raw)
            elif self.path == f"/v3/{MAILGUN_DOMAIN}/messages":
                self.mailgun(raw)
            else:
                self.problem(f"unknown endpoint {self.path}")

        def postmark(self, raw: bytes):
            if self.headers.get("X-Postmark-Server-Token") != POSTMARK_TOKEN:
                return self.reply(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
            if self.fault():
                return
            batch = json.loads(raw)
            if not isinstance(batch, list) or not 0 < len(batch) <= LIMITS["postmark"]:
                return self.problem("postmark: batch must hold 1 to 500 messages")
            state.requests.append(("postmark", len(batch)))
            answers = []
            for message in batch:
                missing = {"From", "To", "Subject", "HtmlBody", "TextBody", "MessageStream"} - set(message)
                if missing:
                    return self.problem(f"postmark: missing {sorted(missing)}")
                headers = {h["Name"]: h["Value"] for h in message.get("Headers", [])}
                to = re.search(r"<([^>]+)>|^(\S+@\S+)$", message["To"])
                address = (to.group(1) or to.group(2)).lower()
                if address in state.inactive:
                    answers.append(
                        {
                            "ErrorCode": 406,
                            "Message": "You tried to send to a recipient that has been marked as inactive.",
                            "To": address,
                        }
                    )
                    continue
                state.delivered.append(
                    Delivered(address, message["Subject"], message["HtmlBody"], message["TextBody"], headers)
                )
                answers.append(
                    {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{len(state.delivered)}", "To": address}
                )
            self.reply(200, answers)

        def sendgrid(self, raw: bytes):
            if self.headers.get("Authorization") != f"Bearer {SENDGRID_KEY}":
                return self.reply(401, {"errors": [{"message": "authorization required"}]})
            if self.fault():
                return
            body = json.loads(raw)
            personalizations = body.get("personalizations", [])
            if not 0 < len(personalizations) <= LIMITS["sendgrid"]:
                return self.problem("sendgrid: 1 to 1000 personalizations")
            if not body.get("from", {}).get("email") or not body.get("subject"):
                return self.problem("sendgrid: from and subject are required")
            content = {part["type"]: part["value"] for part in body.get("content", [])}
            if set(content) != {"text/plain", "text/html"}:
                return self.problem("sendgrid: content must hold text/plain then text/html")
            state.requests.append(("sendgrid", len(personalizations)))
            for entry in personalizations:
                substitutions = entry.get("substitutions", {})
                if len(json.dumps(substitutions)) > 10_000:
                    return self.problem("sendgrid: substitutions over 10,000 bytes")
                html, text = content["text/html"], content["text/plain"]
                for tag, value in substitutions.items():
                    html, text = html.replace(tag, value), text.replace(tag, value)
                headers = {**body.get("headers", {}), **entry.get("headers", {})}
                state.delivered.append(Delivered(entry["to"][0]["email"].lower(), body["subject"], html, text, headers))
            self.reply(202, None, {"X-Message-Id": f"sg-{len(state.requests)}"})

        def mailgun(self, raw: bytes):
            expected = "Basic " + base64.b64encode(f"api:{MAILGUN_KEY}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self.reply(401, {"message": "Forbidden"})
            if self.fault():
                return
            fields = parse_qsl(raw.decode(), keep_blank_values=True)
            form: dict[str, list[str]] = {}
            for name, value in fields:
                form.setdefault(name, []).append(value)
            recipients = form.get("to", [])
            if not 0 < len(recipients) <= LIMITS["mailgun"]:
                return self.problem("mailgun: 1 to 1000 recipients")
            variables = json.loads(form.get("recipient-variables", ["{}"])[0])
            state.requests.append(("mailgun", len(recipients)))
            for recipient in recipients:
                address = re.search(r"<([^>]+)>|^(\S+@\S+)$", recipient)
                address = address.group(1) or address.group(2)
                values = variables.get(address)
                if values is None:
                    return self.problem("mailgun: a recipient without recipient-variables would see everyone")

                def fill(template: str, values: dict = values) -> str:
                    return re.sub(r"%recipient\.([\w]+)%", lambda m: str(values.get(m.group(1), "")), template)

                headers = {name[2:]: fill(value[0]) for name, value in form.items() if name.startswith("h:")}
                state.delivered.append(
                    Delivered(
                        address.lower(), form["subject"][0], fill(form["html"][0]), fill(form["text"][0]), headers
                    )
                )
            self.reply(200, {"id": f"<mg-{len(state.requests)}@{MAILGUN_DOMAIN}>", "message": "Queued. Thank you."})

    return Handler


class ProviderServer:
    def __init__(self):
        self.state = ProviderState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ProviderServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def env(self, provider: str) -> dict[str, str]:
        return {
            "postmark": {"NEWSLETTER_POSTMARK_TOKEN": POSTMARK_TOKEN, "NEWSLETTER_POSTMARK_API_URL": self.url},
            "sendgrid": {"NEWSLETTER_SENDGRID_API_KEY": SENDGRID_KEY, "NEWSLETTER_SENDGRID_API_URL": self.url},
            "mailgun": {
                "NEWSLETTER_MAILGUN_API_KEY": MAILGUN_KEY,
                "NEWSLETTER_MAILGUN_DOMAIN": MAILGUN_DOMAIN,
                "NEWSLETTER_MAILGUN_API_URL": self.url,
            },
        }[provider]
