"""SMTP through smtplib: SSL or STARTTLS, AUTH, connections kept open and reused.

One connection carries every message of a campaign; a dropped connection or a 421 closes
it and the next message opens a new one. With smtp_pool > 1, that many connections send
in parallel threads.
"""

from __future__ import annotations

import functools
import queue
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, DeliveryError
from ..message import Message
from .base import Adapter, Result, accepted, classify_smtp_reply, permanent, transient, unknown

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

    def drop(self, polite: bool = True) -> None:
        """Close the session: with QUIT while it is in step, at once when it is not (after a
        lost answer QUIT would wait for the server all over again)."""
        if self.client is not None:
            try:
                if not polite:
                    raise OSError("abandoned")
                self.client.quit()
            except (smtplib.SMTPException, OSError):
                try:
                    self.client.close()
                except OSError:
                    pass
            self.client = None

    def send(self, message: Message) -> Result:
        """One transaction in its phases. Until the final '.' is written the server cannot
        have the message, so a failure is transient; after it, a lost reply is `unknown`."""
        where = self.adapter.where
        client = self.ensure()  # an unreachable server raises DeliveryError: an outage
        try:
            options = []
            if not message.to_email.isascii() or not message.envelope_from.isascii():
                if not client.has_extn("smtputf8"):
                    self._reset()
                    return permanent(
                        message,
                        f"{where}: the address has non-ASCII characters before the @ and this server "
                        "does not offer SMTPUTF8",
                        bounce=False,
                    )
                options = ["SMTPUTF8"]
            if not options and self.pipelining:
                failed = self._envelope_pipelined(client, message)
                if failed is not None:
                    return failed
            else:
                code, text = client.mail(message.envelope_from, options)
                if code != 250:
                    return self._sender_refused(message, code, text)
                code, text = client.rcpt(message.to_email)
                if code not in (250, 251):
                    return self._reply(message, code, text)
                code, text = client.docmd("DATA")
                if code != 354:
                    return self._reply(message, code, text)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.drop()
            return transient(message, f"{where}: connection lost before the message was sent ({type(exc).__name__})")
        try:
            client.send(message.as_wire())
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.drop()  # the final '.' did not go out whole: the server cannot have the message
            return transient(message, f"{where}: connection lost while sending the message ({type(exc).__name__})")
        try:
            if client.sock is not None:
                client.sock.settimeout(self.adapter.data_timeout)
            code, text = client.getreply()
            if client.sock is not None:
                client.sock.settimeout(self.adapter.timeout)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.drop(polite=False)
            kind = "timed out" if "timed out" in str(exc) or isinstance(exc, TimeoutError) else "connection closed"
            return unknown(message, f"{where}: no answer after the message was sent ({kind}); the server may have it")
        except KeyboardInterrupt:  # stopped at once while the server had the whole message
            self.drop(polite=False)
            raise InterruptedAfterData(
                unknown(
                    message,
                    f"{where}: stopped while waiting for the answer to the message; the server may have it",
                )
            ) from None
        if code != 250:
            return self._reply(message, code, text)
        return accepted(message, provider_id=message.message_id)

    @property
    def pipelining(self) -> bool:
        return self.client is not None and self.client.has_extn("pipelining")

    def _envelope_pipelined(self, client: smtplib.SMTP, message: Message) -> Result | None:
        """MAIL, RCPT and DATA in one write, then their three replies (RFC 2920): one round
        trip instead of three. None when the server is ready for the message."""
        sender, recipient = message.smtp_envelope()
        client.send(f"MAIL FROM:{sender}\r\nRCPT TO:{recipient}\r\nDATA\r\n")
        mail, rcpt, data = client.getreply(), client.getreply(), client.getreply()
        if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
            client.send(b".\r\n")  # a server that opened DATA anyway: end it empty
            client.getreply()
        if mail[0] != 250:
            return self._sender_refused(message, *mail)
        if rcpt[0] not in (250, 251):
            return self._reply(message, *rcpt)
        if data[0] != 354:
            return self._reply(message, *data)
        return None

    def _sender_refused(self, message: Message, code: int, text: bytes | str) -> Result:
        if 400 <= code < 500:
            return self._reply(message, code, text)
        self._reset()
        raise DeliveryError(
            f"{self.adapter.where}: the server refuses the sender {message.envelope_from!r}: {code} {_text(text)}",
            hint="check from_address and that this server may send for its domain",
        )

    def _reset(self) -> None:
        try:
            self.ensure().rset()
        except (smtplib.SMTPException, OSError):
            self.drop()

    def _reply(self, message: Message, code: int, text: bytes | str) -> Result:
        if code == 421 or code < 0:
            self.drop()  # the server is closing the session; reopen for the next message
        else:
            self._reset()
        return classify_smtp_reply(message, code, _text(text))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class InterruptedAfterData(KeyboardInterrupt):
    """Ctrl-C (twice) while waiting for the answer to a message the server has whole: the
    delivery's outcome is unknown, and is recorded so, before the interrupt goes on."""

    def __init__(self, result: Result):
        super().__init__()
        self.result = result


