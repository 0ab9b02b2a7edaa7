"""Mailgun: POST /v3/DOMAIN/messages, batch sending with recipient-variables (1,000 per call)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import groupby

from ..errors import ConfigError, DeliveryError
from ..message import Message
from .base import Result, accepted
from .http import HTTPAdapter, slot_tags


class MailgunAdapter(HTTPAdapter):
    name = "mailgun"
    max_batch = 1000

    def __init__(self, api_key: str, domain: str, api_url: str, timeout: float):
        if not api_key or not domain:
            raise ConfigError("settings 'mailgun_api_key' and 'mailgun_domain' are required for mailgun")
        super().__init__(api_url, timeout)
        self.domain = domain
        self.session.auth = ("api", api_key)

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        for _, group in groupby(messages, key=lambda m: id(m.rendered) if m.rendered else id(m)):
            yield from self._send_group(list(group))

    def form(self, messages: list[Message]) -> list[tuple[str, str]]:
        first = messages[0]
        variables: dict[str, dict[str, str]] = {}
        for message in messages:
            values = slot_tags(message, "%recipient.{}%")[2] if message.rendered else {}
            values["list_unsubscribe"] = message.headers["List-Unsubscribe"]
            values["delivery_id"] = str(message.delivery_id or "")
            variables[message.to_email] = values
        if first.rendered is not None:
            html, text, _ = slot_tags(first, "%recipient.{}%")
        else:
            html, text = first.html, first.text
        fields = [("from", first.from_address), ("subject", first.subject), ("text", text), ("html", html)]
        fields += [("to", message.to_header) for message in messages]
        fields += [
            ("recipient-variables", json.dumps(variables, ensure_ascii=False)),
            ("h:List-Unsubscribe", "%recipient.list_unsubscribe%"),
            ("v:delivery_id", "%recipient.delivery_id%"),
            ("o:tracking", "no"),
        ]
        fields += [
            (f"h:{name}", value)
            for name, value in first.headers.items()
            if name not in ("List-Unsubscribe", "Message-ID")
        ]
        if first.reply_to:
            fields.append(("h:Reply-To", first.reply_to))
        return fields

    def _send_group(self, messages: list[Message]) -> Iterator[Result]:
        response = self.post(f"/v3/{self.domain}/messages", messages, data=self.form(messages))
        if isinstance(response, list):
            yield from response
            return
        if response.status_code != 200:
            raise DeliveryError(f"mailgun: HTTP {response.status_code}: {response.text[:300]}")
        provider_id = str(response.json().get("id", ""))
        for message in messages:
            yield accepted(message, provider_id=provider_id)
