"""Composing and serialising messages in a second process, so the sending one keeps its GIL.

Personalising a message and writing its MIME bytes costs about as much CPU as sending and
recording it. In one interpreter the two share one GIL, and a pool of SMTP connections
cannot use a second core. So, where the platform can fork, a campaign run forks once,
after the issue was rendered (the child inherits the rendered issue and the Composer; CSS
is still inlined once per issue), and the child turns each claimed row into the bytes
SMTP sends. The sending process still does everything the delivery guarantees rest on:
the check right before each message, the send, the record; the child only builds bytes.

The child reads a batch of rows, then writes one answer per row, in order: the message
(without the per-issue parts the SMTP path does not read) or, when that reader's message
could not be built, the reason, which fails that delivery alone. The pipe's buffer is
how far it composes ahead.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ContentError, DeliveryError
from .render import Recipient

if TYPE_CHECKING:
    from .campaigns import Composer
    from .message import Message
    from .render import RenderedIssue
    from .store import Claimed


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def compose_row(
    composer: Composer, rendered: RenderedIssue, campaign_id: int, row: Claimed, wire_only: bool = False
) -> Message | str:
    """One claimed delivery's message, MIME bytes and SMTP form built; or why it cannot be
    built (personalisation, an address, signing): a string that fails that delivery alone."""
    recipient = Recipient(row.subscriber_id, row.email, row.name, row.attributes, row.token)
    try:
        message = composer.compose(rendered, recipient, campaign_id, row.delivery_id)
        message.as_wire()  # MIME bytes and their SMTP form, cached on the message
    except ContentError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - one reader's message must not stop the campaign
        return f"could not build this message: {type(exc).__name__}: {exc}"
    return message.for_wire() if wire_only else message


def _serve(connection: Any, parents_end: Any, composer: Composer, rendered: RenderedIssue, campaign_id: int) -> None:
    """The child: batches of rows in, one answer per row out, until told to stop or the
    parent is gone."""
    parents_end.close()  # else the pipe outlives the parent, and a killed parent leaves the child waiting
    # Ctrl-C reaches the whole process group: the parent decides when sending stops, and
    # SIGTERM must not run the parent's handler (inherited through fork) here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Nothing inherited is ever collected here: the parent's database connections stay
    # the parent's (a finaliser run in the child could close a socket the parent uses).
    gc.freeze()
    try:
        while (rows := connection.recv()) is not None:
            for row in rows:
                connection.send(compose_row(composer, rendered, campaign_id, row, wire_only=True))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away


class ComposeProcess:
    """The parent's side: rows go out a batch at a time, messages come back in order."""

    def __init__(self, composer: Composer, rendered: RenderedIssue, campaign_id: int):
        context = multiprocessing.get_context("fork")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, self._connection, composer, rendered, campaign_id),
            name="newsletter-compose",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._owed = 0  # answers to rows already handed over that were not read back yet

    def compose(self, rows: list[Claimed]) -> Iterator[Message | str]:
        """The answers for `rows`, in order, read as they are needed. A batch left unread
        (a stop, a lost claim) is drained before the next one goes out."""
        self._drain()
        self._connection.send(rows)
        self._owed += len(rows)
        for _ in rows:
            answer = self._receive()
            self._owed -= 1
            yield answer

    def _receive(self) -> Message | str:
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            self._process.join(1.0)
            raise DeliveryError(
                f"the process composing the messages stopped (exit code {self._process.exitcode})",
                hint="it was killed or ran out of memory; every message sent so far is recorded",
            ) from None

    def _drain(self) -> None:
        while self._owed:
            self._receive()
            self._owed -= 1

    def close(self) -> None:
        """Stop the child: at once when it still owes answers nobody will read."""
        try:
            if self._owed:
                self._process.terminate()
            else:
                self._connection.send(None)
        except OSError:
            pass
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()