class SMTPAdapter(Adapter):
    name = "smtp"
    max_batch = 100
    sends_wire = True  # reads only a message's bytes and addresses: it can be composed in another process

    def __init__(self, smtp_url: str, pool: int = 1, timeout: float = 30.0, data_timeout: float = 600.0):
        if not smtp_url:
            raise ConfigError(
                "setting 'smtp_url' is required for the smtp adapter",
                hint="e.g. NEWSLETTER_SMTP_URL=smtp://user:pass@mail.example.org:587",
            )
        parts = urlsplit(smtp_url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ConfigError(
                "setting 'smtp_url' must start with smtp:// or smtps://", hint="e.g. smtp://mail.example.org:587"
            )
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        try:
            self.port = parts.port or (465 if self.implicit_tls else 587)
        except ValueError:
            raise ConfigError(
                "setting 'smtp_url' has an invalid port (a number from 1 to 65535)",
                hint="e.g. smtp://mail.example.org:587",
            ) from None
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.where = f"{self.host}:{self.port}"
        self._pool_size = pool
        self._connections: queue.SimpleQueue[_Connection] = queue.SimpleQueue()
        self._all: list[_Connection] = []
        self._executor: ThreadPoolExecutor | None = None

    @functools.cached_property
    def _tls_context(self) -> ssl.SSLContext:
        """Built once, when a session first needs TLS: loading the system's certificates
        takes about 90 ms, a cost a plain local relay never has to pay."""
        return ssl.create_default_context()

    def connect(self) -> smtplib.SMTP:
        """A new session; any failure to reach or be accepted by the server is an outage."""
        try:
            if self.implicit_tls:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self._tls_context
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            client.ehlo()
            if not self.implicit_tls and client.has_extn("starttls"):
                client.starttls(context=self._tls_context)
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
        except socket.gaierror:
            raise DeliveryError(
                f"{self.where}: cannot resolve the host name", hint="check the host in smtp_url"
            ) from None
        except smtplib.SMTPConnectError as exc:
            raise DeliveryError(
                f"{self.where}: the server refused the session: {exc.smtp_code} {_text(exc.smtp_error)}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise DeliveryError(f"{self.where}: cannot connect: {detail}") from None
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
        self._connections = queue.SimpleQueue()

    @property
    def parallel(self) -> bool:
        return self._pool_size > 1

    def _send_one(self, message: Message, record: Callable[[Result], None] | None = None) -> Result:
        connection = self._connections.get()
        try:
            try:
                result = connection.send(message)
            except InterruptedAfterData as interrupted:
                if record is not None:
                    record(interrupted.result)
                raise
            if record is not None:
                record(result)  # before this connection takes its next message
            return result
        finally:
            self._connections.put(connection)

    def send(self, messages: Iterable[Message], record: Callable[[Result], None] | None = None) -> Iterator[Result]:
        """One connection: each message as it is built. A pool: one thread per connection
        takes the next message itself (its check runs then), sends it and records it, so
        no connection waits for the caller, and the caller only hears the results."""
        if self._executor is None:
            for message in messages:
                yield self._send_one(message, record)
            return
        source = iter(messages)
        taking = threading.Lock()  # the message iterator is a generator: one taker at a time
        results: queue.SimpleQueue[Result | BaseException | None] = queue.SimpleQueue()
        stop = threading.Event()

        def work() -> None:
            try:
                while not stop.is_set():
                    with taking:
                        message = next(source, None)
                    if message is None:
                        return
                    results.put(self._send_one(message, record))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                stop.set()
                results.put(exc)
            finally:
                results.put(None)

        workers = [self._executor.submit(work) for _ in range(self._pool_size)]
        running = len(workers)
        try:
            while running:
                item = results.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()  # stopped early or failed: let what was handed over finish and be recorded
            wait(workers)

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        return self.send(messages)
