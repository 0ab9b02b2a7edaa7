"""SMTP through smtplib: SSL or STARTTLS, AUTH, connections kept open and reused.

One connection carries every message of a campaign; a dropped connection or a 421 closes
it and the next message opens a new one. With smtp_pool > 1, that many connections each
hold a message in flight, driven in turn by one thread (SMTPAdapter._send_pooled).
"""

from __future__ import annotations

import functools
import logging
import select
import smtplib
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from .. import interrupts
from ..errors import ConfigError, DeliveryError
from ..message import Message
from .base import Adapter, Result, accepted, classify_smtp_reply, permanent, transient, unknown

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("newsletter.smtp")


class _Connection:
    """One SMTP session, opened lazily and reopened after a disconnect."""

    def __init__(self, adapter: SMTPAdapter):
        self.adapter = adapter
        self.client: smtplib.SMTP | None = None
        self.message: Message | None = None  # in flight on this connection
        self.step: str | None = None  # what the server owes: "envelope" (MAIL, RCPT, DATA) or "final"
        self.holding = False  # the final answer is in hand and not yet recorded (interrupts.hold)

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
        """One transaction, start to end (a single connection)."""
        result = self.begin(message)
        while result is None:
            result = self.advance()
        return result

    # A transaction runs in steps, so that a pool can keep a message in flight on every
    # connection from one thread (SMTPAdapter._send_pooled): `begin` writes the envelope,
    # each `advance` reads what the server owes and writes what comes next, until one
    # returns the Result. Until the final '.' is written the server cannot have the
    # message, so a failure is transient; after it, a lost reply is `unknown`.

    def begin(self, message: Message) -> Result | None:
        """Start `message`: None while the server owes replies (step 'envelope' or 'final')."""
        where = self.adapter.where
        try:
            client = self.ensure()  # an unreachable server raises DeliveryError: an outage
        except DeliveryError as exc:
            raise SessionRefused(str(exc), hint=exc.hint) from None
        self.message = message
        try:
            options = []
            if not message.to_email.isascii() or not message.envelope_from.isascii():
                if not client.has_extn("smtputf8"):
                    self._reset()
                    return self._done(
                        permanent(
                            message,
                            f"{where}: the address has non-ASCII characters before the @ and this server "
                            "does not offer SMTPUTF8",
                            bounce=False,
                        )
                    )
                options = ["SMTPUTF8"]
            if not options and self.pipelining:
                sender, recipient = message.smtp_envelope()
                client.send(f"MAIL FROM:{sender}\r\nRCPT TO:{recipient}\r\nDATA\r\n")
                self.step = "envelope"
                return None
            code, text = client.mail(message.envelope_from, options)
            if code != 250:
                return self._done(self._sender_refused(message, code, text))
            code, text = client.rcpt(message.to_email)
            if code not in (250, 251):
                return self._done(self._reply(message, code, text))
            code, text = client.docmd("DATA")
            if code != 354:
                return self._done(self._reply(message, code, text))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.drop()
            return self._done(self._lost_before(message, exc))
        return self._write_message()

    def advance(self) -> Result | None:
        """Read what the server owes for the message in flight and go on."""
        message = self.message
        assert message is not None and self.client is not None
        if self.step == "final":
            return self._final_reply()
        try:
            failed = self._envelope_replies(self.client, message)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.drop()
            return self._done(self._lost_before(message, exc))
        if failed is not None:
            return self._done(failed)
        return self._write_message()

    def abandon(self) -> Result | None:
        """Stop at once (a pool interrupted): the message in flight is `unknown` if the
        server may have it whole, else it was never sent (None) and stays queued."""
        message, step = self.message, self.step
        if message is not None and step == "final" and self._answer_arrived():
            try:  # the server has already answered: record what it said, not `unknown`
                return self._final_reply(timeout=0.2)
            except KeyboardInterrupt:
                pass
        self.drop(polite=False)
        self._done(None)
        if message is not None and step == "final":
            return self._stopped_waiting(message)
        return None

    def _answer_arrived(self) -> bool:
        sock = self.client.sock if self.client is not None else None
        try:
            return sock is not None and bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _write_message(self) -> Result | None:
        message = self.message
        assert message is not None and self.client is not None
        try:
            self.client.send(message.as_wire())
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.drop()  # the final '.' did not go out whole: the server cannot have the message
            return self._done(
                transient(
                    message,
                    f"{self.adapter.where}: connection lost while sending the message ({type(exc).__name__})",
                )
            )
        self.step = "final"
        return None

    def _final_reply(self, timeout: float | None = None) -> Result:
        message, client, where = self.message, self.client, self.adapter.where
        assert message is not None and client is not None
        try:
            if client.sock is not None:
                client.sock.settimeout(self.adapter.data_timeout if timeout is None else timeout)
            code, text = client.getreply()
            interrupts.hold()  # until recorded: a second Ctrl-C from here must not lose this answer
            self.holding = True
            if client.sock is not None:
                client.sock.settimeout(self.adapter.timeout)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.drop(polite=False)
            kind = "timed out" if "timed out" in str(exc) or isinstance(exc, TimeoutError) else "connection closed"
            return self._done(
                unknown(message, f"{where}: no answer after the message was sent ({kind}); the server may have it")
            )
        except KeyboardInterrupt:  # stopped at once while the server had the whole message
            self.drop(polite=False)
            self._done(None)
            raise InterruptedAfterData(self._stopped_waiting(message)) from None
        if code != 250:
            return self._done(self._reply(message, code, text))
        return self._done(accepted(message, provider_id=message.message_id))

    def _stopped_waiting(self, message: Message) -> Result:
        where = self.adapter.where
        return unknown(message, f"{where}: stopped while waiting for the answer to the message; the server may have it")

    def _lost_before(self, message: Message, exc: BaseException) -> Result:
        return transient(
            message, f"{self.adapter.where}: connection lost before the message was sent ({type(exc).__name__})"
        )

    def _done(self, result: Result | None) -> Result | None:
        self.message, self.step = None, None
        return result

    @property
    def pipelining(self) -> bool:
        return self.client is not None and self.client.has_extn("pipelining")

    def _envelope_replies(self, client: smtplib.SMTP, message: Message) -> Result | None:
        """The replies to MAIL, RCPT and DATA, written in one go by `begin` (RFC 2920): one
        round trip instead of three. None when the server is ready for the message."""
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
        self._done(None)
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


