"""Postmark: POST /email/batch, up to 500 messages, each answered with its own ErrorCode."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import ConfigError, DeliveryError
from ..message import Message
from .base import Result, accepted, permanent
from .http import HTTPAdapter

# ErrorCodes that mean the address itself is bad: 300 invalid address, 406 inactive
# recipient (Postmark suppressed it after a hard bounce or complaint).
BOUNCE_CODES = {300, 406}


class PostmarkAdapter(HTTPAdapter):
    name = "postmark"
    max_batch = 500

    def __init__(self, token: str, api_url: str, message_stream: str, timeout: float):
        if not token:
            raise ConfigError("setting 'postmark_token' is required for the postmark adapter")
        super().__init__(api_url, timeout)
        self.message_stream = message_stream
        self.session.headers.update(
            {
                "X-Postmark-Server-Token": token,
                "Accept": "application/json",
            }
        )

    def payload(self, message: Message) -> dict:
        headers = [
            {"Name": name, "Value": value}
            for name, value in message.headers.items()
            if name != "Message-ID"  # Postmark assigns its own
        ]
        body = {
            "From": message.from_address,
            "To": message.to_header,
            "Subject": message.subject,
            "HtmlBody": message.html,
            "TextBody": message.text,
            "Headers": headers,
            "MessageStream": self.message_stream,
            "TrackOpens": False,
            "TrackLinks": "None",
        }
        if message.reply_to:
            body["ReplyTo"] = message.reply_to
        return body

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        response = self.post("/email/batch", messages, json=[self.payload(m) for m in messages])
        if isinstance(response, list):
            yield from response
            return
        if response.status_code != 200:
            detail = _json(response).get("Message", response.text[:200])
            raise DeliveryError(f"postmark: HTTP {response.status_code}: {detail}")
        answers = response.json()
        if not isinstance(answers, list) or len(answers) != len(messages):
            raise DeliveryError("postmark: the batch answer does not match the request")
        for message, answer in zip(messages, answers, strict=True):
            code = answer.get("ErrorCode", -1)
            if code == 0:
                yield accepted(message, provider_id=str(answer.get("MessageID", "")))
            else:
                reason = f"postmark {code}: {answer.get('Message', '')}"
                yield permanent(message, reason, bounce=code in BOUNCE_CODES)


def _json(response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
