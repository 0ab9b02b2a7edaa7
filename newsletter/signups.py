"""Double opt-in: the signup queue, confirmation emails, and confirming.

A signup form submission only adds a row to `signups` (the same single INSERT whatever
the address's state, so the answer's timing reveals nothing). `newsletter serve` and
`newsletter worker` drain that queue: they decide what the address gets (a confirmation
email for a new, pending or unsubscribed address; nothing for an active, bounced,
complained or erased one) and send it, retrying transient failures with backoff.

The confirmation link carries the signup's own random value, sealed (see tokens.py):
single use (the signup rows of that address are deleted once one is confirmed), expiring
after `confirm_link_days`, and it moves only a signup waiting for confirmation to an
active subscriber. Until then the subscriber's consent record, name and tags are the
old ones: a re-signup (perhaps by someone else) changes nothing before the click.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import delete, select

from .addresses import clean_tag, clean_text, normalize_email, redact_addresses, suppression_hash
from .config import Settings
from .db import Database
from .errors import NewsletterError
from .models import Signup, Subscriber, SubscriberTag, Suppression, utcnow
from .subscribers import change_status, record_event
from .tokens import KEY_BYTES, Tokens

log = logging.getLogger(__name__)
# Where a signup came from decides who may be asked again: the public form never mails
# an address that bounced or complained; the Resubscribe button (a link the person got
# in their own mail) may, since confirming is still their own click.
RESUBSCRIBE_SOURCE = "web:resubscribe"
FORM_MAY_ASK = ("pending", "unsubscribed")
RESUBSCRIBE_MAY_ASK = ("pending", "unsubscribed", "bounced", "complained")


def nonce_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class WaitingSignup:
    """A signup whose confirmation link is valid: what the confirm page shows."""

    email: str
    tags: list[str]


class Signups:
    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.tokens = Tokens(settings.secret_key)
        self.max_age = timedelta(days=settings.confirm_link_days)
        self._env = Environment(
            loader=FileSystemLoader(str(settings.templates_path / "web")),
            autoescape=select_autoescape(("html",)),
        )

    # -- the request path: one insert, whatever the address ------------------------------
    def enqueue(
        self, email: str, name: str, ip: str, consent_text: str, source: str, tags: list[str] | tuple[str, ...] = ()
    ) -> None:
        """Queue a signup (raises DataError for an invalid address)."""
        address, key = normalize_email(email)
        with self.db.session() as session:
            session.add(
                Signup(
                    email=address,
                    email_key=key,
                    name=clean_text(name),
                    tags=sorted({clean_tag(tag) for tag in tags}),
                    consent_at=utcnow(),
                    consent_ip=clean_text(ip, 64),
                    consent_text=clean_text(consent_text, 2000),
                    consent_source=clean_text(source),
                    state="queued",
                    attempts=0,
                    next_attempt_at=utcnow(),
                    error="",
                )
            )

    # -- the queue: serve's background thread and `newsletter worker` --------------------
    def drain(self, limit: int = 50) -> int:
        """Handle the signups that are due; returns how many were handled."""
        claimed, seen = self._claim(limit)
        for signup_id, key in claimed:
            self._deliver(signup_id, key)
        self._purge_expired()
        return seen

    def _claim(self, limit: int) -> tuple[list[tuple[int, str]], int]:
        """Decide each due signup; for those that get an email, give them a fresh link value
        and push their next attempt into the future (so another drainer leaves them alone)."""
        claimed, seen = [], 0
        now = utcnow()
        with self.db.session() as session:
            query = (
                select(Signup)
                .where(Signup.state == "queued", Signup.next_attempt_at <= now)
                .order_by(Signup.id)
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for signup in session.scalars(query).all():
                seen += 1
                if not self._may_ask(session, signup):
                    session.delete(signup)
                    continue
                key = secrets.token_hex(KEY_BYTES)
                signup.nonce_hash = nonce_hash(key)
                signup.attempts += 1
                signup.next_attempt_at = now + timedelta(seconds=self._backoff(signup.attempts))
                claimed.append((signup.id, key))
        return claimed, seen

    def _may_ask(self, session, signup: Signup) -> bool:
        digest = suppression_hash(self.settings.secret_key, signup.email_key)
        if session.get(Suppression, digest) is not None:
            return False  # erased on request: never mailed again
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == signup.email_key))
        if subscriber is None:
            # A new address is on the list as pending from now on (not mailed until confirmed).
            subscriber = Subscriber(
                email=signup.email,
                email_key=signup.email_key,
                name=signup.name,
                status="pending",
                attributes={},
                consent_at=signup.consent_at,
                consent_ip=signup.consent_ip,
                consent_text=signup.consent_text,
                consent_source=signup.consent_source,
                tag_rows=[],
            )
            session.add(subscriber)
            session.flush()
            record_event(session, subscriber.id, "created", "web", new_status="pending")
            return True
        allowed = RESUBSCRIBE_MAY_ASK if signup.consent_source == RESUBSCRIBE_SOURCE else FORM_MAY_ASK
        return subscriber.status in allowed

    def _backoff(self, attempts: int) -> float:
        base = self.settings.retry_base_delay * (2 ** (attempts - 1))
        return min(base, 3600) * (1 + random.random() / 2)

    def _deliver(self, signup_id: int, key: str) -> None:
        with self.db.session() as session:
            signup = session.get(Signup, signup_id)
            if signup is None:
                return
            to_email, to_name, tags = signup.email, signup.name, list(signup.tags or [])
        message = self._message(to_email, to_name, key, tags)
        from .delivery import make_adapter

        try:
            with make_adapter(self.settings, folder="transactional") as adapter:
                result = next(iter(adapter.send([message])))
            status, reason = result.status, result.reason
        except NewsletterError as exc:
            status, reason = "transient", str(exc)
        except OSError as exc:
            status, reason = "transient", f"{type(exc).__name__}: {exc}"
        with self.db.session() as session:
            signup = session.get(Signup, signup_id)
            if signup is None:
                return
            if status == "accepted":
                signup.state, signup.sent_at, signup.error = "sent", utcnow(), ""
                return
            signup.error = redact_addresses(clean_text(reason, 500))
            if status == "permanent" or signup.attempts >= self.settings.max_attempts:
                log.error("confirmation email given up: %s", signup.error)
                session.delete(signup)
            else:
                log.warning("confirmation email will be retried: %s", signup.error)

    def _message(self, email: str, name: str, key: str, tags: list[str]):
        from .message import transactional

        settings = self.settings
        link = f"{settings.base_url.rstrip('/')}/confirm/{self.tokens.make('confirm', key)}"
        context = {
            "link": link,
            "organization": settings.organization,
            "postal_address": settings.postal_address,
            "days": _days(settings.confirm_link_days),
            "tags": self.tags_for(tags),
        }
        return transactional(
            settings,
            email,
            name,
            f"Please confirm your subscription to {settings.organization}",
            self._env.get_template("confirm_email.txt").render(context),
            self._env.get_template("confirm_email.html").render(context),
        )

    def tags_for(self, chosen: list[str]) -> list[str]:
        """What a confirmed signup is tagged with: `signup_tags` plus the topics chosen."""
        return sorted(set(self.settings.signup_tags) | set(chosen))

    def _purge_expired(self) -> None:
        with self.db.session() as session:
            session.execute(delete(Signup).where(Signup.state == "sent", Signup.sent_at < utcnow() - self.max_age))

    # -- the confirmation link -------------------------------------------------------------
    def _waiting(self, session, key: str) -> Signup | None:
        signup = session.scalar(select(Signup).where(Signup.nonce_hash == nonce_hash(key), Signup.state == "sent"))
        if signup is None or signup.sent_at is None or signup.sent_at < utcnow() - self.max_age:
            return None
        return signup

    def waiting(self, key: str) -> WaitingSignup | None:
        """The signup a confirmation link belongs to, if it can still be confirmed."""
        with self.db.session() as session:
            signup = self._waiting(session, key)
            if signup is None:
                return None
            return WaitingSignup(signup.email, self.tags_for(signup.tags or []))

    def confirm(self, key: str) -> Subscriber | None:
        """Confirm: the subscriber becomes active with this signup's consent, name and tags.
        None when the link was used, expired, or the address may not be subscribed."""
        with self.db.session() as session:
            signup = self._waiting(session, key)
            if signup is None:
                return None
            subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == signup.email_key))
            allowed = RESUBSCRIBE_MAY_ASK if signup.consent_source == RESUBSCRIBE_SOURCE else FORM_MAY_ASK
            # Every link of this address is used up, whatever happens next.
            session.execute(delete(Signup).where(Signup.email_key == signup.email_key))
            if subscriber is None or subscriber.status not in allowed:
                return None
            change_status(session, subscriber, "active", "confirm", reason="double opt-in confirmed", opt_in=True)
            subscriber.confirmed_at = utcnow()
            subscriber.consent_at = signup.consent_at
            subscriber.consent_ip = signup.consent_ip
            subscriber.consent_text = signup.consent_text
            subscriber.consent_source = signup.consent_source
            if signup.name:
                subscriber.name = signup.name
            for tag in self.tags_for(signup.tags or []):
                if tag not in subscriber.tags:
                    subscriber.tag_rows.append(SubscriberTag(tag=tag))
            session.flush()
            return subscriber


def _days(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


class SignupQueueRunner:
    """Drains the signup queue in a background thread of `newsletter serve`; `wake()`
    after a signup sends its email at once, and a slow poll picks up retries and rows
    another process queued."""

    def __init__(self, signups: Signups, poll_seconds: float = 5.0):
        self.signups = signups
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="signup-queue", daemon=True)

    def start(self) -> SignupQueueRunner:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                while self.signups.drain() and not self._stop.is_set():
                    pass
            except Exception as exc:  # keep serving pages; the queue is durable, try again later
                log.error("signup queue: %s", redact_addresses(str(exc).splitlines()[0] if str(exc) else repr(exc)))
            self._wake.wait(self.poll_seconds)
