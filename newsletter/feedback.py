"""One neutral feedback event, one function that applies it.

Bounces, complaints and unsubscribes reach us through two doors: provider webhooks
(`web/webhooks.py`) and the feedback mailbox (`inbox/`). Both describe what they saw as a
`Feedback` and hand it to `apply_feedback`, which finds the subscriber (by delivery, by
Message-ID, by subscriber id or by address), changes their status and logs it with its
source. Like listmonk's `models.Bounce`: the doors differ, the room is the same.

Rules:
- bounce (a permanent failure of the address) -> `bounced`, unless they already left;
- soft_bounce (a temporary failure, 4.x.x) is logged; soft bounces for `soft_bounce_limit`
  different campaigns within `soft_bounce_days` -> `bounced` (relays repeat "still delayed"
  warnings for one message daily: those count once);
- complaint -> `complained` (it overrides an unsubscribe or a bounce: it is the stronger signal);
- unsubscribe -> `unsubscribed` (idempotent).
Every bounce and complaint is logged as an event of its own kind with the campaign it
came back for, which is what `campaigns show` counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from .addresses import normalize_email, redact_addresses
from .db import Database
from .errors import DataError
from .models import FINAL_STATUSES, Delivery, Event, Subscriber, utcnow
from .subscribers import SubscriberList, change_status, record_event
from .tokens import TokenData

KINDS = ("bounce", "soft_bounce", "complaint", "unsubscribe")


@dataclass(frozen=True)
class Feedback:
    """What came back about one delivery or subscriber, from whichever door."""

    kind: str  # one of KINDS
    source: str  # event source: "inbox", "mailto", "webhook:postmark", ...
    reason: str = ""
    email: str | None = None
    subscriber_id: int | None = None
    # An unsubscribe link token the message carried: whom it opens is looked up (tokens.py).
    subscriber_link: TokenData | None = None
    campaign_id: int | None = None
    delivery_id: int | None = None
    message_id: str | None = None  # the Message-ID (or provider id) of the message it is about

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown feedback kind {self.kind!r}")


@dataclass(frozen=True)
class SoftBouncePolicy:
    limit: int = 3
    days: int = 30


@dataclass(frozen=True)
class Outcome:
    found: bool  # the subscriber is on the list
    changed: bool  # their status changed
    status: str = ""  # their status afterwards
    campaign_id: int | None = None


def _delivery(session: Session, event: Feedback) -> Delivery | None:
    if event.delivery_id is not None:
        return session.get(Delivery, event.delivery_id)
    if event.message_id:
        return session.scalar(select(Delivery).where(Delivery.provider_id == event.message_id[:200]).limit(1))
    return None


def _subscriber(session: Session, event: Feedback) -> tuple[Subscriber | None, int | None]:
    """(subscriber, campaign id) for an event, from its most precise handle."""
    campaign_id = event.campaign_id
    delivery = _delivery(session, event)
    if delivery is not None:
        campaign_id = campaign_id or delivery.campaign_id
        if delivery.subscriber_id is not None:
            return session.get(Subscriber, delivery.subscriber_id), campaign_id
    if event.subscriber_id is not None:
        subscriber = session.get(Subscriber, event.subscriber_id)
        if subscriber is not None:
            return subscriber, campaign_id
    if event.subscriber_link is not None:
        subscriber = SubscriberList.by_link(session, event.subscriber_link)
        if subscriber is not None:
            return subscriber, campaign_id
    if event.email:
        try:
            _, key = normalize_email(event.email)
        except DataError:
            return None, campaign_id
        return session.scalar(select(Subscriber).where(Subscriber.email_key == key)), campaign_id
    return None, campaign_id


def apply_feedback(session: Session, event: Feedback, policy: SoftBouncePolicy = SoftBouncePolicy()) -> Outcome:
    """Apply one event inside the caller's transaction."""
    subscriber, campaign_id = _subscriber(session, event)
    if subscriber is None:
        return Outcome(False, False, campaign_id=campaign_id)
    reason = redact_addresses(event.reason, subscriber.email)[:300]
    source = event.source[:40]
    if event.kind == "unsubscribe":
        changed = False
        if subscriber.status not in FINAL_STATUSES:
            changed = change_status(session, subscriber, "unsubscribed", source, reason, campaign_id)
        return Outcome(True, changed, subscriber.status, campaign_id)

    record_event(session, subscriber.id, event.kind, source, reason=reason, campaign_id=campaign_id)
    changed = False
    if event.kind == "complaint":
        if subscriber.status != "complained":
            changed = change_status(session, subscriber, "complained", source, reason, campaign_id)
    elif subscriber.status not in FINAL_STATUSES:
        if event.kind == "bounce":
            changed = change_status(session, subscriber, "bounced", source, reason, campaign_id)
        else:
            session.flush()
            since = utcnow() - timedelta(days=policy.days)
            # Distinct campaigns (a soft bounce without one counts on its own).
            soft = session.scalar(
                select(func.count(func.distinct(func.coalesce(Event.campaign_id, -Event.id)))).where(
                    Event.subscriber_id == subscriber.id, Event.kind == "soft_bounce", Event.at >= since
                )
            )
            if soft >= policy.limit:
                why = f"temporary failures for {soft} campaigns in {policy.days} days; last: {reason}"
                changed = change_status(session, subscriber, "bounced", source, why, campaign_id)
    return Outcome(True, changed, subscriber.status, campaign_id)


class FeedbackLog:
    """The library API over apply_feedback: one transaction per event, and per-campaign counts."""

    def __init__(self, db: Database, policy: SoftBouncePolicy = SoftBouncePolicy()):
        self.db = db
        self.policy = policy

    def apply(self, event: Feedback) -> Outcome:
        with self.db.session() as session:
            return apply_feedback(session, event, self.policy)

    def counts_for_campaign(self, campaign_id: int) -> dict[str, int]:
        """Bounces, soft bounces, complaints and unsubscribes that came back for a campaign."""
        counts = dict.fromkeys(("bounce", "soft_bounce", "complaint", "unsubscribe"), 0)
        with self.db.session() as session:
            rows = session.execute(
                select(Event.kind, func.count())
                .where(
                    Event.campaign_id == campaign_id,
                    or_(
                        Event.kind.in_(("bounce", "soft_bounce", "complaint")),
                        and_(Event.kind == "status", Event.new_status == "unsubscribed"),
                    ),
                )
                .group_by(Event.kind)
            ).all()
        for kind, count in rows:
            counts["unsubscribe" if kind == "status" else kind] = count
        return counts


_LABELS = {"bounce": "bounce", "soft_bounce": "soft bounce", "complaint": "complaint", "unsubscribe": "unsubscribe"}


def describe_counts(counts: dict[str, int]) -> str:
    """'4 bounces, 1 complaint' (kinds with none left out)."""
    parts = [f"{count} {_LABELS[kind]}{'s' if count != 1 else ''}" for kind, count in counts.items() if count]
    return ", ".join(parts) or "no bounces, complaints or unsubscribes yet"
