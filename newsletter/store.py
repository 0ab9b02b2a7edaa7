"""Every query the campaign engine runs, in one place. The sending loop sees only this API."""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, literal, or_, select, update

from .addresses import redact_addresses
from .db import Database
from .delivery import ACCEPTED, TRANSIENT, Result
from .errors import NotFound
from .models import Campaign, Delivery, Subscriber, SubscriberTag, utcnow
from .render import RenderedIssue
from .subscribers import change_status

OPEN_STATUSES = ("scheduled", "running", "paused")


# Built once: the per-message hot path should not rebuild (or ORM-synchronise) a statement.
_MARK_SENT = (
    update(Delivery)
    .where(Delivery.id == bindparam("b_id"), Delivery.status == "queued")
    .values(
        status="sent",
        sent_at=bindparam("b_now"),
        provider_id=bindparam("b_provider"),
        error="",
        attempts=Delivery.attempts + 1,
        claimed_by=None,
        claimed_until=None,
    )
)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attributes: dict[str, Any]
    token: str = ""  # the random value the reader's links carry


@dataclass
class Summary:
    campaign: Campaign
    counts: dict[str, int]
    failures: list[tuple[str, int]]
    next_retry_at: datetime | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.total - self.counts.get("queued", 0)

    @property
    def duration(self) -> float | None:
        started, finished = self.campaign.started_at, self.campaign.finished_at or utcnow()
        return (finished - started).total_seconds() if started else None

    @property
    def rate(self) -> float | None:
        duration = self.duration
        return self.counts.get("sent", 0) / duration if duration else None


def segment_filter(segment: list[str]):
    """Active subscribers, restricted to those carrying any of the segment's tags."""
    condition = Subscriber.status == "active"
    if segment:
        tagged = select(SubscriberTag.subscriber_id).where(SubscriberTag.tag.in_(segment))
        condition = and_(condition, Subscriber.id.in_(tagged))
    return condition


