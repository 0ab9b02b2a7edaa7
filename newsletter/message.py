"""One neutral message type for every adapter, and its standards-correct MIME form.

SMTP and the outbox send the MIME bytes; the HTTP APIs take the same fields as JSON.
Every header value has its whitespace (CR/LF included) collapsed and non-ASCII text
encoded as RFC 2047 words, so nothing a subscriber typed can become a header.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path

from .addresses import wire_address
from .config import Settings
from .errors import ConfigError
from .render import Recipient, RenderedIssue
from .verp import ReturnPaths

ONE_CLICK = "List-Unsubscribe=One-Click"
DKIM_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"Reply-To",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"MIME-Version",
    b"Content-Type",
)


@dataclass
class Message:
    to_email: str
    to_name: str
    from_address: str
    reply_to: str
    subject: str
    html: str
    text: str
    message_id: str
    headers: dict[str, str]  # List-*, Message-ID and our own; used by every adapter
    delivery_id: int | None = None
    subscriber_id: int | None = None
    # The issue rendered once and this reader's slot values: batch APIs that substitute
    # per recipient (SendGrid, Mailgun) send the shared body once plus these values.
    rendered: RenderedIssue | None = field(default=None, repr=False)
    slot_values: dict[str, str] | None = field(default=None, repr=False)
    _bytes: bytes | None = field(default=None, init=False, repr=False, compare=False)
    dkim: tuple[bytes, bytes, bytes] | None = field(default=None, repr=False)  # selector, domain, key
    # MAIL FROM (Return-Path): the per-delivery VERP address when bounce_address is set.
    envelope_sender: str = ""

    @property
    def envelope_from(self) -> str:
        return self.envelope_sender or parseaddr(self.from_address)[1]

    @property
    def to_header(self) -> str:
        name = " ".join(self.to_name.split())
        if self.to_email.isascii():
            return formataddr((name, self.to_email), charset="utf-8")
        # RFC 6532 (SMTPUTF8): the address goes as UTF-8; the name is still an encoded word.
        shown = formataddr((name, "x@x"), charset="utf-8").rpartition(" <")[0] if name else ""
        return f"{shown} <{self.to_email}>" if shown else f"<{self.to_email}>"

    def as_bytes(self) -> bytes:
        """The MIME bytes, built once (the campaign builds them ahead, on a helper thread)."""
        if self._bytes is None:
            self._bytes = self._serialise()
        return self._bytes

    def _serialise(self) -> bytes:
        """RFC 5322 bytes with CRLF line ends: multipart/alternative, text then HTML.

        Written directly rather than through email.message.EmailMessage, which spends
        about 4 ms per message parsing its own headers; the tests parse every message
        we produce with the email package to hold this to the standard.
        """
        boundary = f"=_nl{secrets.token_hex(12)}"
        lines = [
            f"From: {_header_value(self.from_address, address=True)}",
            f"To: {self.to_header}",
        ]
        if self.reply_to:
            lines.append(f"Reply-To: {_header_value(self.reply_to, address=True)}")
        lines += [
            f"Subject: {_header_value(self.subject, text=True)}",
            f"Date: {formatdate(usegmt=True)}",
        ]
        lines += [f"{name}: {_header_value(value)}" for name, value in self.headers.items()]
        lines += [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
            "",
            f"--{boundary}",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
        ]
        head = "\r\n".join(lines).encode("utf-8") + b"\r\n"  # UTF-8 only in an SMTPUTF8 address
        data = b"".join(
            (
                head,
                _quoted_printable(self.text),
                f"\r\n--{boundary}\r\n".encode(),
                b'Content-Type: text/html; charset="utf-8"\r\n',
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                _quoted_printable(self.html),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        if self.dkim:
            import dkim

            selector, domain, key = self.dkim
            signature = dkim.sign(data, selector, domain, key, include_headers=list(DKIM_HEADERS))
            data = signature + data
        return data


FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters, MUST be at most 998 octets


def _header_value(value: str, address: bool = False, text: bool = False) -> str:
    """ASCII header text; CR/LF can never pass, non-ASCII becomes RFC 2047 encoded words.
    Free text (`text`: the subject) is also folded when long; structured values (URLs,
    ids) are never encoded and stay on their line (they are far below 998 octets)."""
    value = " ".join(value.split())
    if value.isascii() and (len(value) <= FOLD_AT or not text):
        return value
    return _folded(value, address)


@functools.lru_cache(maxsize=256)
def _folded(value: str, address: bool) -> str:
    if address:
        name, addr = parseaddr(value)
        return formataddr((name, addr), charset="utf-8")
    if value.isascii() and all(len(word) < FOLD_AT - 10 for word in value.split()):
        # Plain folding at spaces keeps the header readable as it is.
        return Header(value, "us-ascii", maxlinelen=FOLD_AT).encode(linesep="\r\n")
    # A word too long to fold (or non-ASCII text): encoded words, which may be split anywhere.
    return Header(value, "utf-8", maxlinelen=FOLD_AT).encode(linesep="\r\n")


def _quoted_printable(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    # binascii's encoder is C; it keeps the CRLF line ends and soft-wraps at 76 columns.
    return binascii.b2a_qp(body, quotetabs=False, istext=True, header=False)


class MessageBuilder:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.domain = settings.from_domain
        organization = settings.organization.replace('"', "'")
        self.list_id = settings.list_id or f'"{organization}" <newsletter.{self.domain}>'
        self.return_paths = ReturnPaths(settings)
        self.dkim = self._load_dkim()
        self._id_key = (settings.secret_key or "newsletter").encode()

    def message_id(self, campaign_id: int | None, delivery_id: int | None) -> str:
        """The same Message-ID on every attempt, resume and worker for one delivery, so a
        receiver can recognise (and drop) a second copy; keyed, so it reveals no counts."""
        if campaign_id is None or delivery_id is None:
            return make_msgid(domain=self.domain)
        label = f"{campaign_id}.{delivery_id}"
        digest = hmac.new(self._id_key, label.encode(), hashlib.sha256).hexdigest()[:16]
        return f"<{label}.{digest}@{self.domain}>"

    def _load_dkim(self) -> tuple[bytes, bytes, bytes] | None:
        if not (self.settings.dkim_selector and self.settings.dkim_private_key):
            return None
        path = Path(self.settings.dkim_private_key)
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"setting 'dkim_private_key': cannot read {path}: {exc.strerror}") from None
        return self.settings.dkim_selector.encode(), self.domain.encode(), key

    def build(
        self,
        rendered: RenderedIssue,
        recipient: Recipient,
        html: str,
        text: str,
        fields: dict[str, str],
        campaign_id: int | None = None,
        delivery_id: int | None = None,
        slot_values: dict[str, str] | None = None,
    ) -> Message:
        unsubscribe_url = fields["unsubscribe_url"]
        token = unsubscribe_url.rsplit("/", 1)[-1]
        message_id = self.message_id(campaign_id, delivery_id)
        headers = {
            "Message-ID": message_id,
            "List-Id": self.list_id,
            "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:{self.return_paths.unsubscribe_address(token)}"
            "?subject=unsubscribe>",
            "List-Unsubscribe-Post": ONE_CLICK,
        }
        if campaign_id is not None:
            headers["X-Newsletter-Campaign"] = str(campaign_id)
        return Message(
            to_email=wire_address(recipient.email),
            to_name=recipient.name,
            from_address=self.settings.from_address,
            reply_to=self.settings.reply_to,
            subject=rendered.subject,
            html=html,
            text=text,
            message_id=message_id,
            headers=headers,
            delivery_id=delivery_id,
            subscriber_id=recipient.id,
            dkim=self.dkim,
            rendered=rendered if slot_values is not None else None,
            slot_values=slot_values,
            envelope_sender=self.return_paths.envelope_sender(delivery_id),
        )


def transactional(settings: Settings, to_email: str, to_name: str, subject: str, text: str, html: str) -> Message:
    """A one-off message (signup confirmation): no list headers, it is not a newsletter."""
    message_id = make_msgid(domain=settings.from_domain)
    return Message(
        to_email=to_email,
        to_name=to_name,
        from_address=settings.from_address,
        reply_to=settings.reply_to,
        subject=subject,
        html=html,
        text=text,
        message_id=message_id,
        headers={"Message-ID": message_id, "Auto-Submitted": "auto-generated"},
        envelope_sender=ReturnPaths(settings).envelope_sender(None),
    )
