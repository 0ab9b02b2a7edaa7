"""VERP: per-delivery envelope senders and per-subscriber unsubscribe addresses.

`bounce_address = "bounces@news.clinic.example"` makes every delivery's envelope sender
`bounces+<token>@news.clinic.example`, so the delivery status notification a relay mails
back names the delivery even when it quotes nothing useful. The token is the delivery id
encrypted with AES under a key derived from `secret_key` (one 16-byte block: the id and
eight zero bytes), written in lower-case base32: opaque to readers, unforgeable (a guess
passes the zero check once in 2**64) and safe from MTAs that lower-case local parts.

The mailto List-Unsubscribe address is `unsubscribe+<token>@...` with the same token the
HTTPS unsubscribe link carries (built and read only through `Tokens`), so an empty mail
to it is enough to unsubscribe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from email.utils import parseaddr

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .config import Settings

_ZERO = bytes(8)


@dataclass(frozen=True)
class Tagged:
    """What an address we handed out stands for."""

    kind: str  # "bounce" (value: delivery id) or "unsubscribe" (value: the unsubscribe token)
    value: int | str


def _split(address: str) -> tuple[str, str]:
    local, _, domain = parseaddr(address)[1].rpartition("@")
    return local, domain


class ReturnPaths:
    """Builds and reads the tagged addresses; `enabled` is False without `bounce_address`."""

    def __init__(self, settings: Settings):
        key = hashlib.sha256(b"newsletter.verp\0" + settings.secret_key.encode()).digest()[:16]
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())
        self.bounce_local, self.bounce_domain = _split(settings.bounce_address)
        self.unsubscribe_local, self.unsubscribe_domain = _split(settings.unsubscribe_mailbox)

    @property
    def enabled(self) -> bool:
        return bool(self.bounce_local and self.bounce_domain)

    # -- bounces ------------------------------------------------------------------------
    def delivery_token(self, delivery_id: int) -> str:
        encryptor = self._cipher.encryptor()
        block = encryptor.update(delivery_id.to_bytes(8, "big") + _ZERO) + encryptor.finalize()
        return base64.b32encode(block).decode().rstrip("=").lower()

    def read_delivery_token(self, token: str) -> int | None:
        try:
            block = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        if len(block) != 16:
            return None
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(block) + decryptor.finalize()
        return int.from_bytes(plain[:8], "big") if plain[8:] == _ZERO else None

    def envelope_sender(self, delivery_id: int | None) -> str:
        """The MAIL FROM for one delivery; '' when VERP is off (the From address is used)."""
        if not self.enabled:
            return ""
        if delivery_id is None:  # proofs, confirmations: the plain bounce mailbox
            return f"{self.bounce_local}@{self.bounce_domain}"
        return f"{self.bounce_local}+{self.delivery_token(delivery_id)}@{self.bounce_domain}"

    # -- unsubscribe --------------------------------------------------------------------
    def unsubscribe_address(self, unsubscribe_token: str) -> str:
        return f"{self.unsubscribe_local}+{unsubscribe_token}@{self.unsubscribe_domain}"

    # -- reading ------------------------------------------------------------------------
    def read(self, address: str) -> Tagged | None:
        """What an address found in a header or an envelope stands for, if it is one of ours."""
        local, domain = _split(address)
        base, plus, tag = local.partition("+")
        if not plus or not tag:
            return None
        domain, base = domain.lower(), base.lower()
        if base == self.bounce_local.lower() and domain == self.bounce_domain.lower():
            delivery_id = self.read_delivery_token(tag)
            return Tagged("bounce", delivery_id) if delivery_id is not None else None
        if base == self.unsubscribe_local.lower() and domain == self.unsubscribe_domain.lower():
            return Tagged("unsubscribe", tag)
        return None

    def is_unsubscribe_mailbox(self, address: str) -> bool:
        local, domain = _split(address)
        return (
            local.partition("+")[0].lower() == self.unsubscribe_local.lower()
            and domain.lower() == self.unsubscribe_domain.lower()
        )
