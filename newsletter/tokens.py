"""Sealed link tokens (unsubscribe, preferences, confirmation).

A token carries a random per-subscriber value (`subscribers.token`, never the row id) and
the campaign the link was sent in, sealed with AES-SIV (from `cryptography`) under a key
derived from `secret_key`, with the purpose as associated data:

- opaque: nothing readable, not even the campaign number;
- authenticated: a changed character, another key or another purpose fails;
- deterministic: one link per person and campaign, so resending does not multiply links;
- written in lower-case base32 (48 characters), so it survives mail systems that
  lower-case the local part of `unsubscribe+TOKEN@...` addresses.

Whom a token opens is decided by the database: the subscriber row holding that random
value. An erased person's row is gone, and the value is never handed out again, so their
old links open nobody. Confirmation tokens carry the random value of one signup instead
(single use: the signup row is deleted once confirmed).

Links in messages sent before migration 0006 are itsdangerous-signed `[row id, campaign]`
pairs; they still read, as `legacy_id` (the migration kept each row's id there, and new
rows never get one).

Public API (also for the bounce mailbox): `Tokens.make(purpose, subscriber.token,
campaign_id)` and `Tokens.read(purpose, token)`; `SubscriberList.by_link(session, data)`
turns the result into a subscriber.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from itsdangerous import BadSignature, URLSafeSerializer

from .errors import ConfigError, DataError

PURPOSES = ("unsubscribe", "preferences", "confirm")
KEY_BYTES = 10  # the random per-subscriber (or per-signup) value: 80 bits
NO_CAMPAIGN = 0


class InvalidToken(DataError):
    """A forged, tampered, truncated, wrong-purpose or unknown token."""


@dataclass(frozen=True)
class TokenData:
    """What a valid token says: whose random value, and which campaign's message."""

    key: str | None  # hex of the random value; None for a legacy (pre-0006) link or "nobody"
    campaign_id: int | None
    legacy_id: int | None = None


class Tokens:
    def __init__(self, secret_key: str):
        if not secret_key:
            raise ConfigError("setting 'secret_key' is required to sign links", hint="run: newsletter init")
        derived = hashlib.sha512(b"newsletter.tokens.v2\x00" + secret_key.encode()).digest()
        self._siv = AESSIV(derived)  # 512-bit key: AES-256-SIV
        self._legacy = {purpose: URLSafeSerializer(secret_key, salt=f"newsletter.{purpose}") for purpose in PURPOSES}

    def make(self, purpose: str, key: str, campaign_id: int | None = None) -> str:
        """The link token for a subscriber's (or a signup's) random value, hex as stored."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        try:
            raw = bytes.fromhex(key) if isinstance(key, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != KEY_BYTES:  # the sample reader of a preview, doctor's probe: "nobody"
            raw = bytes(KEY_BYTES)
        payload = raw + (campaign_id or NO_CAMPAIGN).to_bytes(4, "big")
        sealed = self._siv.encrypt(payload, [purpose.encode()])
        return base64.b32encode(sealed).decode().lower()

    def read(self, purpose: str, token: str) -> TokenData:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        if "." in token:
            return self._read_legacy(purpose, token)
        try:
            sealed = base64.b32decode(token.upper().encode("ascii"))
            payload = self._siv.decrypt(sealed, [purpose.encode()])
        except (InvalidTag, binascii.Error, ValueError, UnicodeError):
            raise InvalidToken("this link is not valid") from None
        if len(payload) != KEY_BYTES + 4:
            raise InvalidToken("this link is not valid")
        raw, campaign = payload[:KEY_BYTES], int.from_bytes(payload[KEY_BYTES:], "big")
        if raw == bytes(KEY_BYTES):
            return TokenData(None, campaign or None)  # "nobody": a sample preview's or doctor's probe link
        return TokenData(raw.hex(), campaign or None)

    def _read_legacy(self, purpose: str, token: str) -> TokenData:
        if purpose == "confirm":
            # Pre-0006 confirmation links could be replayed; they are refused (sign up again).
            raise InvalidToken("this link has expired")
        try:
            subscriber_id, campaign_id = self._legacy[purpose].loads(token)
            return TokenData(None, None if campaign_id is None else int(campaign_id), int(subscriber_id))
        except (BadSignature, ValueError, TypeError):
            raise InvalidToken("this link is not valid") from None

    def legacy(self, purpose: str, subscriber_id: int, campaign_id: int | None = None) -> str:
        """A link as messages sent before migration 0006 carried it (for tests of that path)."""
        return self._legacy[purpose].dumps([subscriber_id, campaign_id])
