"""Enqueue time, send throughput and peak RSS as the list grows.

    python benchmarks/bench_scale.py                       # 10,000 / 100,000 / 1,000,000 on SQLite
    python benchmarks/bench_scale.py --database-url postgresql+psycopg://postgres@127.0.0.1/test

For each size a fresh database is filled with active subscribers (bulk SQL, not timed),
then a child process creates the campaign (INSERT ... SELECT of every recipient, timed)
and sends about `--send-limit` messages (it stops at the first progress report past the
limit) through a null adapter that accepts every message at
once (so the figure is the pipeline's own: claim, personalise, build MIME, record), and
reports its peak RSS. Memory must not grow with the list: nothing loads it whole.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ISSUE = Path(__file__).resolve().parent.parent / "issues" / "2026-12-understanding-anxiety.md"
ENV = {"NEWSLETTER_SECRET_KEY": "bench-secret-key-0123", "NEWSLETTER_POSTAL_ADDRESS": "1 Main St, Springfield"}

CHILD = r"""
import json, resource, sys, time
from newsletter.campaigns import Campaigns, Sender
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.delivery.base import Adapter, accepted
from newsletter.store import CampaignStore

class NullAdapter(Adapter):
    name = "null"
    max_batch = 1000
    def send_batch(self, messages):
        for message in messages:
            message.as_bytes()
            yield accepted(message, "null")

limit = int(sys.argv[2])
settings = load_settings(overrides={"database_url": sys.argv[1], "batch_size": 200})
store = CampaignStore(Database(settings.database_url))
service = Campaigns(settings, store)
issue, rendered = service.prepare(sys.argv[3])
started = time.perf_counter()
campaign, queued = service.create(rendered, [], "outbox", 0.0)
enqueue = time.perf_counter() - started
sender = Sender(settings, store, NullAdapter())
sent = 0
def progress(p):
    global sent
    sent = p.sent
    if sent >= limit:
        sender.request_stop()
sender.progress = progress
started = time.perf_counter()
summary = sender.run(campaign.id)
elapsed = time.perf_counter() - started
sent = summary.counts["sent"]
print(json.dumps({"queued": queued, "enqueue_s": enqueue, "sent": sent, "send_s": elapsed,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def fill(database_url: str, count: int) -> None:
    from sqlalchemy import insert

    from newsletter.db import Database, make_engine, upgrade
    from newsletter.models import Subscriber, utcnow

    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    db = Database(database_url)
    now = utcnow()
    for start in range(0, count, 20_000):
        rows = [
            {
                "email": f"p{i}@example{i % 97}.com",
                "email_key": f"p{i}@example{i % 97}.com",
                "name": f"Reader {i}",
                "status": "active",
                "attributes": {},
                "consent_source": "bench",
                "consent_ip": "",
                "consent_text": "",
                "created_at": now,
                "confirmed_at": now,
            }
            for i in range(start, min(count, start + 20_000))
        ]
        with db.session() as session:
            session.execute(insert(Subscriber), rows)
    db.dispose()


def fresh_postgres(base_url: str, label: str) -> tuple[str, callable]:
    from sqlalchemy import create_engine, text

    schema = f"bench_{label}_{os.getpid()}"
    engine = create_engine(base_url)
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()

    return f"{base_url}?options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--send-limit", type=int, default=20_000)
    parser.add_argument("--database-url", help="PostgreSQL base URL; default: a SQLite file per size")
    args = parser.parse_args()
    print(f"{'subscribers':>12} {'enqueue s':>10} {'enqueue/s':>10} {'sent':>7} {'send msg/s':>11} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            if args.database_url:
                url, cleanup = fresh_postgres(args.database_url, str(size))
            else:
                url, cleanup = f"sqlite:///{Path(tmp) / f'scale-{size}.db'}", (lambda: None)
            try:
                fill(url, size)
                result = subprocess.run(
                    [sys.executable, "-c", CHILD, url, str(args.send_limit), str(ISSUE)],
                    env={**os.environ, **ENV},
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                )
                if result.returncode:
                    raise SystemExit(result.stderr[-2000:])
                r = json.loads(result.stdout.strip().splitlines()[-1])
            finally:
                cleanup()
            print(
                f"{r['queued']:>12,} {r['enqueue_s']:>10.2f} {r['queued'] / r['enqueue_s']:>10,.0f} "
                f"{r['sent']:>7,} {r['sent'] / r['send_s']:>11,.0f} {r['peak_rss_mb']:>12.1f}",
                flush=True,
            )


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"(total {time.time() - started:.0f} s)")
