"""The subscriber list: add, change status, tag, access and erasure requests, statistics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from .addresses import (
    clean_attributes,
    clean_tag,
    clean_text,
    normalize_email,
    redact_addresses,
    suppression_hash,
)
from .db import Database
from .errors import DataError, NotFound
from .models import (
    FINAL_STATUSES,
    STATUSES,
    Delivery,
    Event,
    Signup,
    Subscriber,
    SubscriberTag,
    Suppression,
    utcnow,
)

if TYPE_CHECKING:  # only for annotations: an import of subscribers need not load cryptography
    from .tokens import TokenData

# Sources of an unsubscribe the reader did themselves, from a link (undo-able for a while).
LINK_SOURCES = ("web", "one-click")


def record_event(
    session: Session,
    subscriber_id: int | None,
    kind: str,
    source: str,
    *,
    old_status: str = "",
    new_status: str = "",
    reason: str = "",
    campaign_id: int | None = None,
) -> None:
    session.add(
        Event(
            subscriber_id=subscriber_id,
            kind=kind,
            source=source,
            old_status=old_status,
            new_status=new_status,
            # Providers quote the recipient in failure reasons: no address is ever stored here.
            reason=redact_addresses(clean_text(reason, 500)),
            campaign_id=campaign_id,
        )
    )


def change_status(
    session: Session,
    subscriber: Subscriber,
    new_status: str,
    source: str,
    reason: str = "",
    campaign_id: int | None = None,
    *,
    opt_in: bool = False,
) -> bool:
    """Move a subscriber to `new_status`, logging the change; False when nothing changed.

    Leaving a final status (unsubscribed, bounced, complained) is allowed only through
    the reader's own confirmed opt-in (or the undo right after their own unsubscribe),
    which passes opt_in=True.
    """
    if new_status not in STATUSES:
        raise DataError(f"unknown status {new_status!r}; use one of {', '.join(STATUSES)}")
    old = subscriber.status
    if old == new_status:
        return False
    if old in FINAL_STATUSES and new_status in ("active", "pending") and not opt_in:
        raise DataError(f"subscriber is {old}; only the subscriber can opt in again")
    subscriber.status = new_status
    now = utcnow()
    if new_status == "unsubscribed":
        subscriber.unsubscribed_at = now
    if new_status == "active" and subscriber.confirmed_at is None:
        subscriber.confirmed_at = now
    record_event(
        session,
        subscriber.id,
        "status",
        source,
        old_status=old,
        new_status=new_status,
        reason=reason,
        campaign_id=campaign_id,
    )
    return True


def _leave(
    session: Session, subscriber: Subscriber, source: str, reason: str = "", campaign_id: int | None = None
) -> bool:
    """Unsubscribe, idempotently: an address that already left (in any way) stays as it is."""
    if subscriber.status in FINAL_STATUSES:
        return False
    return change_status(session, subscriber, "unsubscribed", source, reason, campaign_id)


@dataclass
class Stats:
    by_status: dict[str, int]
    by_tag: dict[str, int]
    suppressed: int

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


class SubscriberList:
    """Library API behind `newsletter subscribers ...`."""

    def __init__(self, db: Database, secret_key: str):
        if not secret_key:
            from .errors import ConfigError

            raise ConfigError(
                "setting 'secret_key' is required to manage subscribers",
                hint="run: newsletter init (it writes newsletter.toml with a fresh key)",
            )
        self.db = db
        self.secret_key = secret_key

    # -- lookups -----------------------------------------------------------------------
    def _get(self, session: Session, email: str) -> Subscriber:
        _, key = normalize_email(email)
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
        if subscriber is None:
            raise NotFound("no subscriber with that address")
        return subscriber

    def find(self, email: str) -> Subscriber:
        with self.db.session() as session:
            return self._get(session, email)

    def is_suppressed(self, session: Session, email_key: str) -> bool:
        digest = suppression_hash(self.secret_key, email_key)
        return session.get(Suppression, digest) is not None

    # -- changes -----------------------------------------------------------------------
    def add(
        self,
        email: str,
        name: str = "",
        tags: tuple[str, ...] = (),
        status: str = "active",
        attributes: dict[str, Any] | None = None,
        source: str = "cli",
        consent_text: str = "",
        consent_ip: str = "",
    ) -> Subscriber:
        if status not in ("active", "pending"):
            raise DataError("a new subscriber's status must be active or pending")
        address, key = normalize_email(email)
        clean_tags = sorted({clean_tag(tag) for tag in tags})
        with self.db.session() as session:
            if self.is_suppressed(session, key):
                raise DataError("that address was erased on request and may not be added again")
            if session.scalar(select(Subscriber.id).where(Subscriber.email_key == key)):
                raise DataError("that address is already on the list")
            subscriber = Subscriber(
                email=address,
                email_key=key,
                name=clean_text(name),
                status=status,
                attributes=clean_attributes(attributes or {}),
                consent_at=utcnow(),
                consent_source=clean_text(source),
                consent_ip=clean_text(consent_ip, 64),
                consent_text=clean_text(consent_text, 2000),
                confirmed_at=utcnow() if status == "active" else None,
                tag_rows=[SubscriberTag(tag=tag) for tag in clean_tags],
            )
            session.add(subscriber)
            session.flush()
            record_event(session, subscriber.id, "created", source, new_status=status)
        return subscriber

    def unsubscribe(self, email: str, reason: str = "", source: str = "cli") -> bool:
        with self.db.session() as session:
            return _leave(session, self._get(session, email), source, reason)

    def tag(self, email: str, tags: tuple[str, ...]) -> list[str]:
        wanted = {clean_tag(tag) for tag in tags}
        with self.db.session() as session:
            subscriber = self._get(session, email)
            for tag in sorted(wanted - set(subscriber.tags)):
                subscriber.tag_rows.append(SubscriberTag(tag=tag))
            session.flush()
            return sorted(set(subscriber.tags) | wanted)

    def untag(self, email: str, tags: tuple[str, ...]) -> list[str]:
        unwanted = {clean_text(tag, 100) for tag in tags}
        with self.db.session() as session:
            subscriber = self._get(session, email)
            subscriber.tag_rows = [row for row in subscriber.tag_rows if row.tag not in unwanted]
            return [row.tag for row in subscriber.tag_rows]

    def forget(self, email: str, source: str = "cli", outbox_dir: str | Path | None = None) -> int:
        """GDPR erasure: delete the person and everything that names them, keep only a keyed
        hash on the suppression list. Returns how many outbox files were deleted.

        Rows: the subscriber (tags cascade), their queued or unconfirmed signups; their
        events stay (the audit trail of what happened, by id) with every free-text reason
        blanked; any other event or delivery text that quotes the address is redacted.
        Files: every .eml in the outbox addressed to them (campaign messages, proofs,
        confirmations). SQLite: deletions overwrite the freed bytes (secure_delete is on
        for every connection) and the WAL is checkpointed and truncated afterwards.
        """
        _, key = normalize_email(email)
        with self.db.session() as session:
            subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
            signups = session.scalar(select(func.count()).select_from(Signup).where(Signup.email_key == key)) or 0
            if subscriber is None and not signups:
                raise NotFound("no subscriber with that address")
            digest = suppression_hash(self.secret_key, key)
            if session.get(Suppression, digest) is None:
                session.add(Suppression(address_hash=digest, reason="erased"))
            session.execute(delete(Signup).where(Signup.email_key == key))
            delivery_ids: list[int] = []
            if subscriber is not None:
                delivery_ids = list(session.scalars(select(Delivery.id).where(Delivery.subscriber_id == subscriber.id)))
                session.execute(update(Event).where(Event.subscriber_id == subscriber.id).values(reason=""))
                record_event(
                    session,
                    subscriber.id,
                    "forgotten",
                    source,
                    old_status=subscriber.status,
                    new_status="forgotten",
                )
                session.delete(subscriber)
            pattern = f"%{_like_escape(key)}%"
            session.execute(
                update(Event).where(func.lower(Event.reason).like(pattern, escape="\\")).values(reason="(erased)")
            )
            session.execute(
                update(Delivery).where(func.lower(Delivery.error).like(pattern, escape="\\")).values(error="(erased)")
            )
        removed = erase_outbox_files(Path(outbox_dir), key, delivery_ids) if outbox_dir else 0
        self.checkpoint()
        return removed

    def checkpoint(self) -> None:
        """SQLite keeps recent pages in the -wal file until a checkpoint copies them back."""
        if self.db.dialect != "sqlite":
            return
        with self.db.engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))

    # -- changes the subscriber makes (web app, webhooks) -------------------------------
    def get_by_id(self, session: Session, subscriber_id: int) -> Subscriber:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            raise NotFound("no such subscriber")
        return subscriber

    @staticmethod
    def by_link(session: Session, data: TokenData) -> Subscriber | None:
        """The person a link token opens: the row holding its random value (or, for links
        sent before migration 0006, the row that had that id then). None once erased."""
        if data.key is not None:
            return session.scalar(select(Subscriber).where(Subscriber.token == data.key))
        if data.legacy_id is not None:
            return session.scalar(select(Subscriber).where(Subscriber.legacy_id == data.legacy_id))
        return None

    def from_link(self, data: TokenData) -> Subscriber:
        with self.db.session() as session:
            subscriber = self.by_link(session, data)
            if subscriber is None:
                raise NotFound("no such subscriber")
            return subscriber

    def unsubscribe_link(self, data: TokenData, source: str) -> Subscriber:
        """Unsubscribe whoever the link opens; idempotent. NotFound once erased."""
        with self.db.session() as session:
            subscriber = self.by_link(session, data)
            if subscriber is None:
                raise NotFound("no such subscriber")
            _leave(session, subscriber, source, campaign_id=data.campaign_id)
            return subscriber

    def unsubscribe_id(self, subscriber_id: int, source: str, campaign_id: int | None = None) -> Subscriber:
        """Idempotent: an address that already left stays as it is."""
        with self.db.session() as session:
            subscriber = self.get_by_id(session, subscriber_id)
            _leave(session, subscriber, source, campaign_id=campaign_id)
            return subscriber

    def undo_unsubscribe(self, data: TokenData, window: timedelta) -> tuple[Subscriber, bool]:
        """The Resubscribe button after an unsubscribe: (subscriber, undone).

        Undone only within `window` of an unsubscribe made through this same link (same
        person, same campaign, by the reader's own click). Otherwise (later, or unsubscribed
        by staff, bounced, complained) nothing changes here and the caller starts a new
        double opt-in instead."""
        with self.db.session() as session:
            subscriber = self.by_link(session, data)
            if subscriber is None:
                raise NotFound("no such subscriber")
            if subscriber.status != "unsubscribed":
                return subscriber, subscriber.status == "active"
            last = session.scalars(
                select(Event)
                .where(Event.subscriber_id == subscriber.id, Event.kind == "status")
                .order_by(Event.id.desc())
                .limit(1)
            ).first()
            undoable = (
                last is not None
                and last.new_status == "unsubscribed"
                and last.source in LINK_SOURCES
                and last.campaign_id == data.campaign_id
                and last.at >= utcnow() - window
            )
            if not undoable:
                return subscriber, False
            change_status(
                session,
                subscriber,
                "active",
                "web:undo",
                reason="unsubscribe undone from the same link",
                campaign_id=data.campaign_id,
                opt_in=True,
            )
            return subscriber, True

    def update_preferences(self, data: TokenData, name: str, topics: list[str], offered: list[str]) -> Subscriber:
        """Set the name and the chosen topics; tags that are not topics are left alone."""
        with self.db.session() as session:
            subscriber = self.by_link(session, data)
            if subscriber is None:
                raise NotFound("no such subscriber")
            subscriber.name = clean_text(name)
            chosen = {topic for topic in topics if topic in offered}
            subscriber.tag_rows = [row for row in subscriber.tag_rows if row.tag not in offered or row.tag in chosen]
            for tag in sorted(chosen - set(subscriber.tags)):
                subscriber.tag_rows.append(SubscriberTag(tag=tag))
            record_event(session, subscriber.id, "preferences", "web")
            session.flush()
            return subscriber

    # -- reading -----------------------------------------------------------------------
    def show(self, email: str) -> dict[str, Any]:
        """Everything held about one person (the GDPR access request)."""
        with self.db.session() as session:
            subscriber = self._get(session, email)
            events = session.scalars(select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id)).all()
            deliveries = session.scalars(
                select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
            ).all()
            record = subscriber_record(subscriber)
            record["events"] = [
                {
                    "at": _iso(event.at),
                    "kind": event.kind,
                    "source": event.source,
                    "old_status": event.old_status,
                    "new_status": event.new_status,
                    "reason": event.reason,
                    "campaign_id": event.campaign_id,
                }
                for event in events
            ]
            record["deliveries"] = [
                {
                    "campaign_id": delivery.campaign_id,
                    "status": delivery.status,
                    "sent_at": _iso(delivery.sent_at),
                    "attempts": delivery.attempts,
                }
                for delivery in deliveries
            ]
            return record

    def iter_records(
        self, status: str | None = None, tag: str | None = None, batch: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Stream subscribers as plain dicts, `batch` rows at a time (keyset pagination)."""
        if status and status not in STATUSES:
            raise DataError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        last_id = 0
        while True:
            with self.db.session() as session:
                query = select(Subscriber).where(Subscriber.id > last_id)
                if status:
                    query = query.where(Subscriber.status == status)
                if tag:
                    query = query.where(
                        Subscriber.id.in_(select(SubscriberTag.subscriber_id).where(SubscriberTag.tag == tag))
                    )
                rows = session.scalars(query.order_by(Subscriber.id).limit(batch)).all()
                records = [subscriber_record(row) for row in rows]
            if not records:
                return
            yield from records
            last_id = rows[-1].id

    def stats(self) -> Stats:
        with self.db.session() as session:
            by_status = dict.fromkeys(STATUSES, 0)
            for status, count in session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)):
                by_status[status] = count
            by_tag = dict(
                session.execute(
                    select(SubscriberTag.tag, func.count()).group_by(SubscriberTag.tag).order_by(SubscriberTag.tag)
                ).all()
            )
            suppressed = session.scalar(select(func.count()).select_from(Suppression)) or 0
        return Stats(by_status, by_tag, suppressed)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def erase_outbox_files(outbox: Path, email_key: str, delivery_ids: list[int]) -> int:
    """Delete every .eml under the outbox addressed to this person: their campaign messages
    (named after the delivery), and proofs and confirmations (found by their To header)."""
    if not outbox.is_dir():
        return 0
    named = {f"{delivery_id:09d}.eml" for delivery_id in delivery_ids}
    needle = email_key.encode()
    removed = 0
    for path in outbox.rglob("*"):
        if path.suffix not in (".eml", ".tmp") or not path.is_file():
            continue
        if path.name not in named:
            with open(path, "rb") as handle:
                head = handle.read(64 * 1024).lower()
            if needle not in head:
                continue
        _shred(path)
        removed += 1
    return removed


def _shred(path: Path) -> None:
    """Overwrite, then delete: the bytes do not linger in the file's old blocks."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


EXPORT_COLUMNS = (
    "email",
    "name",
    "status",
    "tags",
    "attributes",
    "consent_at",
    "consent_source",
    "consent_ip",
    "consent_text",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
)


def subscriber_record(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status,
        "tags": subscriber.tags,
        "attributes": subscriber.attributes or {},
        "consent_at": _iso(subscriber.consent_at),
        "consent_source": subscriber.consent_source,
        "consent_ip": subscriber.consent_ip,
        "consent_text": subscriber.consent_text,
        "created_at": _iso(subscriber.created_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "unsubscribed_at": _iso(subscriber.unsubscribed_at),
    }
