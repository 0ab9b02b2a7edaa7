"""Address validation and the hostile-input rules for names, tags and attributes."""

from __future__ import annotations

import hashlib
import hmac
import re
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any

from .errors import DataError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_TAG = re.compile(r"^[\w][\w .:/+-]{0,99}$", re.UNICODE)
MAX_NAME = 200


def normalize_email(raw: str) -> tuple[str, str]:
    """Return (normalized address, case-insensitive key) or raise DataError saying why.

    An international domain is kept in its IDNA (punycode) form when the part before the
    @ is ASCII: that is what goes on the wire, and `user@bücher.example` and
    `user@xn--bcher-kva.example` are then the same subscriber. A non-ASCII part before the
    @ is accepted as it is: it is deliverable where the mail server offers SMTPUTF8.
    """
    candidate = (raw or "").strip()
    if not candidate:
        raise DataError("email address is empty")
    # Imported here: a bulk import asks email-validator only about the addresses its
    # strict pattern declines (importer.import_address), often none.
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise DataError(f"invalid email address: {exc}") from None
    address = result.ascii_email or result.normalized
    return address, address.lower()


def wire_address(address: str) -> str:
    """The address as sent: a Unicode domain becomes punycode when the local part is ASCII
    (addresses stored before normalisation did this themselves)."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if not local.isascii() or domain.isascii():
        return address  # a non-ASCII local part needs SMTPUTF8, which takes a Unicode domain as is
    import idna

    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address


def needs_smtputf8(address: str) -> bool:
    return not address.rpartition("@")[0].isascii()


def clean_text(value: str, limit: int = MAX_NAME) -> str:
    """Collapse control characters (CR/LF included) so a value can never split a header."""
    return _CONTROL.sub(" ", value or "").strip()[:limit]


def clean_tag(raw: str) -> str:
    tag = clean_text(raw, 100)
    if not _TAG.match(tag):
        raise DataError(f"invalid tag {tag!r}: use letters, digits, spaces and . : / + -")
    return tag


def clean_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attribute keys become template names, so they must be plain identifiers."""
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        name = clean_text(str(key), 64).strip().lower().replace(" ", "_").replace("-", "_")
        if not name.isidentifier():
            raise DataError(f"invalid attribute name {key!r}")
        cleaned[name] = clean_text(value, 1000) if isinstance(value, str) else value
    return cleaned


def suppression_hash(secret_key: str, email_key: str) -> str:
    """Keyed hash of an erased address: proves 'seen before' without keeping the address."""
    return hmac.new(secret_key.encode(), email_key.encode(), hashlib.sha256).hexdigest()


# An address (its local part maybe quoted), also with its @ URL-encoded (%40).
_ADDRESS = re.compile(r"<?(?:\"[^\"<>@]*\"|[^\s<>@%]+)(?:@|%40)[^\s<>@,;()\"]+\.[^\s<>@,;()\"]+>?", re.IGNORECASE)
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _decoded_word(found: re.Match) -> str:
    """One RFC 2047 encoded-word as text, so an address inside it can be seen and redacted."""
    try:
        return str(make_header(decode_header(found.group(0))))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):
        return "<encoded>"


def redact_addresses(reason: str, recipient: str | None = None) -> str:
    """Servers quote the recipient in their replies; keep addresses out of reports and logs
    (and let the same reason for different people group together in `campaigns show`).

    Covers plain, %40-encoded and RFC 2047-encoded addresses; given the recipient's own
    address, also their bare local part as Sendmail quotes it (`<ana.lopez>... User unknown`)."""
    text = _ENCODED_WORD.sub(_decoded_word, reason)
    text = _ADDRESS.sub("<recipient>", text)
    local = (recipient or "").rpartition("@")[0]
    if local:
        bare = re.compile(r"(?<![\w.+-])<?" + re.escape(local) + r">?(?![\w+-]|\.\w)", re.IGNORECASE)
        text = bare.sub("<recipient>", text)
    return text
