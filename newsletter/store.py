"""Every query the campaign engine runs, in one place. The sending loop sees only this API.

Fencing: a worker writes a delivery's outcome only while it still holds that delivery's
claim (`claimed_by` is its own id and the row is still queued). An answer that arrives
after the claim passed to another worker is a *late result*: logged, counted on the
campaign (`late_results`, each one possibly a second copy), never recorded as a send.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import aliased

from .addresses import redact_addresses
from .db import Database
from .delivery import ACCEPTED, TRANSIENT, UNKNOWN, Result
from .errors import NotFound
from .models import Campaign, Delivery, Subscriber, SubscriberTag, utcnow
from .render import RenderedIssue
from .subscribers import change_status

log = logging.getLogger("newsletter.campaigns")

OPEN_STATUSES = ("scheduled", "running", "paused")
RECEIVED = ("sent", "unknown")  # the reader has (or may have) the issue
# Claims near the end of a queue (CampaignStore._fair_share).
SHARE_WAYS, SHARE_FLOOR = 4, 20
LATE_NOTE = "answered after this worker's claim had lapsed; nobody else had taken it"

# What check_before_send answers.
SEND, LEFT, LOST, HALTED = "send", "left", "lost", "halted"

# Built once: the per-message hot path should not rebuild (or ORM-synchronise) a statement.
_MARK_SENT = (
    update(Delivery)
    .where(
        Delivery.id == bindparam("b_id"),
        Delivery.status == "queued",
        Delivery.claimed_by == bindparam("b_worker"),
    )
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
_BEFORE_SEND = (
    select(Delivery.status, Delivery.claimed_by, Delivery.claimed_until, Subscriber.status, Campaign.status)
    .select_from(Delivery)
    .join(Campaign, Campaign.id == Delivery.campaign_id)
    .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
    .where(Delivery.id == bindparam("b_id"))
)


def _mark_then_check() -> Any:
    """PostgreSQL: the fenced mark-sent and the next message's check as one statement (the
    UPDATE in a CTE), so an autocommit connection records and checks in one round trip.
    The check reads another row, so seeing the statement's snapshot (taken after the
    previous commit) is exactly what a separate SELECT right after it would see. One row
    always: the count of rows marked (0: the claim is gone), then the check's columns
    (NULL when the next delivery does not exist)."""
    marked = _MARK_SENT.returning(Delivery.id).cte("marked")
    following = aliased(Delivery, name="following")
    anchor = select(literal(1).label("one")).subquery("anchor")
    return (
        select(
            select(func.count()).select_from(marked).scalar_subquery(),
            following.status,
            following.claimed_by,
            following.claimed_until,
            Subscriber.status,
            Campaign.status,
        )
        .select_from(anchor)
        .outerjoin(following, following.id == bindparam("b_next"))
        .outerjoin(Campaign, Campaign.id == following.campaign_id)
        .outerjoin(Subscriber, Subscriber.id == following.subscriber_id)
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
    unknown_reasons: list[tuple[str, int]] = field(default_factory=list)
    transient_failed: int = 0  # failed deliveries `campaigns retry` would requeue
    sent_late: int = 0  # sends recorded from an answer after the claim lapsed (see LATE_NOTE)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.total - self.counts.get("queued", 0)

    @property
    def cancelled(self) -> int:
        """Deliveries a cancel left unsent (still `queued` rows, so a resume can send them)."""
        return self.counts.get("queued", 0) if self.campaign.status == "cancelled" else 0

    @property
    def duration(self) -> float | None:
        """Seconds spent running, pauses left out."""
        campaign = self.campaign
        if not campaign.started_at:
            return None
        seconds = campaign.sending_seconds or 0.0
        if campaign.running_since is not None:
            seconds += max(0.0, (utcnow() - campaign.running_since).total_seconds())
        return seconds

    @property
    def rate(self) -> float | None:
        duration = self.duration
        return self.counts.get("sent", 0) / duration if duration else None


def received_issue(slug: str, subscriber_id, other_than: int | None = None):
    """EXISTS: this subscriber was sent (or may have been sent) this issue in a campaign."""
    other = aliased(Delivery)
    condition = and_(
        other.subscriber_id == subscriber_id,
        other.status.in_(RECEIVED),
        Campaign.id == other.campaign_id,
        Campaign.slug == slug,
    )
    if other_than is not None:
        condition = and_(condition, Campaign.id != other_than)
    return exists().where(condition)


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
        repeat: bool = False,
    ) -> tuple[Campaign, int]:
        """Snapshot the issue and queue one delivery per recipient, in one transaction;
        unless `repeat`, leave out everyone who already received this issue."""
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
                repeat=repeat,
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
            if not repeat:
                recipients = recipients.where(~received_issue(rendered.slug, Subscriber.id))
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
        """Change a campaign's status, keeping count of its sending time without pauses."""
        now = utcnow()
        with self.db.session() as session:
            campaign = session.get(Campaign, campaign_id, with_for_update=self.db.dialect == "postgresql")
            if campaign is None:
                return
            campaign.status = status
            if status == "running":
                campaign.started_at = campaign.started_at or now
                campaign.finished_at = None
                campaign.running_since = campaign.running_since or now
            elif campaign.running_since is not None:
                spell = (now - campaign.running_since).total_seconds()
                campaign.sending_seconds = (campaign.sending_seconds or 0.0) + max(0.0, spell)
                campaign.running_since = None
            if status in ("done", "cancelled"):
                campaign.finished_at = now

    def open_campaigns(self, slug: str) -> list[Campaign]:
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(Campaign)
                    .where(Campaign.slug == slug, Campaign.status.in_(OPEN_STATUSES))
                    .order_by(Campaign.id)
                )
            )

    def campaigns_of(self, slug: str) -> list[Campaign]:
        with self.db.session() as session:
            return list(session.scalars(select(Campaign).where(Campaign.slug == slug).order_by(Campaign.id)))

    def already_received(self, slug: str, segment: list[str]) -> int:
        """Active subscribers of the segment who were sent this issue in any campaign."""
        with self.db.session() as session:
            return session.scalar(
                select(func.count())
                .select_from(Subscriber)
                .where(segment_filter(segment), received_issue(slug, Subscriber.id))
            )

    def skip_already_received(self, campaign: Campaign) -> int:
        """Mark skipped the queued deliveries of readers who received this issue in another
        campaign meanwhile (a cancelled one resumed, say); --again campaigns keep theirs."""
        if campaign.repeat:
            return 0
        with self.db.session() as session:
            return session.execute(
                update(Delivery)
                .where(
                    Delivery.campaign_id == campaign.id,
                    Delivery.status == "queued",
                    received_issue(campaign.slug, Delivery.subscriber_id, other_than=campaign.id),
                )
                .values(status="skipped", error="already received this issue in another campaign")
                .execution_options(synchronize_session=False)
            ).rowcount

    def requeue(self, campaign_id: int, include_unknown: bool) -> tuple[int, int]:
        """Queue again the deliveries that failed for transient reasons (and, on request,
        the unknown ones); returns (transient, unknown) counts requeued."""
        values = {"status": "queued", "attempts": 0, "next_attempt_at": None, "error": "", "failure_kind": ""}
        with self.db.session() as session:
            transient_count = session.execute(
                update(Delivery)
                .where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.status == "failed",
                    Delivery.failure_kind == TRANSIENT,
                )
                .values(**values)
            ).rowcount
            unknown_count = 0
            if include_unknown:
                unknown_count = session.execute(
                    update(Delivery)
                    .where(Delivery.campaign_id == campaign_id, Delivery.status == UNKNOWN)
                    .values(**values)
                ).rowcount
        return transient_count, unknown_count

    def count_late(self, campaign_id: int) -> None:
        with self.db.session() as session:
            session.execute(
                update(Campaign).where(Campaign.id == campaign_id).values(late_results=Campaign.late_results + 1)
            )

    def tags_in_use(self) -> list[str]:
        with self.db.session() as session:
            return list(session.scalars(select(SubscriberTag.tag).distinct().order_by(SubscriberTag.tag)))

    def recipients(self, segment: list[str], slug: str | None = None, limit: int | None = None):
        """(email, name, tags) of who a new campaign would queue, in queue order."""
        with self.db.session() as session:
            query = select(Subscriber).where(segment_filter(segment)).order_by(Subscriber.id)
            if slug is not None:
                query = query.where(~received_issue(slug, Subscriber.id))
            if limit is not None:
                query = query.limit(limit)
            for subscriber in session.scalars(query).yield_per(1000):
                yield subscriber.email, subscriber.name, subscriber.tags

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
    def claim(self, campaign_id: int, worker: str, size: int, share_tail: bool = False) -> list[Claimed]:
        """Take up to `size` due deliveries for `worker`; skip readers who left meanwhile.
        `share_tail`: several workers send this campaign, so split its last batches (a lone
        sender keeps whole batches: an HTTP provider takes them in as few requests as it can)."""
        now = utcnow()
        with self.db.session() as session:
            claimable = (
                Delivery.campaign_id == campaign_id,
                Delivery.status == "queued",
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            )
            query = select(Delivery.id, Delivery.subscriber_id).where(*claimable).order_by(Delivery.id)
            if share_tail:
                size = self._fair_share(session, claimable, size)
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            query = query.limit(size)
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

    @staticmethod
    def _fair_share(session: Any, claimable: tuple[Any, ...], size: int) -> int:
        """Workers share a queue's tail: once fewer than SHARE_WAYS batches are left, a
        claim takes 1/SHARE_WAYS of what is left (at least SHARE_FLOOR), so the last
        deliveries spread over every worker instead of one finishing a whole batch alone
        while the others wait. Counting stops at SHARE_WAYS batches: cheap on any queue."""
        window = select(Delivery.id).where(*claimable).limit(SHARE_WAYS * size).subquery()
        left = session.scalar(select(func.count()).select_from(window))
        if left >= SHARE_WAYS * size:
            return size
        return max(min(size, SHARE_FLOOR), math.ceil(left / SHARE_WAYS))

    def renew(self, delivery_ids: list[int], worker: str) -> int:
        """Extend this worker's claim on deliveries it is still sending (a slow batch must
        not lapse into another worker's hands while it is in flight). Returns how many it
        still held: fewer than asked means the claim is gone and the batch must stop."""
        if not delivery_ids:
            return 0
        now = utcnow()
        with self.db.session() as session:
            return session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.claimed_by == worker,
                    Delivery.status == "queued",
                    Delivery.claimed_until > now,
                )
                .values(claimed_until=now + self.claim_lease)
                .execution_options(synchronize_session=False)
            ).rowcount

    def check_before_send(self, delivery_id: int, worker: str) -> str:
        """Right before a message goes out: SEND; LEFT (the reader unsubscribed, bounced...
        meanwhile); LOST (the claim lapsed or another worker has it); HALTED (the campaign
        was cancelled or paused)."""
        with self.db.engine.connect() as connection:
            row = connection.execute(_BEFORE_SEND, {"b_id": delivery_id}).first()
        return _verdict(row, worker)

    def recorder(self, worker: str, synchronous_commit: bool = False) -> Recorder:
        return Recorder(self.db, worker, synchronous_commit)

    def skip_left(self, delivery_id: int, worker: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.claimed_by == worker, Delivery.status == "queued")
                .values(status="skipped", error="subscriber left before sending", claimed_by=None, claimed_until=None)
            )

    def release(self, delivery_ids: list[int], worker: str) -> None:
        """Give this worker's claimed, unsent deliveries back to the queue (on stop or error)."""
        if not delivery_ids:
            return
        with self.db.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(delivery_ids), Delivery.status == "queued", Delivery.claimed_by == worker)
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

    def record(self, result: Result, campaign_id: int, worker: str, max_attempts: int, base_delay: float) -> bool:
        """Write one result at once ('sent' is durable the moment the provider accepted),
        if this worker still holds the claim; False for a late result (logged and counted)."""
        message = result.message
        now = utcnow()
        if result.status == ACCEPTED:  # the common case: one prepared UPDATE, one commit
            with self.db.engine.begin() as connection:
                marked = connection.execute(
                    _MARK_SENT,
                    {
                        "b_id": message.delivery_id,
                        "b_worker": worker,
                        "b_now": now,
                        "b_provider": result.provider_id[:200],
                    },
                ).rowcount
            if marked:
                return True
        with self.db.session() as session:
            delivery = session.get(Delivery, message.delivery_id)
            if delivery is None:
                return False
            if delivery.status != "queued" or delivery.claimed_by != worker:
                self._late(session, delivery, result, now)
                return False
            delivery.attempts += 1
            delivery.claimed_by = None
            delivery.claimed_until = None
            delivery.error = redact_addresses(result.reason)[:1000]
            if result.status == UNKNOWN:
                delivery.status = UNKNOWN  # may be delivered: never retried without being asked
                return True
            if result.status == TRANSIENT and delivery.attempts < max_attempts:
                delay = base_delay * 2 ** (delivery.attempts - 1) * random.uniform(0.5, 1.5)
                delivery.next_attempt_at = now + timedelta(seconds=max(delay, result.retry_after or 0))
                return True
            delivery.status = "failed"
            delivery.failure_kind = result.status
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
        return True

    def _late(self, session, delivery: Delivery, result: Result, now: datetime) -> None:
        """An answer for a delivery this worker no longer holds. If it was accepted and
        nobody else has the delivery, record the send (so nobody sends it again), noted as
        late; otherwise count it on the campaign: the reader may get a second copy."""
        unclaimed = delivery.claimed_by is None or (delivery.claimed_until is not None and delivery.claimed_until < now)
        if result.status == ACCEPTED and delivery.status == "queued" and unclaimed:
            delivery.status = "sent"
            delivery.sent_at = now
            delivery.provider_id = result.provider_id[:200]
            delivery.attempts += 1
            delivery.error = LATE_NOTE
            delivery.claimed_by = None
            delivery.claimed_until = None
            log.warning("campaign %s delivery %s: %s", delivery.campaign_id, delivery.id, LATE_NOTE)
            return
        session.execute(
            update(Campaign).where(Campaign.id == delivery.campaign_id).values(late_results=Campaign.late_results + 1)
        )
        log.warning(
            "campaign %s delivery %s: an answer (%s) arrived after this worker lost its claim "
            "(delivery now %s); counted as a late result",
            delivery.campaign_id,
            delivery.id,
            result.status,
            delivery.status,
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
            counts = dict.fromkeys(("queued", "sent", "failed", "skipped", "unknown"), 0)
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
            unknown_reasons = session.execute(
                select(Delivery.error, func.count())
                .where(Delivery.campaign_id == campaign_id, Delivery.status == UNKNOWN)
                .group_by(Delivery.error)
                .order_by(func.count().desc())
                .limit(20)
            ).all()
            transient_failed = session.scalar(
                select(func.count()).where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.status == "failed",
                    Delivery.failure_kind == TRANSIENT,
                )
            )
            sent_late = session.scalar(
                select(func.count()).where(
                    Delivery.campaign_id == campaign_id, Delivery.status == "sent", Delivery.error == LATE_NOTE
                )
            )
        return Summary(
            campaign,
            counts,
            [(reason, count) for reason, count in failures],
            next_retry,
            [(reason, count) for reason, count in unknown_reasons],
            transient_failed,
            sent_late,
        )


