"""Workers sharing campaigns through PostgreSQL: exactly once across SIGKILL, a shared rate, schedules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from newsletter.cli import main
from newsletter.db import Database
from newsletter.importer import Importer
from newsletter.models import Delivery, utcnow
from newsletter.subscribers import SubscriberList

from .conftest import SECRET
from .helpers import ENV, SAMPLE_ISSUE
from .smtp_server import SMTPServer, pid_of_peer


@pytest.fixture
def pg_url(postgres_url, workdir):
    return postgres_url


def import_people(url: str, count: int, workdir: Path) -> list[str]:
    addresses = [f"patient{i:05d}@example.com" for i in range(count)]
    csv_file = workdir / "people.csv"
    csv_file.write_text("email,tags\n" + "".join(f"{a},monthly\n" for a in addresses))
    db = Database(url)
    Importer(SubscriberList(db, SECRET)).run(csv_file)
    db.dispose()
    return addresses


def worker_env(url: str, smtp_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **ENV,
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_ADAPTER": "smtp",
        "NEWSLETTER_SMTP_URL": smtp_url,
        "NEWSLETTER_BATCH_SIZE": "25",
        "NEWSLETTER_RETRY_BASE_DELAY": "0.05",
        **extra,
    }


def start_workers(env: dict[str, str], count: int, *args: str) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "newsletter", "worker", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]


def queue(url: str, *args: str) -> str:
    result = CliRunner().invoke(
        main,
        ["--database-url", url, "send", str(SAMPLE_ISSUE), "--yes", "--queue", *args],
        env={**ENV, "NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_ADAPTER": "smtp"},
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_worker_refuses_sqlite(sqlite_url, workdir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    result = CliRunner().invoke(main, ["--database-url", sqlite_url, "worker"])
    assert result.exit_code == 1
    assert "workers need PostgreSQL" in result.stderr and "newsletter send" in result.stderr


@pytest.mark.slow
def test_three_workers_one_killed_every_recipient_once(pg_url, workdir):
    addresses = import_people(pg_url, 5000, workdir)
    with SMTPServer() as server:
        assert "Workers send it" in queue(pg_url)
        workers = start_workers(worker_env(pg_url, server.url), 3, "--exit-when-idle")
        victim = {}

        def kill_one_midway(handler, session):
            # Kill the worker that sent this message while its DATA is unanswered: by SMTP's
            # rules it was not delivered, so its claim must be taken over and re-sent.
            if len(handler.messages) >= 2500 and not victim:
                pid = pid_of_peer(session.peer[1], [w.pid for w in workers])
                if pid:
                    victim["pid"] = pid
                    os.kill(pid, signal.SIGKILL)
                    return "451 4.3.0 sender vanished"
            return None

        server.handler.on_data = kill_one_midway
        for process in workers:
            process.wait(timeout=300)
        received = server.handler.received_by()
        senders = {p.pid: p.returncode for p in workers}
    assert victim and senders[victim["pid"]] == -signal.SIGKILL
    assert sorted(code for pid, code in senders.items() if pid != victim["pid"]) == [0, 0]
    assert set(received) == set(addresses)
    assert max(received.values()) == 1
    db = Database(pg_url)
    with db.session() as session:
        states = session.scalars(select(Delivery.status)).all()
    db.dispose()
    assert states.count("sent") == 5000


def test_shared_rate_limit_across_workers(pg_url, workdir):
    import_people(pg_url, 90, workdir)
    arrivals: list[float] = []
    with SMTPServer() as server:
        server.handler.on_data = lambda handler, session: arrivals.append(time.monotonic()) and None
        queue(pg_url, "--rate", "20/s")
        workers = start_workers(worker_env(pg_url, server.url), 3, "--exit-when-idle")
        for process in workers:
            process.wait(timeout=120)
        assert len(server.handler.messages) == 90
    # 90 messages at 20/s take 4.45 s after the first, whatever the number of workers
    # (three independent limits would take 1.5 s). Tolerance: 15 %.
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 17.0 <= rate <= 23.0, f"measured {rate:.1f} messages/s for a 20/s campaign"


def test_scheduled_send_starts_at_its_time(pg_url, workdir, monkeypatch):
    import_people(pg_url, 5, workdir)
    start_at = (utcnow() + timedelta(seconds=4)).replace(microsecond=0)
    with SMTPServer() as server:
        output = queue(pg_url, "--at", start_at.strftime("%Y-%m-%dT%H:%M:%S%z"))
        assert "to start at" in output
        (process,) = start_workers(worker_env(pg_url, server.url), 1)
        try:
            time.sleep(2)
            assert server.handler.messages == []  # not yet
            wait_for(lambda: len(server.handler.messages) == 5, 20, "the scheduled campaign")
            assert utcnow() >= start_at
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
    assert process.returncode == 0


def test_sigterm_stops_cleanly_and_releases_claims(pg_url, workdir):
    import_people(pg_url, 200, workdir)
    with SMTPServer() as server:
        queue(pg_url, "--rate", "10/s")
        (process,) = start_workers(worker_env(pg_url, server.url), 1)
        wait_for(lambda: len(server.handler.messages) >= 5, 30, "the worker to start sending")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        sent_by_then = len(server.handler.messages)
    assert process.returncode == 0
    db = Database(pg_url)
    with db.session() as session:
        claimed = session.scalars(select(Delivery.id).where(Delivery.claimed_by.is_not(None))).all()
        sent = session.scalars(select(Delivery.id).where(Delivery.status == "sent")).all()
    db.dispose()
    assert claimed == []
    assert len(sent) == sent_by_then < 200
    result = CliRunner().invoke(
        main, ["--database-url", pg_url, "campaigns", "show", "1"], env={"NEWSLETTER_SECRET_KEY": SECRET}
    )
    assert "[running]" in result.stdout  # other workers may carry on; one stopping does not pause it


def test_in_process_worker_threads_share_the_work(pg_url, workdir, monkeypatch):
    from newsletter.config import load_settings
    from newsletter.store import CampaignStore
    from newsletter.worker import Worker

    addresses = import_people(pg_url, 300, workdir)
    with SMTPServer() as server:
        queue(pg_url)
        settings = load_settings(environ=worker_env(pg_url, server.url))
        db = Database(pg_url)
        runner = Worker(settings, CampaignStore(db), concurrency=3, log=lambda line: None)
        thread = threading.Thread(target=runner.run, kwargs={"idle_exit": True})
        thread.start()
        thread.join(timeout=120)
        db.dispose()
        received = server.handler.received_by()
    assert sorted(received) == addresses and max(received.values()) == 1


def test_a_batch_in_flight_keeps_its_claim(database_url, workdir):
    """Renewing extends only the renewing worker's own, still queued, claims."""
    from datetime import timedelta

    from newsletter.store import CampaignStore

    import_people(database_url, 3, workdir)
    queue(database_url)
    db = Database(database_url)
    store = CampaignStore(db, claim_lease=60)
    claimed = store.claim(1, "host:1:a", 3)
    with db.session() as session:
        before = {d.id: d.claimed_until for d in session.scalars(select(Delivery))}
    time.sleep(0.05)
    store.renew([row.delivery_id for row in claimed[:2]], "host:1:a")
    store.renew([claimed[2].delivery_id], "someone-else")
    with db.session() as session:
        after = {d.id: d.claimed_until for d in session.scalars(select(Delivery))}
    db.dispose()
    ids = [row.delivery_id for row in claimed]
    assert after[ids[0]] > before[ids[0]] and after[ids[1]] > before[ids[1]]
    assert after[ids[2]] == before[ids[2]]
    assert after[ids[0]] - utcnow() > timedelta(seconds=55)
