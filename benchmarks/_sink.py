"""A counting SMTP sink for benchmarks: aiosmtpd in its own process, so it does not share
the sender's interpreter. Prints the port, then serves until killed."""

from __future__ import annotations

import socket
import sys
import time

from aiosmtpd.controller import Controller


class Counter:
    count = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        Counter.count += 1
        return "250 OK"


def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
