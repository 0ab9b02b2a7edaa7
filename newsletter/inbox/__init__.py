"""The feedback mailbox: bounces, complaints and mailto unsubscribes, applied exactly once.

    Inbox(settings, db).check()            # read inbox_url, apply, move/mark, report
    Inbox(settings, db).process(raw_bytes) # one message from an MTA pipe

Each message is classified (classify.py), its events applied through the one feedback
function (feedback.py), and a ledger row keyed by its Message-ID written in the same
transaction: a message is applied once even when the move to the processed folder fails,
a second `inbox check` runs, or the MTA pipes the same message twice.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..addresses import redact_addresses
from ..config import Settings
from ..db import Database
from ..feedback import SoftBouncePolicy, apply_feedback
from ..models import Delivery, InboxMessage
from ..tokens import Tokens
from ..verp import ReturnPaths
from .classify import POLICY, UNMATCHED, Classifier, Verdict, parse
from .mailboxes import InboxError, open_mailbox

__all__ = ["Inbox", "InboxError", "InboxPoller", "RunReport"]

DUPLICATE = "already-processed"


@dataclass
class RunReport:
    """What one run saw (per verdict) and changed (per new status)."""

    seen: int = 0
    verdicts: Counter = field(default_factory=Counter)
    changes: Counter = field(default_factory=Counter)  # new status -> subscribers moved to it
    unknown: int = 0  # events about nobody on the list (erased, or never ours)
    notes: Counter = field(default_factory=Counter)  # why messages were not applied, e.g. policy blocks

    def add(self, other: RunReport) -> None:
        self.seen += other.seen
        self.verdicts.update(other.verdicts)
        self.changes.update(other.changes)
        self.unknown += other.unknown
        self.notes.update(other.notes)

    @property
    def applied(self) -> int:
        return sum(self.changes.values())

    def lines(self) -> list[str]:
        changed = ", ".join(f"{status} {count}" for status, count in sorted(self.changes.items())) or "none"
        seen = ", ".join(f"{kind} {count}" for kind, count in sorted(self.verdicts.items())) or "nothing"
        lines = [f"Messages: {self.seen} ({seen}).", f"Status changes: {changed}."]
        if self.unknown:
            lines.append(f"About addresses not on the list: {self.unknown}.")
        for note, count in self.notes.most_common(10):
            lines.append(f"  {count} x {note}")
        return lines

    def as_dict(self) -> dict:
        return {
            "seen": self.seen,
            "verdicts": dict(self.verdicts),
            "changes": dict(self.changes),
            "unknown": self.unknown,
            "notes": dict(self.notes),
        }


def message_key(raw: bytes, message_id: str | None) -> str:
    """The ledger key: the Message-ID when there is one, else the bytes themselves."""
    if message_id and message_id.strip():
        return "m:" + hashlib.sha256(message_id.strip().encode("utf-8", "replace")).hexdigest()
    return "b:" + hashlib.sha256(raw).hexdigest()


class Inbox:
    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.db = db
        self.classifier = Classifier(
            ReturnPaths(settings), Tokens(settings.secret_key), settings.secret_key, self._recorded_delivery
        )
        self.policy = SoftBouncePolicy(settings.soft_bounce_limit, settings.soft_bounce_days)

    def _recorded_delivery(self, message_id: str) -> int | None:
        """The delivery that recorded this Message-ID (or provider id) when it was sent."""
        with self.db.session() as session:
            return session.scalar(select(Delivery.id).where(Delivery.provider_id == message_id[:200]).limit(1))

    def process(self, raw: bytes, envelope_recipients: Iterable[str] = ()) -> RunReport:
        """Classify and apply one message, once."""
        report = RunReport(seen=1)
        message = parse(raw)
        key = message_key(raw, message.get("Message-ID"))
        with self.db.session() as session:  # seen before: skip the parsing work
            if session.get(InboxMessage, key) is not None:
                report.verdicts[DUPLICATE] += 1
                return report
        verdict = self.classifier.classify(message, envelope_recipients)
        try:
            with self.db.session() as session:
                if session.get(InboxMessage, key) is not None:  # applied meanwhile by another process
                    report.verdicts[DUPLICATE] += 1
                    return report
                for event in verdict.events:
                    outcome = apply_feedback(session, event, self.policy)
                    if not outcome.found:
                        report.unknown += 1
                    elif outcome.changed:
                        report.changes[outcome.status] += 1
                session.add(InboxMessage(key=key, outcome=verdict.kind[:20]))
        except IntegrityError:  # another process applied it at the same moment
            return RunReport(seen=1, verdicts=Counter({DUPLICATE: 1}))
        report.verdicts[verdict.kind] += 1
        if verdict.kind in (POLICY, UNMATCHED) and verdict.note:
            report.notes[f"{verdict.kind}: {redact_addresses(verdict.note)[:160]}"] += 1
        return report

    def check(self, url: str | None = None) -> RunReport:
        """Read the whole mailbox, apply each message, then move or mark it."""
        if not url:
            self.settings.require("inbox_url", why="to read bounces and complaints")
            url = self.settings.inbox_url
        report = RunReport()
        with open_mailbox(url, self.settings.inbox_folder, timeout=self.settings.smtp_timeout) as mailbox:
            for handle, raw in mailbox.messages():
                report.add(self.process(raw))
                mailbox.done(handle)
        return report

    def classify(self, raw: bytes) -> Verdict:
        return self.classifier.classify(parse(raw))


class InboxPoller:
    """Checks the inbox every `inbox_poll` minutes on a daemon thread (for `worker` and `serve`)."""

    def __init__(self, settings: Settings, db: Database, log: Callable[[str], None]):
        self.inbox = Inbox(settings, db)
        self.interval = settings.inbox_poll * 60
        self.log = log
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="inbox-poll", daemon=True)

    def start(self) -> InboxPoller:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                report = self.inbox.check()
                if report.seen:
                    self.log("inbox: " + " ".join(report.lines()))
            except Exception as exc:  # a poll failure must not stop the worker or the web app
                self.log(f"inbox: {exc}")
            self.stop.wait(self.interval)

    def close(self, wait: float = 60.0) -> None:
        """Stop polling; a check in progress finishes first (its messages are then all marked)."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=wait)