class CampaignStore:
    def __init__(self, db: Database, claim_lease: float = 300.0):
        self.db = db
        # A claim outlives a batch's sending time (keep it above batch_size x smtp_timeout);
        # when it lapses, the batch is another worker's to take.
        self.claim_lease = timedelta(seconds=claim_lease)

    # -- campaigns -----------------------------------------------------------------------
    def count_recipients(self, segment: list[str]) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.count()).select_from(Subscriber).where(segment_filter(segment)))

    def create(
        self,
        rendered: RenderedIssue,
        segment: list[str],
        adapter: str,
        rate: float,
        scheduled_at: datetime | None = None,
    ) -> tuple[Campaign, int]:
        """Snapshot the issue and queue one delivery per recipient, in one transaction."""
        with self.db.session() as session:
            campaign = Campaign(
                slug=rendered.slug,
                subject=rendered.subject,
                content_hash=rendered.content_hash,
                snapshot=rendered.to_snapshot(),
                segment=segment,
                status="scheduled" if scheduled_at else "running",
                adapter=adapter,
                rate=rate,
                scheduled_at=scheduled_at,
            )
            session.add(campaign)
            session.flush()
            # INSERT ... SELECT: the database copies the segment; nothing is loaded here.
            recipients = (
                select(
                    literal(campaign.id).label("campaign_id"),
                    Subscriber.id,
                    literal("queued").label("status"),
                    literal(0).label("attempts"),
                    literal("").label("provider_id"),
                    literal("").label("error"),
                )
                .where(segment_filter(segment))
                .order_by(Subscriber.id)
            )
            session.execute(
                insert(Delivery).from_select(
                    ["campaign_id", "subscriber_id", "status", "attempts", "provider_id", "error"], recipients
                )
            )
            count = session.scalar(select(func.count()).where(Delivery.campaign_id == campaign.id))
        return campaign, count

    def get(self, campaign_id: int) -> Campaign:
        with self.db.session() as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None:
                raise NotFound(f"no campaign {campaign_id}", hint="run: newsletter campaigns list")
            return campaign

    def latest_for(self, slug: str) -> Campaign | None:
        with self.db.session() as session:
            return session.scalars(
                select(Campaign).where(Campaign.slug == slug).order_by(Campaign.id.desc()).limit(1)
            ).first()

    def list(self) -> list[Campaign]:
        with self.db.session() as session:
            return list(session.scalars(select(Campaign).order_by(Campaign.id.desc())))

    def set_status(self, campaign_id: int, status: str) -> None:
        now = utcnow()
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = func.coalesce(Campaign.started_at, now)
            values["finished_at"] = None
        if status in ("done", "cancelled"):
            values["finished_at"] = now
        with self.db.session() as session:
            session.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))

    def reserve_send_slots(self, campaign_id: int, count: int, rate: float, now: float) -> float:
        """Reserve `count` sends at `rate`/s on the campaign's shared clock; return the
        epoch time the first may go. One atomic UPDATE, so every worker on every machine
        draws from the same budget (their clocks should agree, as NTP makes them)."""
        cost = count / rate
        clock = case((Campaign.rate_clock < now, now), else_=Campaign.rate_clock) + cost
        with self.db.session() as session:
            reserved_until = session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id)
                .values(rate_clock=clock)
                .returning(Campaign.rate_clock)
            ).scalar_one()
        return reserved_until - cost

    def next_runnable(self) -> Campaign | None:
        """A running campaign with work, starting scheduled ones whose time has come."""
        now = utcnow()
        with self.db.session() as session:
            session.execute(
                update(Campaign)
                .where(Campaign.status == "scheduled", Campaign.scheduled_at <= now)
                .values(status="running", started_at=now)
            )
        with self.db.session() as session:
            return session.scalars(
                select(Campaign)
                .where(
                    Campaign.status == "running",
                    select(Delivery.id)
                    .where(Delivery.campaign_id == Campaign.id, Delivery.status == "queued")
                    .exists(),
                )
                .order_by(Campaign.id)
                .limit(1)
            ).first()

    def status(self, campaign_id: int) -> str:
        with self.db.session() as session:
            return session.scalar(select(Campaign.status).where(Campaign.id == campaign_id)) or ""

    # -- deliveries ----------------------------------------------------------------------
    def claim(self, campaign_id: int, worker: str, size: int) -> list[Claimed]:
        """Take up to `size` due deliveries for `worker`; skip readers who left meanwhile."""
        now = utcnow()
        with self.db.session() as session:
            query = (
                select(Delivery.id, Delivery.subscriber_id)
                .where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.status == "queued",
                    or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                    or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
                )
                .order_by(Delivery.id)
                .limit(size)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            candidates = session.execute(query).all()
            if not candidates:
                return []
            # The conditional UPDATE is the claim itself: a row another worker took between
            # our SELECT and this UPDATE is simply not returned.
            taken = set(
                session.scalars(
                    update(Delivery)
                    .where(
                        Delivery.id.in_([row.id for row in candidates]),
                        Delivery.status == "queued",
                        or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
                    )
                    .values(claimed_by=worker, claimed_until=now + self.claim_lease)
                    .returning(Delivery.id)
                )
            )
            subscriber_ids = [row.subscriber_id for row in candidates if row.id in taken and row.subscriber_id]
            people = {
                row.id: row
                for row in session.execute(
                    select(
                        Subscriber.id,
                        Subscriber.email,
                        Subscriber.name,
                        Subscriber.attributes,
                        Subscriber.status,
                        Subscriber.token,
                    ).where(Subscriber.id.in_(subscriber_ids))
                )
            }
            claimed, gone = [], []
            for row in candidates:
                if row.id not in taken:
                    continue
                person = people.get(row.subscriber_id)
                if person is None or person.status != "active":
                    gone.append(row.id)
                else:
                    claimed.append(
                        Claimed(row.id, person.id, person.email, person.name, person.attributes or {}, person.token)
                    )
            if gone:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(gone))
                    .values(
                        status="skipped",
                        error="subscriber left before sending",
                        claimed_by=None,
                        claimed_until=None,
                    )
                )
            return claimed

    def renew(self, delivery_ids: list[int], worker: str) -> None:
        """Extend this worker's claim on deliveries it is still sending (a slow batch must
        not lapse into another worker's hands while it is in flight)."""
        if not delivery_ids:
            return
        with self.db.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(delivery_ids), Delivery.claimed_by == worker, Delivery.status == "queued")
                .values(claimed_until=utcnow() + self.claim_lease)
            )

    def release(self, delivery_ids: list[int]) -> None:
        """Give claimed, unsent deliveries back to the queue (on stop or error)."""
        if not delivery_ids:
            return
        with self.db.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(delivery_ids), Delivery.status == "queued")
                .values(claimed_by=None, claimed_until=None)
            )

    def release_dead_claims(self, campaign_id: int) -> int:
        """Free claims held by crashed processes of this host (remote ones wait for the lease)."""
        host = socket.gethostname()
        released = 0
        with self.db.session() as session:
            holders = session.scalars(
                select(Delivery.claimed_by)
                .where(Delivery.campaign_id == campaign_id, Delivery.claimed_by.is_not(None))
                .distinct()
            ).all()
            for holder in holders:
                holder_host, _, rest = holder.partition(":")
                pid = int(rest.split(":")[0]) if rest.split(":")[0].isdigit() else -1
                if holder_host == host and not _alive(pid):
                    released += session.execute(
                        update(Delivery)
                        .where(Delivery.campaign_id == campaign_id, Delivery.claimed_by == holder)
                        .values(claimed_by=None, claimed_until=None)
                    ).rowcount
        return released

    def record(self, result: Result, campaign_id: int, max_attempts: int, base_delay: float) -> None:
        """Write one result at once: 'sent' is durable the moment the provider accepted."""
        message = result.message
        now = utcnow()
        if result.status == ACCEPTED:  # the common case: one prepared UPDATE, one commit
            with self.db.engine.begin() as connection:
                connection.execute(
                    _MARK_SENT, {"b_id": message.delivery_id, "b_now": now, "b_provider": result.provider_id[:200]}
                )
            return
        with self.db.session() as session:
            delivery = session.get(Delivery, message.delivery_id)
            if delivery is None or delivery.status != "queued":
                return
            delivery.attempts += 1
            delivery.claimed_by = None
            delivery.claimed_until = None
            delivery.error = redact_addresses(result.reason)[:1000]
            if result.status == TRANSIENT and delivery.attempts < max_attempts:
                delay = base_delay * 2 ** (delivery.attempts - 1) * random.uniform(0.5, 1.5)
                delivery.next_attempt_at = now + timedelta(seconds=max(delay, result.retry_after or 0))
                return
            delivery.status = "failed"
            if result.bounce and delivery.subscriber_id:
                subscriber = session.get(Subscriber, delivery.subscriber_id)
                if subscriber is not None and subscriber.status == "active":
                    change_status(
                        session,
                        subscriber,
                        "bounced",
                        f"campaign:{campaign_id}",
                        reason=redact_addresses(result.reason)[:300],
                        campaign_id=campaign_id,
                    )

    def remaining(self, campaign_id: int) -> tuple[int, datetime | None]:
        """(queued deliveries, when the earliest can next be tried)."""
        with self.db.session() as session:
            count, earliest = session.execute(
                select(
                    func.count(),
                    func.min(func.coalesce(Delivery.next_attempt_at, Delivery.claimed_until)),
                ).where(Delivery.campaign_id == campaign_id, Delivery.status == "queued")
            ).one()
        return count, earliest

    def summary(self, campaign_id: int) -> Summary:
        campaign = self.get(campaign_id)
        with self.db.session() as session:
            counts = dict.fromkeys(("queued", "sent", "failed", "skipped"), 0)
            for status, count in session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.campaign_id == campaign_id)
                .group_by(Delivery.status)
            ):
                counts[status] = count
            failures = session.execute(
                select(Delivery.error, func.count())
                .where(Delivery.campaign_id == campaign_id, Delivery.status == "failed")
                .group_by(Delivery.error)
                .order_by(func.count().desc())
                .limit(20)
            ).all()
            next_retry = session.scalar(
                select(func.min(Delivery.next_attempt_at)).where(
                    Delivery.campaign_id == campaign_id, Delivery.status == "queued"
                )
            )
        return Summary(campaign, counts, [(reason, count) for reason, count in failures], next_retry)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody has reaped yet (a zombie) still answers signal 0
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
