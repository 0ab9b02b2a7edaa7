"""The one small interface every delivery adapter implements.

An adapter is opened, given batches of messages, and closed (it is a context manager).
`send` yields one Result per message, in any order, as soon as each is known, so the
campaign can record "sent" the moment a provider accepted a message. It pulls messages
from the iterable it is given only when it is about to send them (a batch API: when the
batch is full), so the campaign checks each reader and its claim right before handing
the message over.

Four outcomes: accepted; transient (not delivered, try again later); permanent (not
delivered, never retry); unknown (the server may have it: the connection or the reply was
lost after the whole message was handed over; never retried automatically). An outage
(the server cannot be reached or refuses us) is not a per-message outcome: the adapter
raises DeliveryError and the campaign pauses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from .. import interrupts
from ..message import Message

ACCEPTED, TRANSIENT, PERMANENT, UNKNOWN = "accepted", "transient", "permanent", "unknown"


@dataclass(frozen=True)
class Result:
    message: Message
    status: str  # accepted, transient, permanent or unknown
    provider_id: str = ""
    reason: str = ""
    bounce: bool = False  # permanent and the address itself is bad: stop mailing it
    retry_after: float | None = None  # seconds, when the provider said so

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


def accepted(message: Message, provider_id: str = "") -> Result:
    return Result(message, ACCEPTED, provider_id=provider_id)


def transient(message: Message, reason: str, retry_after: float | None = None) -> Result:
    return Result(message, TRANSIENT, reason=reason, retry_after=retry_after)


def permanent(message: Message, reason: str, bounce: bool) -> Result:
    return Result(message, PERMANENT, reason=reason, bounce=bounce)


def unknown(message: Message, reason: str) -> Result:
    """The whole message was handed over but its answer was lost: it may be delivered."""
    return Result(message, UNKNOWN, reason=reason)


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def classify_smtp_reply(message: Message, code: int, text: str) -> Result:
    """Map an SMTP reply to a Result (RFC 5321 reply codes, RFC 3463 enhanced codes)."""
    reason = f"{code} {text}".strip()
    enhanced = _ENHANCED.search(text)
    if 400 <= code < 500 or (code == 552 and "too many recipients" in text.lower()):
        return transient(message, reason)
    if enhanced:
        subject, detail = enhanced.group(2), enhanced.group(3)
        # 5.1.x: bad mailbox or domain; 5.2.1: mailbox disabled. 5.7.x is policy: a
        # sender problem, so the subscriber is not to blame and stays on the list.
        bounce = subject == "1" or (subject == "2" and detail == "1")
        return permanent(message, reason, bounce=bounce)
    return permanent(message, reason, bounce=code in (550, 551, 553))


class Adapter:
    """Base class: subclasses implement `send_batch`; `max_batch` caps a batch's size."""

    name = "base"
    max_batch = 100

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Adapter:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    parallel = False  # True when messages go out on several connections at once
    repeats_are_harmless = False  # sending a message again replaces it (the outbox's files)
    stopped_after_refusal = False  # a stop came between attempts, after the provider refused the batch

    def send(self, messages: Iterable[Message], record: Callable[[Result], None] | None = None) -> Iterator[Result]:
        """Each batch's results, every one recorded (`record`) before any is yielded.

        A Ctrl-C that stops at once (interrupts.stop_now) while the request is out or its
        answer is being read leaves the whole batch `unknown`: the provider may have
        accepted it (between attempts after a refusal it stays queued: it was not). Once
        the answer is read, the stop waits until all of it is recorded."""
        pending = iter(messages)
        while batch := list(islice(pending, self.max_batch)):
            held = self.stopped_after_refusal = False
            try:
                results = list(self.send_batch(batch))
                interrupts.hold()
                held = True
                try:
                    for result in results:
                        if record is not None:
                            record(result)
                finally:
                    interrupts.release()
            except KeyboardInterrupt:
                out = not (held or self.repeats_are_harmless or self.stopped_after_refusal)
                if out and record is not None:
                    reason = f"{self.name}: stopped before the answer came; the provider may have the message"
                    for message in batch:
                        record(unknown(message, reason))
                raise
            yield from results

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        raise NotImplementedError
