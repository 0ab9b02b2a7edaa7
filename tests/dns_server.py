"""A real DNS server for tests (dnslib), UDP and TCP on a free 127.0.0.1 port, serving a dict zone."""

from __future__ import annotations

from dnslib import MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from .smtp_server import free_port


class DictResolver(BaseResolver):
    """records: {(name, "TXT"|"MX"|"A"): [values]}; TXT values may be lists of strings (split records)."""

    def __init__(self, records: dict[tuple[str, str], list]):
        self.records = {(name.lower().rstrip("."), kind): values for (name, kind), values in records.items()}
        self.names = {name for name, _ in self.records}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        kind = QTYPE[request.q.qtype]
        for value in self.records.get((name, kind), []):
            if kind == "TXT":
                rdata = TXT(value if isinstance(value, list) else [value])
            elif kind == "MX":
                rdata = MX(value)
            else:
                rdata = A(value)
            reply.add_answer(RR(request.q.qname, getattr(QTYPE, kind), rdata=rdata, ttl=60))
        if name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class LocalDNS:
    def __init__(self, records: dict[tuple[str, str], list]):
        self.port = free_port()
        resolver = DictResolver(records)
        quiet = DNSLogger("-request,-reply,-truncated,-error", prefix=False)
        self.servers = [
            DNSServer(resolver, address="127.0.0.1", port=self.port, logger=quiet),
            DNSServer(resolver, address="127.0.0.1", port=self.port, tcp=True, logger=quiet),
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LocalDNS:
        for server in self.servers:
            server.start_thread()
        return self

    def __exit__(self, *exc_info) -> None:
        for server in self.servers:
            server.stop()
