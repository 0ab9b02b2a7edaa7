"""The subscriber list: add, change status, tag, access and erasure requests, statistics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .addresses import clean_attributes, clean_tag, clean_text, normalize_email, suppression_hash
from .db import Database
from .errors import DataError, NotFound
from .models import (
    FINAL_STATUSES,
    STATUSES,
    Delivery,
    Event,
    Subscriber,
    SubscriberTag,
    Suppression,
    utcnow,
)


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
            reason=clean_text(reason, 500),
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
) -> bool:
    """Move a subscriber to `new_status`, logging the change; False when nothing changed.

    Leaving a final status (unsubscribed, bounced, complained) is allowed only through
    a fresh confirmed opt-in, which passes source='confirm'.
    """
    if new_status not in STATUSES:
        raise DataError(f"unknown status {new_status!r}; use one of {', '.join(STATUSES)}")
    old = subscriber.status
    if old == new_status:
        return False
    if old in FINAL_STATUSES and new_status in ("active", "pending") and source != "confirm":
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

    def forget(self, email: str, source: str = "cli") -> None:
        """GDPR erasure: delete the person, keep only a keyed hash on the suppression list."""
        with self.db.session() as session:
            subscriber = self._get(session, email)
            digest = suppression_hash(self.secret_key, subscriber.email_key)
            if session.get(Suppression, digest) is None:
                session.add(Suppression(address_hash=digest, reason="erased"))
            record_event(
                session,
                subscriber.id,
                "forgotten",
                source,
                old_status=subscriber.status,
                new_status="forgotten",
            )
            session.delete(subscriber)

    # -- changes the subscriber makes (web app, webhooks) -------------------------------
    def get_by_id(self, session: Session, subscriber_id: int) -> Subscriber:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            raise NotFound("no such subscriber")
        return subscriber

    def unsubscribe_id(self, subscriber_id: int, source: str, campaign_id: int | None = None) -> Subscriber:
        """Idempotent: an address that already left stays as it is."""
        with self.db.session() as session:
            subscriber = self.get_by_id(session, subscriber_id)
            _leave(session, subscriber, source, campaign_id=campaign_id)
            return subscriber

    def resubscribe_id(self, subscriber_id: int, source: str = "web") -> Subscriber:
        """Undo an unsubscribe from the page that confirmed it (the reader's own click)."""
        with self.db.session() as session:
            subscriber = self.get_by_id(session, subscriber_id)
            if subscriber.status == "unsubscribed":
                change_status(session, subscriber, "active", "confirm", reason=f"resubscribed ({source})")
            return subscriber

    def signup(self, email: str, name: str, ip: str, consent_text: str, source: str) -> Subscriber | None:
        """A signup form submission. Returns the subscriber to send a confirmation to, or
        None when nothing should be sent (bounced, complained, erased, already active);
        the caller answers the same way in every case, so the form reveals nothing."""
        address, key = normalize_email(email)
        with self.db.session() as session:
            if self.is_suppressed(session, key):
                return None
            subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
            if subscriber is None:
                subscriber = Subscriber(
                    email=address,
                    email_key=key,
                    name=clean_text(name),
                    status="pending",
                    attributes={},
                    consent_source=clean_text(source),
                    tag_rows=[],
                )
                session.add(subscriber)
                session.flush()
                record_event(session, subscriber.id, "created", "web", new_status="pending")
            elif subscriber.status not in ("pending", "unsubscribed"):
                return None
            # The consent on record is the latest one asked for, with its exact wording.
            subscriber.consent_at = utcnow()
            subscriber.consent_ip = clean_text(ip, 64)
            subscriber.consent_text = clean_text(consent_text, 2000)
            subscriber.consent_source = clean_text(source)
            return subscriber

    def confirm_id(self, subscriber_id: int) -> Subscriber:
        with self.db.session() as session:
            subscriber = self.get_by_id(session, subscriber_id)
            if subscriber.status in ("pending", "unsubscribed"):
                change_status(session, subscriber, "active", "confirm", reason="double opt-in confirmed")
            return subscriber

    def update_preferences(self, subscriber_id: int, name: str, topics: list[str], offered: list[str]) -> Subscriber:
        """Set the name and the chosen topics; tags that are not topics are left alone."""
        with self.db.session() as session:
            subscriber = self.get_by_id(session, subscriber_id)
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
