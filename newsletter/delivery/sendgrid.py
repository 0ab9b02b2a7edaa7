"""SendGrid v3: POST /v3/mail/send with up to 1,000 personalizations per request.

The issue body is sent once per request with a substitution tag per personal slot; each
personalization carries that reader's values and their own List-Unsubscribe headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby

from ..errors import ConfigError, DeliveryError
from ..message import Message
from .base import Result, accepted
from .http import HTTPAdapter, address, slot_tags

PER_RECIPIENT_HEADERS = ("List-Unsubscribe",)


class SendGridAdapter(HTTPAdapter):
    name = "sendgrid"
    max_batch = 1000

    def __init__(self, api_key: str, api_url: str, timeout: float):
        if not api_key:
            raise ConfigError("setting 'sendgrid_api_key' is required for the sendgrid adapter")
        super().__init__(api_url, timeout)
        self.session.headers.update({"Authorization": f"Bearer {api_key}"})

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        # Messages rendered from the same issue share one request; a message without a
        # shared rendering (a proof copy, a confirmation) goes on its own.
        for _, group in groupby(messages, key=lambda m: id(m.rendered) if m.rendered else id(m)):
            yield from self._send_group(list(group))

    def request_body(self, messages: list[Message]) -> dict:
        first = messages[0]
        personalizations = []
        if first.rendered is not None:
            html, text, _ = slot_tags(first, "-{}-")
        else:
            html, text = first.html, first.text
        for message in messages:
            entry: dict = {
                "to": [address(message.to_header)],
                "headers": {name: message.headers[name] for name in PER_RECIPIENT_HEADERS},
                "custom_args": {"delivery_id": str(message.delivery_id or "")},
            }
            if message.rendered is not None:
                _, _, values = slot_tags(message, "-{}-")
                entry["substitutions"] = {f"-{name}-": value for name, value in values.items()}
            personalizations.append(entry)
        shared_headers = {
            name: value
            for name, value in first.headers.items()
            if name not in PER_RECIPIENT_HEADERS and name != "Message-ID"
        }
        body = {
            "personalizations": personalizations,
            "from": address(first.from_address),
            "subject": first.subject,
            "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": html}],
            "headers": shared_headers,
            "tracking_settings": {"click_tracking": {"enable": False}, "open_tracking": {"enable": False}},
        }
        if first.reply_to:
            body["reply_to"] = address(first.reply_to)
        return body

    def _send_group(self, messages: list[Message]) -> Iterator[Result]:
        response = self.post("/v3/mail/send", messages, json=self.request_body(messages))
        if isinstance(response, list):
            yield from response
            return
        if response.status_code != 202:
            raise DeliveryError(f"sendgrid: HTTP {response.status_code}: {response.text[:300]}")
        provider_id = response.headers.get("X-Message-Id", "")
        for message in messages:
            yield accepted(message, provider_id=provider_id)
