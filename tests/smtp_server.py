"""A real SMTP server for tests (aiosmtpd), with scripted answers per recipient and faults.

Scripted answers: an SMTP reply ("451 4.3.0 later"), "DROP" (close the connection without
replying: at RCPT, before the message; at DATA, after the whole message arrived but
without storing it), "STORE_THEN_CLOSE" (store the message, then close without a reply:
a lost reply after the final '.') and "STORE_THEN_HANG" (store it, then answer only after
`hang_seconds`: a reply later than the client waits).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


@dataclass
class Script:
    """Answers to give, in order, to a recipient's RCPT TO or DATA; then accept."""

    rcpt: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, list[str]] = field(default_factory=dict)  # "DROP" closes the connection


class RecordingHandler:
    def __init__(self, script: Script | None = None):
        self.script = script or Script()
        self.messages: list[email.message.EmailMessage] = []
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []  # (MAIL FROM, RCPT TO) per accepted message
        self.lock = threading.Lock()
        self.connections = 0
        self.on_data = None  # callable(handler, session) -> str | None, for tests that need a hook
        self.on_rcpt = None  # callable(handler, address) -> str | None
        self.delay = 0.0  # seconds to wait (without blocking other connections) before answering DATA
        self.hang_seconds = 30.0
        self.rcpt_attempts: Counter = Counter()
        self.pipelining = True  # advertise RFC 2920 (aiosmtpd reads pipelined commands in order)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            self.rcpt_attempts[address.lower()] += 1
            answers = self.script.rcpt.get(address.lower())
            answer = answers.pop(0) if answers else None
        if answer is None and self.on_rcpt is not None:
            answer = self.on_rcpt(self, address)
        if answer == "DROP":
            server.transport.close()
            return "421 4.4.2 connection dropped"
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.on_data is not None:
            answer = self.on_data(self, session)
            if answer:
                return answer
        recipient = envelope.rcpt_tos[0].lower()
        with self.lock:
            answers = self.script.data.get(recipient)
            answer = answers.pop(0) if answers else None
        if answer == "DROP":
            server.transport.close()
            return "421 4.4.2 connection dropped"
        if answer and not answer.startswith("STORE_THEN"):
            return answer
        self.store(envelope)
        if answer == "STORE_THEN_CLOSE":
            server.transport.close()
            return "421 4.4.2 connection dropped"
        if answer == "STORE_THEN_HANG":
            await asyncio.sleep(self.hang_seconds)
        elif self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 Message accepted"

    def store(self, envelope) -> None:
        with self.lock:
            self.raw.append(envelope.content)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.messages.append(parse(envelope.content))

    def received_by(self) -> Counter:
        with self.lock:
            return Counter(str(message["To"].addresses[0].addr_spec).lower() for message in self.messages)


def parse(content: bytes) -> email.message.EmailMessage:
    """Parse as a receiving system would; UTF-8 headers (RFC 6532, SMTPUTF8) included."""
    if content.isascii():
        return email.message_from_bytes(content, policy=email.policy.default)
    return email.message_from_string(content.decode("utf-8", "surrogateescape"), policy=email.policy.default)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SMTPServer:
    def __init__(
        self, script: Script | None = None, smtputf8: bool = False, port: int | None = None, pipelining: bool = True
    ):
        self.handler = RecordingHandler(script)
        self.handler.pipelining = pipelining
        self.port = port or free_port()
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            data_size_limit=10_000_000,
            enable_SMTPUTF8=smtputf8,
            decode_data=False,
        )

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


def pid_of_peer(port: int, pids: list[int]) -> int | None:
    """Which of `pids` owns the client end of a connection from 127.0.0.1:`port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            return pid
    return None
