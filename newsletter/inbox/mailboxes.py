"""Mailbox readers for `inbox_url`: IMAP, POP3, a local Maildir or mbox file.

Each reader yields (handle, raw bytes) and is told `done(handle)` once a message is
processed: IMAP moves it to `inbox_folder` (MOVE, or COPY + \\Deleted where MOVE is
missing), Maildir marks it seen (cur/, flag S). POP3 and mbox have no way to mark a
message that survives other clients, so they are left as they are: the ledger of
processed messages in the database is what keeps them from being applied twice (it does
so for every reader; the move or mark only keeps the next run short).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, DeliveryError

SCHEMES = ("imap", "imaps", "pop3", "pop3s", "maildir", "mbox")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class InboxError(DeliveryError):
    """The mailbox cannot be reached or read."""


class Mailbox:
    where = "mailbox"

    def __enter__(self) -> Mailbox:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def messages(self) -> Iterator[tuple[Any, bytes]]:
        raise NotImplementedError

    def done(self, handle: Any) -> None:
        pass


def open_mailbox(url: str, folder: str = "Processed", timeout: float = 30.0) -> Mailbox:
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme in ("imap", "imaps"):
        return IMAPMailbox(url, folder, timeout)
    if scheme in ("pop3", "pop3s"):
        return POP3Mailbox(url, timeout)
    if scheme == "maildir":
        return MaildirMailbox(Path(rest.removeprefix("//")))
    if scheme == "mbox":
        return MboxMailbox(Path(rest.removeprefix("//")))
    raise ConfigError(
        f"setting 'inbox_url' must start with one of {', '.join(s + ':' for s in SCHEMES)}",
        hint="e.g. imaps://bounces%40clinic.example:PASSWORD@imap.example.org/INBOX",
    )


class _Network(Mailbox):
    default_ports: dict[str, int] = {}

    def __init__(self, url: str, timeout: float):
        try:  # urllib says "Invalid IPv6 URL" or "Port out of range" with a ValueError
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(
                f"setting 'inbox_url' is not a valid URL: {exc}",
                hint="e.g. imaps://bounces%40clinic.example:PASSWORD@imap.example.org/INBOX or imap://[::1]:143",
            ) from None
        self.secure = parts.scheme.lower().endswith("s")
        self.host = parts.hostname or "localhost"
        self.port = port or self.default_ports[parts.scheme.lower()]
        self.username = unquote(parts.username or "")
        self.password = unquote(parts.password or "")
        self.path = unquote(parts.path.lstrip("/"))
        self.timeout = timeout
        self.where = f"{parts.scheme.lower()}://{self.host}:{self.port}"

    def _check_plaintext(self, offers_tls: bool) -> None:
        if not (self.secure or offers_tls) and self.host not in LOCAL_HOSTS:
            raise InboxError(f"{self.where}: the server offers no TLS; refusing to send the password in clear")


class IMAPMailbox(_Network):
    default_ports = {"imap": 143, "imaps": 993}

    def __init__(self, url: str, folder: str, timeout: float):
        super().__init__(url, timeout)
        self.source = self.path or "INBOX"
        self.folder = folder
        self.client: imaplib.IMAP4 | None = None
        self._moved = False
        self._can_move = False

    def open(self) -> None:
        context = ssl.create_default_context()
        try:
            if self.secure:
                client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=self.timeout
                )
            else:
                client = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
                if "STARTTLS" in client.capabilities:
                    client.starttls(context)
            self._check_plaintext("STARTTLS" in client.capabilities)
            client.login(self.username, self.password)
            self._can_move = "MOVE" in client.capabilities
            status, _ = client.select(_quote(self.source))
            if status != "OK":
                raise InboxError(f"{self.where}: no folder {self.source!r}")
            status, _ = client.create(_quote(self.folder))  # fails harmlessly when it exists
        except imaplib.IMAP4.error as exc:
            raise InboxError(f"{self.where}: {_first(exc)}", hint="check the user and password in inbox_url") from None
        except (OSError, ssl.SSLError) as exc:
            raise InboxError(f"{self.where}: cannot connect ({type(exc).__name__}: {exc})") from None
        self.client = client

    def close(self) -> None:
        if self.client is None:
            return
        try:
            if self._moved and not self._can_move:
                self.client.expunge()
            self.client.close()
            self.client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
        self.client = None

    def messages(self) -> Iterator[tuple[Any, bytes]]:
        assert self.client is not None
        status, data = self.client.uid("SEARCH", None, "UNDELETED")
        if status != "OK":
            raise InboxError(f"{self.where}: search failed")
        for uid in (data[0] or b"").split():
            status, fetched = self.client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            if status == "OK" and raw is not None:
                yield uid, raw

    def done(self, handle: Any) -> None:
        assert self.client is not None
        if self._can_move:
            status, data = self.client.uid("MOVE", handle, _quote(self.folder))
        else:
            status, data = self.client.uid("COPY", handle, _quote(self.folder))
            if status == "OK":
                status, data = self.client.uid("STORE", handle, "+FLAGS", "(\\Deleted)")
        if status != "OK":
            raise InboxError(f"{self.where}: cannot move a message to {self.folder!r}: {_first(data)}")
        self._moved = True


class POP3Mailbox(_Network):
    default_ports = {"pop3": 110, "pop3s": 995}

    def __init__(self, url: str, timeout: float):
        super().__init__(url, timeout)
        self.client: poplib.POP3 | None = None

    def open(self) -> None:
        context = ssl.create_default_context()
        try:
            if self.secure:
                client: poplib.POP3 = poplib.POP3_SSL(self.host, self.port, timeout=self.timeout, context=context)
                offers_tls = True
            else:
                client = poplib.POP3(self.host, self.port, timeout=self.timeout)
                try:
                    offers_tls = "STLS" in client.capa()
                except poplib.error_proto:
                    offers_tls = False
                if offers_tls:
                    client.stls(context)
            self._check_plaintext(offers_tls)
            client.user(self.username)
            client.pass_(self.password)
        except poplib.error_proto as exc:
            raise InboxError(f"{self.where}: {_first(exc)}", hint="check the user and password in inbox_url") from None
        except (OSError, ssl.SSLError) as exc:
            raise InboxError(f"{self.where}: cannot connect ({type(exc).__name__}: {exc})") from None
        self.client = client

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.quit()
            except (poplib.error_proto, OSError):
                pass
            self.client = None

    def messages(self) -> Iterator[tuple[Any, bytes]]:
        assert self.client is not None
        _, listing, _ = self.client.list()
        for line in listing:
            number = int(line.split()[0])
            _, lines, _ = self.client.retr(number)
            yield number, b"\r\n".join(lines) + b"\r\n"


class MaildirMailbox(Mailbox):
    """A local Maildir: new/ and cur/ messages not yet flagged seen; done moves them to cur/ with S."""

    def __init__(self, path: Path):
        self.path = path
        self.where = f"maildir:{path}"

    def open(self) -> None:
        if not (self.path / "new").is_dir() or not (self.path / "cur").is_dir():
            raise InboxError(f"{self.where}: not a Maildir (no new/ and cur/ folders)")

    def messages(self) -> Iterator[tuple[Any, bytes]]:
        for sub in ("new", "cur"):
            for entry in sorted((self.path / sub).iterdir()):
                if entry.name.startswith(".") or "S" in _maildir_flags(entry.name):
                    continue
                yield entry, entry.read_bytes()

    def done(self, handle: Any) -> None:
        entry: Path = handle
        base, _, _ = entry.name.partition(":2,")
        flags = "".join(sorted(set(_maildir_flags(entry.name)) | {"S"}))
        os.replace(entry, self.path / "cur" / f"{base}:2,{flags}")


def _maildir_flags(name: str) -> str:
    return name.partition(":2,")[2]


class MboxMailbox(Mailbox):
    """A local mbox file, read as it is (the ledger skips what was already applied)."""

    def __init__(self, path: Path):
        self.path = path
        self.where = f"mbox:{path}"

    def messages(self) -> Iterator[tuple[Any, bytes]]:
        import mailbox

        if not self.path.is_file():
            raise InboxError(f"{self.where}: no such file")
        box = mailbox.mbox(self.path, create=False)
        try:
            for key in box.iterkeys():
                yield key, box.get_bytes(key)
        finally:
            box.close()


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _first(value: object) -> str:
    """A server's answer as one line of text (imaplib and poplib errors carry bytes)."""
    if isinstance(value, BaseException) and value.args:
        value = value.args[0]
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return re.sub(r"\s+", " ", text).strip()[:200]
