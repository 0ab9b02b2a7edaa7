"""SQLAlchemy 2 models. The schema itself is versioned by the Alembic migrations."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
# Statuses an import or signup may never move an address out of.
FINAL_STATUSES = frozenset({"unsubscribed", "bounced", "complained"})

CAMPAIGN_STATUSES = ("scheduled", "running", "paused", "cancelled", "done")
# unknown: the server may have the message (its reply after the body was lost); never
# retried automatically (see `campaigns retry --unknown`).
DELIVERY_STATUSES = ("queued", "sent", "failed", "skipped", "unknown")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_subscriber_token() -> str:
    """The random value every link of one person carries (sealed, see tokens.py).

    Fresh for every row, never derived from the id: links of an erased person can never
    open anyone who signs up later.
    """
    return secrets.token_hex(10)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on SQLite too (which stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Subscriber(Base):
    __tablename__ = "subscribers"
    # SQLite: never hand out the id of an erased row again (a second line of defence).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(20), unique=True, default=new_subscriber_token)
    # The row id the links of messages sent before migration 0006 carry; never set for new rows.
    legacy_id: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased address: uniqueness is case-insensitive, whatever the database collation.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="active", index=True)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    consent_source: Mapped[str] = mapped_column(String(200), default="")
    consent_ip: Mapped[str] = mapped_column(String(64), default="")
    consent_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    tag_rows: Mapped[list[SubscriberTag]] = relationship(
        back_populates="subscriber",
        primaryjoin="Subscriber.id == foreign(SubscriberTag.subscriber_id)",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="SubscriberTag.tag",
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]


class SubscriberTag(Base):
    __tablename__ = "subscriber_tags"

    # No foreign key since migration 0007: checking it cost as much as writing the row. Tag
    # rows are deleted with their subscriber by the delete-orphan cascade above.
    subscriber_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    subscriber: Mapped[Subscriber] = relationship(
        back_populates="tag_rows", primaryjoin="foreign(SubscriberTag.subscriber_id) == Subscriber.id"
    )


class Event(Base):
    """Append-only log of status changes. Holds no address: it survives erasure."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    old_status: Mapped[str] = mapped_column(String(20), default="")
    new_status: Mapped[str] = mapped_column(String(20), default="")
    source: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text, default="")
    campaign_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Suppression(Base):
    """Keyed hashes of erased addresses: never mailed or imported again."""

    __tablename__ = "suppressions"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Signup(Base):
    """A signup form submission: queued until its confirmation email is sent, then waiting
    for the reader's click. Holds the consent being asked for; the subscriber's consent
    record changes only when this one is confirmed."""

    __tablename__ = "signups"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    tags: Mapped[list] = mapped_column(JSON, default=list)
    consent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    consent_source: Mapped[str] = mapped_column(String(200), default="")
    consent_ip: Mapped[str] = mapped_column(String(64), default="")
    consent_text: Mapped[str] = mapped_column(Text, default="")
    # 'queued' (confirmation email to send) or 'sent' (waiting for the click).
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    # SHA-256 of the random value the confirmation link carries (single use).
    nonce_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookReceipt(Base):
    """Signatures and event ids already accepted, kept for the validity window (replays)."""

    __tablename__ = "webhook_receipts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), index=True)
    subject: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    # The rendered issue, inlined once, with personalisation slots (see render.py).
    snapshot: Mapped[dict] = mapped_column(JSON)
    segment: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)
    adapter: Mapped[str] = mapped_column(String(20))
    rate: Mapped[float] = mapped_column(default=0.0)
    # Epoch seconds up to which send slots are handed out (campaign-wide rate limit).
    rate_clock: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Sent with --again: may go to people who already received this issue.
    repeat: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Answers a worker learned after losing its claim (each may be a second copy).
    late_results: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Sending time without pauses: seconds of finished running spells, plus the current one.
    running_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sending_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        Index("ix_deliveries_queue", "campaign_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    provider_id: Mapped[str] = mapped_column(String(200), default="", index=True)  # Message-ID for SMTP
    error: Mapped[str] = mapped_column(Text, default="")
    failure_kind: Mapped[str] = mapped_column(String(12), default="", server_default="")  # transient, permanent
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InboxMessage(Base):
    """A message from the feedback inbox already applied: never applied twice."""

    __tablename__ = "inbox_messages"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(20))
