"""Signed tokens for the links in every message (unsubscribe, preferences, confirmation).

HMAC-SHA1 signatures from itsdangerous (the library Flask uses for its sessions), keyed
with `secret_key` and salted per purpose, so a preferences token cannot be replayed as an
unsubscribe token. Unsubscribe links never expire (CAN-SPAM wants them working for at
least 30 days; mail is read years later); confirmation links expire after a week.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

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

    def make(self, purpose: str, subscriber_id: int, campaign_id: int | None = None) -> str:
        if purpose == "confirm":
            return self._timed.dumps([subscriber_id])
        return self._plain[purpose].dumps([subscriber_id, campaign_id])

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
