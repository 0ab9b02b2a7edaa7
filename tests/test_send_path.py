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


class ConnectionLimit:
    """In front of an SMTP server: at most `limit` sessions at once from us; another is
    refused with 421 at once, as mail servers limit connections per client."""

    def __init__(self, backend_port: int, limit: int):
        import socket
        import threading

        self.backend_port, self.limit = backend_port, limit
        self.active, self.refused = 0, 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                full = self.active >= self.limit
                self.active += not full
                self.refused += full
            if full:
                client.sendall(b"421 4.7.0 Too many connections from your host\r\n")
                client.close()
                continue
            backend = socket.create_connection(("127.0.0.1", self.backend_port))
            threading.Thread(target=self._pipe, args=(client, backend, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(backend, client, False), daemon=True).start()

    def _pipe(self, source, target, counts: bool) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(2)
                except OSError:
                    pass
            if counts:
                with self.lock:
                    self.active -= 1

    def close(self) -> None:
        self.listener.close()


def test_a_pool_larger_than_the_server_allows_goes_on_with_fewer_connections(cli, send_env, monkeypatch):
    """smtp_pool = 4 against a server that takes 2 sessions from one client: the sessions it
    refuses do not pause the campaign; everyone gets one copy over the two it took."""
    readers = [f"r{i}@example.com" for i in range(12)]
    add_subscribers(cli.database_url, readers)
    with SMTPServer() as server:
        limit = ConnectionLimit(server.port, 2)
        try:
            monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{limit.port}")
            monkeypatch.setenv("NEWSLETTER_SMTP_POOL", "4")
            result = cli("send", str(SAMPLE_ISSUE), "--yes")
        finally:
            limit.close()
        assert limit.refused >= 1
        assert server.handler.received_by() == {reader: 1 for reader in readers}
    assert "sent 12," in result.stdout and "[done]" in result.stdout
