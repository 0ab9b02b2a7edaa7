"""A real SMTP server for tests (aiosmtpd), with scripted answers per recipient."""

from __future__ import annotations

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

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            answers = self.script.rcpt.get(address.lower())
            if answers:
                return answers.pop(0)
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
        if answer:
            return answer
        with self.lock:
            self.raw.append(envelope.content)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 2.0.0 Message accepted"

    def received_by(self) -> Counter:
        with self.lock:
            return Counter(str(message["To"].addresses[0].addr_spec).lower() for message in self.messages)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SMTPServer:
    def __init__(self, script: Script | None = None):
        self.handler = RecordingHandler(script)
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, data_size_limit=10_000_000)

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
