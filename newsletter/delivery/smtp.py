"""SMTP through smtplib: SSL or STARTTLS, AUTH, connections kept open and reused.

One connection carries every message of a campaign; a dropped connection or a 421 closes
it and the next message opens a new one. With smtp_pool > 1, that many connections send
in parallel threads.
"""

from __future__ import annotations

import queue
import smtplib
import ssl
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, DeliveryError
from ..message import Message
from .base import Adapter, Result, accepted, classify_smtp_reply, transient

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class _Connection:
    """One SMTP session, opened lazily and reopened after a disconnect."""

    def __init__(self, adapter: SMTPAdapter):
        self.adapter = adapter
        self.client: smtplib.SMTP | None = None

    def ensure(self) -> smtplib.SMTP:
        if self.client is None:
            self.client = self.adapter.connect()
        return self.client

    def drop(self) -> None:
        if self.client is not None:
            try:
                self.client.quit()
            except (smtplib.SMTPException, OSError):
                try:
                    self.client.close()
                except OSError:
                    pass
            self.client = None

    def send(self, message: Message) -> Result:
        where = self.adapter.where
        try:
            client = self.ensure()
            client.sendmail(message.envelope_from, [message.to_email], message.as_bytes())
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return self._reply(message, code, text)
        except smtplib.SMTPSenderRefused as exc:
            if 400 <= exc.smtp_code < 500:
                return self._reply(message, exc.smtp_code, exc.smtp_error)
            raise DeliveryError(
                f"{where}: the server refuses the sender {exc.sender!r}: {exc.smtp_code} {_text(exc.smtp_error)}",
                hint="check from_address and that this server may send for its domain",
            ) from None
        except smtplib.SMTPDataError as exc:
            return self._reply(message, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPResponseException as exc:  # e.g. 421 on MAIL FROM
            return self._reply(message, exc.smtp_code, exc.smtp_error)
        except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
            self.drop()
            return transient(message, f"{where}: connection lost ({type(exc).__name__})")
        return accepted(message, provider_id=message.message_id)

    def _reply(self, message: Message, code: int, text: bytes | str) -> Result:
        if code == 421:
            self.drop()  # the server is closing the session; reopen for the next message
        else:
            try:
                self.ensure().rset()
            except (smtplib.SMTPException, OSError):
                self.drop()
        return classify_smtp_reply(message, code, _text(text))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SMTPAdapter(Adapter):
    name = "smtp"
    max_batch = 100

    def __init__(self, smtp_url: str, pool: int = 1, timeout: float = 30.0):
        if not smtp_url:
            raise ConfigError(
                "setting 'smtp_url' is required for the smtp adapter",
                hint="e.g. NEWSLETTER_SMTP_URL=smtp://user:pass@mail.example.org:587",
            )
        parts = urlsplit(smtp_url)
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.implicit_tls else 587)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self.where = f"{self.host}:{self.port}"
        self._pool_size = pool
        self._connections: queue.Queue[_Connection] = queue.Queue()
        self._all: list[_Connection] = []
        self._executor: ThreadPoolExecutor | None = None

    def connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        try:
            if self.implicit_tls:
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            client.ehlo()
            if not self.implicit_tls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if self.username:
                if not (self.implicit_tls or client.has_extn("starttls")) and self.host not in LOCAL_HOSTS:
                    raise DeliveryError(
                        f"{self.where}: the server offers no TLS; refusing to send the password in clear"
                    )
                client.login(self.username, self.password or "")
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError(
                f"{self.where}: authentication failed", hint="check the user and password in smtp_url"
            ) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"{self.where}: TLS failed: {exc.reason}") from None
        return client

    def open(self) -> None:
        for _ in range(self._pool_size):
            connection = _Connection(self)
            self._all.append(connection)
            self._connections.put(connection)
        if self._pool_size > 1:
            self._executor = ThreadPoolExecutor(self._pool_size, thread_name_prefix="smtp")

    def close(self) -> None:
        if self._executor:
            self._executor.shutdown(wait=True)
            self._executor = None
        for connection in self._all:
            connection.drop()
        self._all.clear()
        self._connections = queue.Queue()

    def _send_one(self, message: Message) -> Result:
        connection = self._connections.get()
        try:
            return connection.send(message)
        finally:
            self._connections.put(connection)

    def send(self, messages: Iterable[Message]) -> Iterator[Result]:
        """One connection: take messages one by one as they are built (no batching needed)."""
        if self._executor is None:
            for message in messages:
                yield self._send_one(message)
            return
        yield from super().send(messages)

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        if self._executor is None:
            for message in messages:
                yield self._send_one(message)
            return
        futures = [self._executor.submit(self._send_one, message) for message in messages]
        for future in as_completed(futures):
            yield future.result()
