"""CPU time per message of the sending loop, against the raw smtplib loop, one process.

    python benchmarks/cpu_per_message.py --messages 2000 --pool 1
    python benchmarks/cpu_per_message.py --messages 2000 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

Wall-clock rates on a shared machine move with everyone else's load; the CPU time this
process spends (all its threads, `time.process_time`) per message does much less. The
raw loop pushes pre-built bytes through smtplib (`sendmail`, one connection); the sending
loop is `Sender.run` (claim, check, compose, serialise, send, record) of a campaign of
`--messages` readers in SQLite, start-up left out. Both talk to Postfix's smtp-sink.
Where the platform forks, composing and serialising run in a second process: its CPU
is shown in a column of its own (the sending process's column is what one core must
keep up with; the sum is the whole cost).
With --postgres the loop runs on PostgreSQL, as a worker's does, and the CPU its
database backends spent in the loop is shown too (the server must run on this machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import smtplib
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import fresh_postgres  # noqa: E402
from bench_wire import ENV, ISSUE, one_message, start_smtp_sink  # noqa: E402


def raw(port: int, data: bytes, count: int) -> tuple[float, float]:
    client = smtplib.SMTP("127.0.0.1", port)
    client.ehlo()
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(count):
        client.sendmail("newsletter@calmharbor.example", [f"p{index}@example.com"], data)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    client.quit()
    return cpu / count, wall / count


def backend_cpu(db, name: str) -> float:
    """CPU seconds used so far by this process's PostgreSQL backends (a server on this
    machine: read from /proc), found by the application_name their connections carry."""
    from sqlalchemy import text

    with db.engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": name}
        ).scalars()
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def sending_loop(
    port: int, count: int, pool: int, folder: Path, postgres: str | None = None, compose_process: bool = True
) -> tuple[float, ...]:
    """(CPU s/message of this process, wall s/message, CPU s/message of the PostgreSQL backends)."""
    from sqlalchemy import insert

    from newsletter.campaigns import Campaigns
    from newsletter.config import load_settings
    from newsletter.db import Database, make_engine, upgrade
    from newsletter.models import Subscriber, utcnow
    from newsletter.store import CampaignStore

    drop = None
    if postgres:
        url, drop = fresh_postgres(postgres, "cpu")
        url += f"&application_name=cpu_per_message_{os.getpid()}"
    else:
        url = f"sqlite:///{folder / 'cpu.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    environ = {
        **ENV,
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "NEWSLETTER_SMTP_POOL": str(pool),
    }
    settings = load_settings(environ=environ)
    db = Database(url)
    now = utcnow()
    people = [
        {
            "email": f"p{i}@example.com",
            "email_key": f"p{i}@example.com",
            "name": f"Reader {i}",
            "status": "active",
            "attributes": {},
            "consent_source": "bench",
            "consent_ip": "",
            "consent_text": "",
            "created_at": now,
            "confirmed_at": now,
        }
        for i in range(count)
    ]
    with db.session() as session:
        session.execute(insert(Subscriber), people)
    service = Campaigns(settings, CampaignStore(db))
    _, rendered = service.prepare(ISSUE)
    campaign, _ = service.create(rendered, [], "outbox", 0.0)  # created as outbox: no sign-off needed
    sender = service.sender(campaign, adapter_name="smtp")
    sender.use_compose_process = compose_process
    name = f"cpu_per_message_{os.getpid()}"
    server = backend_cpu(db, name) if postgres else 0.0
    children, cpu, wall = _children_cpu(), time.process_time(), time.perf_counter()
    summary = sender.run(campaign.id)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    children = _children_cpu() - children  # the compose process, waited for when the run ends
    server = backend_cpu(db, name) - server if postgres else 0.0  # the pool keeps its connections open
    assert summary.counts["sent"] == count, summary.counts
    db.dispose()
    if drop:
        drop()
    return cpu / count, children / count, wall / count, server / count


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=1)
    parser.add_argument(
        "--in-process", action="store_true", help="compose in the sending process (as a worker among as many as cores)"
    )
    parser.add_argument(
        "--postgres", help="PostgreSQL base URL: run the loop there (what a worker runs) instead of SQLite"
    )
    args = parser.parse_args()
    sink, port = start_smtp_sink()
    try:
        raw_cpu, raw_wall = raw(port, one_message(), args.messages)
        with tempfile.TemporaryDirectory() as tmp:
            cpu, compose_cpu, wall, server = sending_loop(
                port, args.messages, args.pool, Path(tmp), args.postgres, compose_process=not args.in_process
            )
    finally:
        sink.kill()
        sink.wait()
    where = "PostgreSQL" if args.postgres else "SQLite"
    print(
        "| loop | CPU us/message, sending process | compose process | wall us/message | database server CPU |\n"
        "|---|---:|---:|---:|---:|"
    )
    print(f"| raw smtplib, 1 connection | {raw_cpu * 1e6:.0f} | - | {raw_wall * 1e6:.0f} | |")
    shown = f"{server * 1e6:.0f}" if args.postgres else ""
    print(
        f"| Sender.run, smtp_pool = {args.pool}, {where} | {cpu * 1e6:.0f} | {compose_cpu * 1e6:.0f} "
        f"| {wall * 1e6:.0f} | {shown} |"
    )


if __name__ == "__main__":
    main()
