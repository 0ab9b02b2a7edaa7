"""The fast send path keeps the delivery guarantees: each connection records its message
before it starts the next, the records are fenced, and on PostgreSQL only the recorder's
commits skip the wait for the disk."""

from __future__ import annotations

from sqlalchemy import text

from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.delivery.smtp import SMTPAdapter, _Connection
from newsletter.message import Message
from newsletter.store import LEFT, LOST, SEND, CampaignStore

from .helpers import ENV, SAMPLE_ISSUE, add_subscribers
from .smtp_server import SMTPServer


def messages(count: int) -> list[Message]:
    return [
        Message(f"r{i}@example.com", "", "news@example.com", "", "s", "<p>x</p>", "x", f"<{i}@x>", {}, delivery_id=i)
        for i in range(count)
    ]


def test_every_pool_connection_records_before_its_next_message(monkeypatch):
    """A pool keeps a message in flight on every connection at once, and each connection
    records its message before it starts the next."""
    events: list[tuple[str, int, int]] = []  # (what, delivery, connection)
    started_on: dict[int, int] = {}
    original = _Connection.begin

    def begin(self, message):
        started_on[message.delivery_id] = id(self)
        events.append(("start", message.delivery_id, id(self)))
        return original(self, message)

    def record(result):
        delivery = result.message.delivery_id
        events.append(("recorded", delivery, started_on[delivery]))

    monkeypatch.setattr(_Connection, "begin", begin)
    with SMTPServer() as server:
        adapter = SMTPAdapter(server.url, pool=3)
        with adapter:
            results = list(adapter.send(iter(messages(30)), record=record))
        assert len(server.handler.messages) == 30
        assert server.handler.connections == 3
    assert sorted(result.message.delivery_id for result in results) == list(range(30))
    in_flight = most_in_flight = 0
    for what, _, _ in events:
        in_flight += 1 if what == "start" else -1
        most_in_flight = max(most_in_flight, in_flight)
    assert most_in_flight == 3  # the pool did send in parallel
    for connection in {who for _, _, who in events}:
        mine = [(what, delivery) for what, delivery, who in events if who == connection]
        # start 1, recorded 1, start 2, recorded 2, ...: never two starts in a row
        assert [what for what, _ in mine] == ["start", "recorded"] * (len(mine) // 2)
        assert [delivery for _, delivery in mine[::2]] == [delivery for _, delivery in mine[1::2]]


def _campaign(url):
    from newsletter.campaigns import Campaigns

    settings = load_settings(environ={**ENV, "NEWSLETTER_DATABASE_URL": url})
    store = CampaignStore(Database(url))
    service = Campaigns(settings, store)
    _, rendered = service.prepare(SAMPLE_ISSUE)
    campaign, _ = service.create(rendered, [], "outbox", 0.0)
    return store, campaign


def test_recorder_marks_fenced_and_checks_the_next(database_url):
    add_subscribers(database_url, ["a@example.com", "b@example.com", "c@example.com"])
    store, campaign = _campaign(database_url)
    first, second, third = store.claim(campaign.id, "me", 3)
    recorder = store.recorder("me")
    try:
        assert recorder.check(first.delivery_id) == SEND
        assert recorder.mark_sent(first.delivery_id, "id-1", check_next=second.delivery_id) == (True, SEND)
        assert recorder.mark_sent(first.delivery_id, "id-1") == (False, None)  # already sent: not twice
        assert store.recorder("someone else").mark_sent(second.delivery_id, "x") == (False, None)  # not its claim
        other = store.recorder("someone else")
        assert other.mark_sent(second.delivery_id, "x", check_next=third.delivery_id) == (False, None)
        other.close()
        assert store.recorder("someone else").check(second.delivery_id) == LOST
        from newsletter.subscribers import SubscriberList

        SubscriberList(store.db, ENV["NEWSLETTER_SECRET_KEY"]).unsubscribe(third.email, reason="test")
        assert recorder.mark_sent(second.delivery_id, "id-2", check_next=third.delivery_id) == (True, LEFT)
        assert recorder.mark_sent(third.delivery_id, "id-3", check_next=10**9) == (True, LOST)  # no such delivery
    finally:
        recorder.close()
    summary = store.summary(campaign.id)
    assert summary.counts["sent"] == 3
    store.db.dispose()


def test_only_the_recorders_commits_skip_the_disk_wait_on_postgresql(postgres_url):
    db = Database(postgres_url)
    recorder = CampaignStore(db).recorder("me")
    connection = recorder._connection()
    cursor = connection.cursor()
    cursor.execute("SHOW synchronous_commit")
    assert cursor.fetchone()[0] == "off"
    cursor.close()
    recorder.close()
    with db.engine.connect() as other:  # the pooled connection is back to the default
        assert other.execute(text("SHOW synchronous_commit")).scalar() == "on"
    durable = CampaignStore(db).recorder("me", synchronous_commit=True)
    cursor = durable._connection().cursor()
    cursor.execute("SHOW synchronous_commit")
    assert cursor.fetchone()[0] == "on"
    cursor.close()
    durable.close()
    db.dispose()


def test_workers_split_the_queue_tail_and_a_lone_sender_keeps_whole_batches(database_url):
    """Four workers on the last 200 deliveries each get some (none waits while one sends
    them all); `send` alone takes the batch whole, so a provider gets one request for it."""
    add_subscribers(database_url, [f"r{i}@example.com" for i in range(200)])
    store, campaign = _campaign(database_url)
    shares = [store.claim(campaign.id, f"worker-{n}", 200, share_tail=True) for n in range(4)]
    assert [len(share) for share in shares] == [50, 38, 28, 21]  # a quarter of what is left each time
    for n, share in enumerate(shares):
        store.release([row.delivery_id for row in share], f"worker-{n}")
    assert len(store.claim(campaign.id, "send", 200)) == 200
    store.db.dispose()