def _verdict(row: Any, worker: str) -> str:
    """check_before_send's answer from its row (status, holder, until, person, campaign)."""
    if row is None:
        return LOST
    status, holder, until, person, campaign = row
    if status != "queued" or holder != worker or until is None or until <= utcnow():
        return LOST
    if campaign != "running":
        return HALTED
    if person != "active":
        return LEFT
    return SEND


class Recorder:
    """The two statements a sender runs for every message, on a connection of its own per
    thread, through the driver: the check before sending (check_before_send) and the fenced
    mark-sent of an accepted message (record's common case), with its own commit.

    `mark_sent` can take the next message's check along: a one-connection sender then pays
    one round trip per message instead of two, and the check still runs after the previous
    message was recorded, right before this one goes. On PostgreSQL the connection is in
    autocommit mode and the two are one statement (`_mark_then_check`): one round trip in
    all, where BEGIN, UPDATE, SELECT and COMMIT took four (docs/performance.md, "Workers on
    PostgreSQL"); the UPDATE still commits before its answer comes back.

    On PostgreSQL the mark-sent commit does not wait for the disk unless
    `synchronous_commit` (README "Delivery guarantees"): the server has applied the UPDATE
    before answering, so every other session sees the send at once and a crash of the
    sender cannot lose it; only a crash of the database server itself can lose its last
    fraction of a second of commits.
    """

    def __init__(self, db: Database, worker: str, synchronous_commit: bool = False):
        self.db = db
        self.worker = worker
        self.synchronous_commit = synchronous_commit
        self.autocommit = db.dialect == "postgresql"
        dialect = db.engine.dialect
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()
        self._mark = _driver_statement(_MARK_SENT, dialect)
        self._check = _driver_statement(_BEFORE_SEND, dialect)
        self._mark_check = _driver_statement(_mark_then_check(), dialect) if self.autocommit else None
        columns = Delivery.__table__.c  # the driver sees what SQLAlchemy's types would give it
        self._when = columns.sent_at.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
        self._until = columns.claimed_until.type.dialect_impl(dialect).result_processor(dialect, None) or (lambda v: v)

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self.db.engine.raw_connection()
            if self.autocommit:
                connection.dbapi_connection.autocommit = True  # each statement its own transaction
                if not self.synchronous_commit:
                    cursor = connection.cursor()
                    cursor.execute("SET synchronous_commit = off")
                    cursor.close()
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _verdict_of(self, row: Any) -> str:
        """check_before_send's answer from (status, holder, until, person, campaign)."""
        if row is None or row[0] is None:
            return _verdict(None, self.worker)
        return _verdict((row[0], row[1], self._until(row[2]), row[3], row[4]), self.worker)

    def _checked_row(self, cursor: Any, delivery_id: int) -> str:
        sql, params = self._check
        cursor.execute(sql, params({"b_id": delivery_id}))
        return self._verdict_of(cursor.fetchone())

    def check(self, delivery_id: int) -> str:
        connection = self._connection()
        cursor = connection.cursor()
        try:
            return self._checked_row(cursor, delivery_id)
        finally:
            cursor.close()
            if not self.autocommit:
                connection.commit()  # end the read transaction: the next check must see new commits

    def mark_sent(self, delivery_id: int, provider_id: str, check_next: int | None = None) -> tuple[bool, str | None]:
        """(marked, the verdict on `check_next`); not marked: the claim is gone (see record)."""
        connection = self._connection()
        cursor = connection.cursor()
        values = {
            "b_id": delivery_id,
            "b_worker": self.worker,
            "b_now": self._when(utcnow()),
            "b_provider": provider_id[:200],
        }
        try:
            if self._mark_check is not None and check_next is not None:
                sql, params = self._mark_check
                cursor.execute(sql, params({**values, "b_next": check_next}))
                row = cursor.fetchone()
                marked = row[0] == 1
                return marked, (self._verdict_of(row[1:]) if marked else None)
            sql, params = self._mark
            cursor.execute(sql, params(values))
            marked = cursor.rowcount == 1
            verdict = self._checked_row(cursor, check_next) if marked and check_next is not None else None
            if not self.autocommit:
                connection.commit()
        except BaseException:
            if not self.autocommit:
                connection.rollback()
            raise
        finally:
            cursor.close()
        return marked, verdict

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            try:
                if self.autocommit:
                    if not self.synchronous_commit:
                        cursor = connection.cursor()
                        cursor.execute("RESET synchronous_commit")  # only the recorder's commits skip the wait
                        cursor.close()
                    connection.dbapi_connection.autocommit = False  # as the pool handed it out
                connection.close()  # back to the engine's pool
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._local = threading.local()


def _driver_statement(statement: Any, dialect: Any) -> tuple[str, Callable[[dict[str, Any]], Any]]:
    """SQL text for the driver plus a function turning named values into its parameters."""
    compiled = statement.compile(dialect=dialect)
    fixed = dict(compiled.params)  # the statement's literal values (status='sent', ...)
    names = compiled.positiontup
    if compiled.positional and names is not None:
        return str(compiled), lambda values: tuple(values[name] if name in values else fixed[name] for name in names)
    return str(compiled), lambda values: {**fixed, **values}


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
