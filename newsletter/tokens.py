"""Signed tokens for the links in every message (unsubscribe, preferences, confirmation).

HMAC-SHA1 signatures from itsdangerous (the library Flask uses for its sessions), keyed
with `secret_key` and salted per purpose, so a preferences token cannot be replayed as an
unsubscribe token. Unsubscribe links never expire (CAN-SPAM wants them working for at
least 30 days; mail is read years later); confirmation links expire after a week.
"""

from __future__ import annotations

import hmac
import zlib
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from .errors import ConfigError, DataError

CONFIRM_MAX_AGE = 7 * 24 * 3600
PURPOSES = ("unsubscribe", "preferences", "confirm")


class InvalidToken(DataError):
    """A forged, tampered, truncated or expired token."""


@dataclass(frozen=True)
class TokenData:
    subscriber_id: int
    campaign_id: int | None


class Tokens:
    def __init__(self, secret_key: str):
        if not secret_key:
            raise ConfigError("setting 'secret_key' is required to sign links", hint="run: newsletter init")
        self._plain = {purpose: URLSafeSerializer(secret_key, salt=f"newsletter.{purpose}") for purpose in PURPOSES}
        self._timed = URLSafeTimedSerializer(secret_key, salt="newsletter.confirm.timed")
        # Every campaign message carries two of these: sign with the derived key's HMAC
        # prepared once instead of rebuilding the signer per token (tests check that the
        # tokens equal itsdangerous's own).
        self._macs = {}
        for purpose, serializer in self._plain.items():
            signer = serializer.make_signer()
            self._macs[purpose] = (hmac.new(signer.derive_key(), digestmod=signer.digest_method), signer.sep)

    def make(self, purpose: str, subscriber_id: int, campaign_id: int | None = None) -> str:
        if purpose == "confirm":
            return self._timed.dumps([subscriber_id])
        return self.sign(purpose, self.payload(subscriber_id, campaign_id))

    @staticmethod
    def payload(subscriber_id: int, campaign_id: int | None) -> bytes:
        """What URLSafeSerializer.dump_payload makes of [subscriber_id, campaign_id]:
        compact JSON, zlib-compressed only if that is shorter, then URL-safe base64."""
        data = f"[{int(subscriber_id)},{'null' if campaign_id is None else int(campaign_id)}]".encode()
        if len(data) > 9:  # zlib's output is at least 8 bytes: shorter JSON never compresses
            compressed = zlib.compress(data)
            if len(compressed) < len(data) - 1:
                return b"." + base64_encode(compressed)
        return base64_encode(data)

    def sign(self, purpose: str, payload: bytes) -> str:
        mac, sep = self._macs[purpose]
        mac = mac.copy()
        mac.update(payload)
        return (payload + sep + base64_encode(mac.digest())).decode("ascii")

    def read(self, purpose: str, token: str) -> TokenData:
        try:
            if purpose == "confirm":
                payload = self._timed.loads(token, max_age=CONFIRM_MAX_AGE)
                return TokenData(int(payload[0]), None)
            payload = self._plain[purpose].loads(token)
            subscriber_id, campaign_id = payload
            return TokenData(int(subscriber_id), None if campaign_id is None else int(campaign_id))
        except SignatureExpired:
            raise InvalidToken("this link has expired") from None
        except (BadSignature, ValueError, TypeError, IndexError):
            raise InvalidToken("this link is not valid") from None
