"""One neutral message type for every adapter, and its standards-correct MIME form.

SMTP and the outbox send the MIME bytes; the HTTP APIs take the same fields as JSON.
Every header value has its whitespace (CR/LF included) collapsed and non-ASCII text
encoded as RFC 2047 words, so nothing a subscriber typed can become a header.
"""

from __future__ import annotations

import binascii
import dataclasses
import functools
import hashlib
import hmac
import re
import secrets
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path

from .addresses import wire_address
from .config import Settings
from .errors import ConfigError
from .render import Recipient, RenderedIssue, escape_attribute, escape_text, rewrap_long_lines
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
# Signed once more than they occur: a second From, Subject or List-Unsubscribe* prepended
# in transit (to show another sender or subject above the signed one) breaks the signature.
DKIM_OVERSIGNED = (b"From", b"Subject", b"List-Unsubscribe", b"List-Unsubscribe-Post")


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
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)
    dkim: tuple[bytes, bytes, bytes] | None = field(default=None, repr=False)  # selector, domain, key
    # MAIL FROM (Return-Path): the per-delivery VERP address when bounce_address is set.
    envelope_sender: str = ""
    # (boundary, MIME body, the body dot-stuffed for SMTP) from the issue's BodyTemplate:
    # the same bytes _serialise would write, the parts every reader shares encoded once.
    body: tuple[str, bytes, bytes] | None = field(default=None, repr=False, compare=False)
    _head: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _envelope: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)
    _light: bool = field(default=False, init=False, repr=False, compare=False)  # see for_wire

    @property
    def envelope_from(self) -> str:
        return self.envelope_sender or _address_in(self.from_address)

    @property
    def to_header(self) -> str:
        name = " ".join(self.to_name.split())
        if self.to_email.isascii():
            return formataddr((name, self.to_email), charset="utf-8")
        # RFC 6532 (SMTPUTF8): the address goes as UTF-8; the name is still an encoded word.
        shown = formataddr((name, "x@x"), charset="utf-8").rpartition(" <")[0] if name else ""
        return f"{shown} <{self.to_email}>" if shown else f"<{self.to_email}>"

    def as_wire(self) -> bytes:
        """The bytes as SMTP's DATA carries them: lines starting with "." doubled (RFC 5321
        4.5.2), then the final ".". Our messages start with a header and use CRLF
        throughout, so a plain replace is the whole of the transparency procedure."""
        if self._wire is None:
            data = self.as_bytes()  # sets _head: the header block (DKIM signature included)
            if self.body is not None:
                body = self.body[2]
            else:
                body = _dot_stuffed(data[len(self._head) :])
            self._wire = _dot_stuffed(self._head) + body + b".\r\n"
        return self._wire

    def smtp_envelope(self) -> tuple[str, str]:
        """MAIL FROM and RCPT TO's addresses as smtplib quotes them (parsed once: each
        parse costs more than the rest of the SMTP exchange's Python)."""
        if self._envelope is None:
            self._envelope = (quote_address(self.envelope_from), quote_address(self.to_email))
        return self._envelope

    def for_wire(self) -> Message:
        """This message as SMTP sends it, light enough to pass between processes: its SMTP
        form and envelope built, without what they were built from (the documents, the
        rendered issue, the body template's parts, the signing key). Its MIME bytes, if
        asked for, are the SMTP form undone."""
        wire, envelope = self.as_wire(), self.smtp_envelope()
        light = dataclasses.replace(
            self,
            html="",
            text="",
            rendered=None,
            slot_values=None,
            body=None,
            dkim=None,
            envelope_sender=self.envelope_from,
        )
        light._wire, light._envelope, light._light = wire, envelope, True
        return light

    def as_bytes(self) -> bytes:
        """The MIME bytes, built once (the campaign builds them ahead of the sending)."""
        if self._bytes is None:
            self._bytes = _dot_unstuffed(self._wire[:-3]) if self._light and self._wire else self._serialise()
        return self._bytes

    def _serialise(self) -> bytes:
        """RFC 5322 bytes with CRLF line ends: multipart/alternative, text then HTML.

        Written directly rather than through email.message.EmailMessage, which spends
        about 4 ms per message parsing its own headers; the tests parse every message
        we produce with the email package to hold this to the standard.
        """
        boundary, body = self.body[:2] if self.body else _mime_body(self.text, self.html)
        lines = [
            f"From: {_header_value(self.from_address, address=True)}",
            f"To: {self.to_header}",
        ]
        if self.reply_to:
            lines.append(f"Reply-To: {_header_value(self.reply_to, address=True)}")
        lines += [
            f"Subject: {_header_value(self.subject, text=True)}",
            f"Date: {_date()}",
        ]
        lines += [f"{name}: {_header_value(value)}" for name, value in self.headers.items()]
        lines += [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
            "",
            "",
        ]
        head = "\r\n".join(lines).encode("utf-8")  # UTF-8 only in an SMTPUTF8 address
        data = head + body
        if self.dkim:
            signature = dkim_signature(data, self.dkim)
            data, head = signature + data, signature + head
        self._head = head
        return data