def _recorded(connection: _Connection, result: Result, record: Callable[[Result], None] | None) -> None:
    """Record `result`; then a second Ctrl-C that waited for this answer's record goes on."""
    try:
        if record is not None:
            record(result)
    finally:
        if connection.holding:
            connection.holding = False
            interrupts.release()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SessionRefused(DeliveryError):
    """A new session could not be opened (refused, a slow greeting, TLS, login): with other
    connections of the pool still open, the pool goes on with fewer."""


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
        self._all: list[_Connection] = []

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
            if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                detail = f"no answer within smtp_timeout ({self.timeout:g} s)"
            elif isinstance(exc, smtplib.SMTPServerDisconnected):
                detail = "the server closed the connection before greeting"
            raise DeliveryError(f"{self.where}: cannot connect: {detail}") from None
        return client

    def open(self) -> None:
        self._all = [_Connection(self) for _ in range(self._pool_size)]

    def close(self) -> None:
        for connection in self._all:
            connection.drop()
        self._all = []

    @property
    def parallel(self) -> bool:
        return self._pool_size > 1

    def send(self, messages: Iterable[Message], record: Callable[[Result], None] | None = None) -> Iterator[Result]:
        """Each message as it is taken, recorded (`record`) before its connection takes
        the next one. One connection: one transaction after another. A pool: see
        _send_pooled."""
        if not self.parallel:
            yield from self._send_single(messages, record)
        else:
            yield from self._send_pooled(iter(messages), record or (lambda result: None))

    def _send_single(self, messages: Iterable[Message], record: Callable[[Result], None] | None) -> Iterator[Result]:
        connection = self._all[0]
        for message in messages:
            try:
                result = connection.send(message)
            except InterruptedAfterData as interrupted:
                if record is not None:
                    record(interrupted.result)
                raise
            _recorded(connection, result, record)
            yield result

    def _send_pooled(self, source: Iterator[Message], record: Callable[[Result], None]) -> Iterator[Result]:
        """Every connection holds one message in flight, and this one thread goes round
        them, oldest step first: while it waits for one server reply, the other
        connections' messages are on their way. No thread per connection: threads took
        turns at the interpreter lock for every reply, and a pool of 4 sent fewer messages
        per second than one connection (docs/performance.md).

        A message is taken from `source` (where its last check runs) only when a
        connection is free to start it at once. Whatever stops the pool (the caller, an
        outage, an error) lets the messages in flight finish and be recorded first; a
        Ctrl-C records at once as `unknown` those the server may have whole, and leaves
        the others queued. Waiting on the oldest step first means one stalled connection
        holds up the others for up to its timeout; each message's outcome stays exact."""
        idle = list(reversed(self._all))
        ring: deque[_Connection] = deque()
        taking = True
        carried: Message | None = None  # taken, then refused a session: starts on another connection
        try:
            while True:
                while taking and idle:
                    message, carried = carried or next(source, None), None
                    if message is None:
                        taking = False
                        break
                    connection = idle.pop()
                    try:
                        result = connection.begin(message)
                    except SessionRefused as exc:
                        if not any(other.client is not None for other in self._all if other is not connection):
                            raise  # no session at all: an outage
                        self._all.remove(connection)  # e.g. a per-client connection limit: fewer connections
                        log.warning("%s; going on with %d connection(s)", exc, len(self._all))
                        carried = message
                        continue
                    if result is None:
                        ring.append(connection)
                    else:
                        _recorded(connection, result, record)
                        idle.append(connection)
                        yield result
                if not ring:
                    return
                connection = ring.popleft()
                result = connection.advance()
                if result is None:
                    ring.append(connection)
                else:
                    _recorded(connection, result, record)
                    idle.append(connection)
                    yield result
        except InterruptedAfterData as interrupted:
            record(interrupted.result)
            self._abandon(ring, record)
            raise
        except KeyboardInterrupt:
            self._abandon([*ring, *self._all], record)
            raise
        except BaseException:
            self._finish(ring, record)
            raise

    def _finish(self, ring: deque[_Connection], record: Callable[[Result], None]) -> None:
        """Let the messages in flight finish, recording each (the pool is stopping)."""
        try:
            while ring:
                connection = ring.popleft()
                try:
                    result = connection.advance()
                except DeliveryError:
                    continue
                if result is None:
                    ring.append(connection)
                else:
                    _recorded(connection, result, record)
        except InterruptedAfterData as interrupted:
            record(interrupted.result)
            self._abandon(ring, record)
            raise
        except KeyboardInterrupt:
            self._abandon([*ring, *self._all], record)
            raise

    def _abandon(self, connections: Iterable[_Connection], record: Callable[[Result], None]) -> None:
        for connection in connections:
            result = connection.abandon()
            if result is not None:
                _recorded(connection, result, record)

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        return self.send(messages)
