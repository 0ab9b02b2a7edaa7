"""Small helpers shared by tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sqlalchemy import select

from newsletter.db import Database
from newsletter.models import Delivery, Subscriber
from newsletter.subscribers import SubscriberList

ISSUES = Path(__file__).resolve().parent.parent / "issues"
SAMPLE_ISSUE = ISSUES / "2026-12-understanding-anxiety.md"
SAMPLE_ISSUES = sorted(ISSUES.glob("*.md"))


def write_issue(directory: Path, body: str, front: str | None = None, name: str = "test-issue") -> Path:
    front = front if front is not None else 'subject: "A calm subject"\npreheader: "A preview line"\n'
    path = directory / f"{name}.md"
    path.write_text(f"---\n{front}---\n{textwrap.dedent(body)}", encoding="utf-8")
    return path


POSTAL = "Calm Harbor Clinic, 100 Example Street, Springfield, IL 62701"
# Settings every rendering test needs, passed as the environment layer. A real send
# refuses a base_url readers cannot reach, hence a public-looking https:// one.
ENV = {
    "NEWSLETTER_SECRET_KEY": "test-secret-0123456789abcdef",
    "NEWSLETTER_POSTAL_ADDRESS": POSTAL,
    "NEWSLETTER_BASE_URL": "https://news.calmharbor.example",
}


def add_subscribers(database_url, addresses, tags=("monthly",)):
    db = Database(database_url)
    people = SubscriberList(db, ENV["NEWSLETTER_SECRET_KEY"])
    for address in addresses:
        people.add(address, name=f"Reader {address.split('@')[0]}", tags=tags)
    db.dispose()


def delivery_states(database_url) -> dict[str, str]:
    db = Database(database_url)
    with db.session() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        ).all()
    db.dispose()
    return dict(rows)


def subscriber_status(database_url, address) -> str:
    db = Database(database_url)
    with db.session() as session:
        status = session.scalar(select(Subscriber.status).where(Subscriber.email_key == address))
    db.dispose()
    return status


def address_for_link(database_url, purpose: str, token: str) -> str | None:
    """Whom a link token opens (links carry a random per-subscriber value, not the id)."""
    from newsletter.tokens import Tokens

    data = Tokens(ENV["NEWSLETTER_SECRET_KEY"]).read(purpose, token)
    db = Database(database_url)
    with db.session() as session:
        subscriber = SubscriberList.by_link(session, data)
        address = subscriber.email if subscriber else None
    db.dispose()
    return address