def dkim_signature(data: bytes, dkim_key: tuple[bytes, bytes, bytes]) -> bytes:
    """The DKIM-Signature header for `data`, covering DKIM_HEADERS and oversigning DKIM_OVERSIGNED."""
    import dkim

    selector, domain, key = dkim_key
    # Each of DKIM_HEADERS once (an absent one is thereby signed as absent), then the
    # oversigned ones again: one more instance than any message of ours carries.
    headers = [*DKIM_HEADERS, *DKIM_OVERSIGNED]
    return dkim.sign(data, selector, domain, key, include_headers=headers)


def load_dkim(settings: Settings) -> tuple[bytes, bytes, bytes] | None:
    """(selector, domain, PEM key) when DKIM signing is configured."""
    if not (settings.dkim_selector and settings.dkim_private_key):
        return None
    path = Path(settings.dkim_private_key)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"setting 'dkim_private_key': cannot read {path}: {exc.strerror}") from None
    return settings.dkim_selector.encode(), settings.from_domain.encode(), key


FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters, MUST be at most 998 octets
LONGEST_WORD = 900  # an unbroken word this long still fits a 998-octet line after any header name


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
    if value.isascii() and all(len(word) <= LONGEST_WORD for word in value.split()):
        # Plain folding at ", ; " and spaces keeps the header as it is: List-Unsubscribe's
        # URLs (RFC 2369, RFC 8058) must never become encoded words; a word longer than 78
        # simply gets a line of its own (lines may reach 998 octets).
        return _fold_ascii(value)
    # A word too long for any line (or non-ASCII text): encoded words, split anywhere.
    return Header(value, "utf-8", maxlinelen=FOLD_AT).encode(linesep="\r\n")


@functools.lru_cache(maxsize=64)
def _address_in(header_value: str) -> str:
    """The address of a From value: one per campaign, parsed once, not per message."""
    return parseaddr(header_value)[1]


def _dot_stuffed(lines: bytes) -> bytes:
    """RFC 5321 4.5.2 for bytes that start at a line start: a line's leading "." doubled."""
    stuffed = lines.replace(b"\n.", b"\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def _dot_unstuffed(stuffed: bytes) -> bytes:
    """_dot_stuffed undone: every line start's "." was doubled, so one of each pair goes."""
    lines = stuffed.replace(b"\n..", b"\n.")
    return lines[1:] if lines.startswith(b"..") else lines


# A dot-atom address of the common letters: smtplib.quoteaddr would only put it in <>.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")


def quote_address(address: str) -> str:
    """smtplib.quoteaddr's answer, without its full parse for a plain address (the parse
    cost 20 us, two per message: a tenth of composing one)."""
    return f"<{address}>" if _PLAIN_ADDRESS.match(address) else smtplib.quoteaddr(address)


_NOT_A_BREAK = re.compile(r"[^;, \t]")


def _fold_ascii(value: str) -> str:
    """email.header's plain folding of an ASCII value, computed once per *shape*: where it
    folds depends only on where the value has its break characters (";, \t"), so the
    List-Unsubscribe of every reader (same links, different tokens) shares one fold. Any
    fold that is not a plain CRLF insertion is left to email.header itself."""
    shape = _NOT_A_BREAK.sub("a", value)
    lines = _fold_shape(shape).split("\r\n")
    if "".join(lines) != shape:
        return Header(value, "us-ascii", maxlinelen=FOLD_AT).encode(linesep="\r\n")
    folded, start = [], 0
    for line in lines:
        folded.append(value[start : start + len(line)])
        start += len(line)
    return "\r\n".join(folded)


@functools.lru_cache(maxsize=64)
def _fold_shape(shape: str) -> str:
    return Header(shape, "us-ascii", maxlinelen=FOLD_AT).encode(linesep="\r\n")


def _mime_body(text: str, html: str) -> tuple[str, bytes]:
    """(boundary, body): the text part, then the HTML part, both quoted-printable."""
    boundary = _boundary()
    head, middle, tail = _part_separators(boundary)
    return boundary, b"".join((head, _quoted_printable(text), middle, _quoted_printable(html), tail))


def _boundary() -> str:
    # "=_" never occurs in quoted-printable text ("=" is always "=3D" or a soft break).
    return f"=_nl{secrets.token_hex(12)}"


def _part_separators(boundary: str) -> tuple[bytes, bytes, bytes]:
    def part(kind: str) -> bytes:
        return (
            f'--{boundary}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()

    return part("plain"), b"\r\n" + part("html"), f"\r\n--{boundary}--\r\n".encode()


_last_date: tuple[int, str] = (-1, "")


def _date() -> str:
    """The Date header, formatted once per second rather than once per message."""
    global _last_date
    now = int(time.time())
    if _last_date[0] != now:
        _last_date = (now, formatdate(now, usegmt=True))
    return _last_date[1]


def _quoted_printable(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    # binascii's encoder is C; it keeps the CRLF line ends and soft-wraps at 76 columns.
    return binascii.b2a_qp(body, quotetabs=False, istext=True, header=False)


def _quoted_printable_lines(text: str, final: bool) -> bytes:
    """Quoted-printable for whole lines cut out of a document: exactly the bytes they get
    when the document is encoded in one piece. b2a_qp works line by line; only two things
    look past a line: it takes the line ending (and so the soft break) from the first line
    end it sees, and it treats the last line of its input as the end of the document.
    `final`: these are the last lines of a document that has line ends before them."""
    if final and "\n" not in text:  # a CRLF to find, as the whole document has one
        return _quoted_printable("\n" + text)[2:]
    return _quoted_printable(text)


class _Document:
    """One body part (text or HTML) of an issue, cut at line ends into runs of lines that
    are the same for every reader (kept encoded) and lines that hold a personal value."""

    def __init__(self, parts: list[str], markers: frozenset[str], escape: Callable[[str, str], str], rewrap: bool):
        self.escape = escape
        self.rewrap = rewrap
        lines: list[tuple[list[str], bool]] = []  # (parts of one line, holds a marker)
        current: list[str] = []
        personal = False
        for part in parts:
            if part in markers:
                current.append(part)
                personal = True
                continue
            *complete, rest = part.split("\n")
            for chunk in complete:
                current.append(chunk + "\n")
                lines.append((current, personal))
                current, personal = [], False
            if rest:
                current.append(rest)
        if current:
            lines.append((current, personal))
        # Runs of lines: fixed ones become (text, encoded); personal ones stay parts.
        self.pieces: list[tuple[str, tuple[bytes, bytes]] | tuple[list[str], bool]] = []
        index = 0
        while index < len(lines):
            kind = lines[index][1]
            run: list[str] = []
            while index < len(lines) and lines[index][1] == kind:
                run += lines[index][0]
                index += 1
            # The last run of a document it does not start (a document of one run is
            # encoded exactly as a whole document is).
            final = index == len(lines) and bool(self.pieces)
            if kind:
                self.pieces.append((run, final))
            else:
                text = "".join(run)
                if rewrap:
                    text = rewrap_long_lines(text)
                encoded = _quoted_printable_lines(text, final)
                self.pieces.append((text, (encoded, _dot_stuffed(encoded))))

    def fill(self, values: dict[str, str]) -> tuple[str, list[bytes], list[bytes]]:
        """This reader's document, its quoted-printable pieces and those dot-stuffed."""
        texts: list[str] = []
        encoded: list[bytes] = []
        stuffed: list[bytes] = []
        for piece, second in self.pieces:
            if isinstance(second, tuple):
                texts.append(piece)
                encoded.append(second[0])
                stuffed.append(second[1])
                continue
            text = "".join(self.escape(part, values[part]) if part in values else part for part in piece)
            if self.rewrap:
                text = rewrap_long_lines(text)
            texts.append(text)
            lines = _quoted_printable_lines(text, second)
            encoded.append(lines)
            stuffed.append(_dot_stuffed(lines))
        return "".join(texts), encoded, stuffed


class BodyTemplate:
    """An issue's MIME body with what every reader shares already encoded: per message only
    the few lines holding a personal value are filled and encoded. Byte for byte what
    `_mime_body(*rendered.fill(values))` produces (tests/test_message_bytes.py)."""

    def __init__(self, rendered: RenderedIssue):
        markers = frozenset(rendered.slots)
        attribute = rendered.attribute_slots

        def escape_html(marker: str, value: str) -> str:
            return escape_attribute(value) if marker in attribute else escape_text(value)

        self.html = _Document(rendered.html_parts, markers, escape_html, rewrap=False)
        self.text = _Document(rendered.text_parts, markers, lambda marker, value: value, rewrap=True)
        self.boundary = _boundary()
        self.separators = _part_separators(self.boundary)

    def fill(self, values: dict[str, str]) -> tuple[str, str, tuple[str, bytes, bytes]]:
        """(html, text, (boundary, body, body dot-stuffed)) for one reader's slot values."""
        html, html_encoded, html_stuffed = self.html.fill(values)
        text, text_encoded, text_stuffed = self.text.fill(values)
        head, middle, tail = self.separators  # no line of theirs starts with "."
        body = b"".join((head, *text_encoded, middle, *html_encoded, tail))
        stuffed = b"".join((head, *text_stuffed, middle, *html_stuffed, tail))
        return html, text, (self.boundary, body, stuffed)


class MessageBuilder:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.domain = settings.from_domain
        organization = settings.organization.replace('"', "'")
        self.list_id = settings.list_id or f'"{organization}" <newsletter.{self.domain}>'
        self.return_paths = ReturnPaths(settings)
        self.dkim = self._load_dkim()
        self._template: tuple[RenderedIssue, BodyTemplate] | None = None
        self._id_key = (settings.secret_key or "newsletter").encode()

    def template(self, rendered: RenderedIssue) -> BodyTemplate:
        """The body template of this issue, built on first use (a sender sends one issue)."""
        if self._template is None or self._template[0] is not rendered:
            self._template = (rendered, BodyTemplate(rendered))
        return self._template[1]

    def message_id(self, campaign_id: int | None, delivery_id: int | None) -> str:
        """The same Message-ID on every attempt, resume and worker for one delivery, so a
        receiver can recognise (and drop) a second copy; keyed, so it reveals no counts."""
        if campaign_id is None or delivery_id is None:
            return make_msgid(domain=self.domain)
        label = f"{campaign_id}.{delivery_id}"
        digest = hmac.new(self._id_key, label.encode(), hashlib.sha256).hexdigest()[:16]
        return f"<{label}.{digest}@{self.domain}>"

    def _load_dkim(self) -> tuple[bytes, bytes, bytes] | None:
        return load_dkim(self.settings)

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
        body: tuple[str, bytes, bytes] | None = None,
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
            body=body,
            envelope_sender=self.return_paths.envelope_sender(delivery_id),
        )


def transactional(settings: Settings, to_email: str, to_name: str, subject: str, text: str, html: str) -> Message:
    """A one-off message (signup confirmation): no list headers, it is not a newsletter;
    DKIM-signed like every message when a key is configured."""
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
        dkim=load_dkim(settings),
        envelope_sender=ReturnPaths(settings).envelope_sender(None),
    )
