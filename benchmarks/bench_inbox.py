"""Feedback mailbox: DSNs applied per second from a Maildir, first run vs the re-run that skips them.

python benchmarks/bench_inbox.py --messages 2000

Sends the sample issue to N subscribers through the outbox adapter (SQLite), writes one
Postfix-style DSN per delivery (VERP envelope, quoted headers) into a Maildir, then times
`Inbox.check` over it, and a second run over the same messages put back as unread (each
one then found in the ledger and skipped).
"""

from __future__ import annotations

import argparse
import email
import mailbox
import os
import shutil
import tempfile
import time
from pathlib import Path
from string import Template

from click.testing import CliRunner
from sqlalchemy import select

from newsletter.cli import main as cli
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.inbox import Inbox
from newsletter.models import Delivery, Subscriber
from newsletter.verp import ReturnPaths

ROOT = Path(__file__).resolve().parent.parent
DSN = ROOT / "tests" / "feedback_mail" / "postfix-dsn.eml"
ENV = {
    "NEWSLETTER_SECRET_KEY": "bench-secret-0123456789",
    "NEWSLETTER_POSTAL_ADDRESS": "1 Main Street",
    "NEWSLETTER_BOUNCE_ADDRESS": "bounces@news.calmharbor.example",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-inbox-"))
    os.chdir(work)
    os.environ.update(ENV)
    (work / "list.csv").write_text(
        "email,name,tags\n" + "".join(f"r{i}@example.com,Reader {i},monthly\n" for i in range(args.messages))
    )
    runner = CliRunner()
    for command in (
        ["init"],
        ["subscribers", "import", "list.csv"],
        ["send", str(ROOT / "issues" / "2026-12-understanding-anxiety.md"), "--yes", "--force"],
    ):
        result = runner.invoke(cli, command, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    settings = load_settings()
    db = Database(settings.database_url)
    paths = ReturnPaths(settings)
    template = Template(DSN.read_text())
    box = mailbox.Maildir(work / "Maildir", create=True)
    with db.session() as session:
        rows = session.execute(
            select(Delivery.id, Subscriber.email).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        ).all()
    for n, (delivery_id, address) in enumerate(rows):
        message_id = f"<bench.{delivery_id}@calmharbor.example>"  # the outbox keeps file names, not Message-IDs
        raw = template.substitute(
            verp=paths.envelope_sender(delivery_id),
            rcpt=address,
            message_id=message_id,
            original_headers=f"Message-ID: {message_id}\nTo: {address}",
            n=f"{n:06d}",
        )
        box.add(email.message_from_string(raw))

    inbox = Inbox(settings, db)
    started = time.perf_counter()
    first = inbox.check(f"maildir:{work / 'Maildir'}")
    first_time = time.perf_counter() - started
    for entry in (work / "Maildir" / "cur").iterdir():  # unread again: only the ledger stops them now
        entry.rename(work / "Maildir" / "new" / entry.name.partition(":2,")[0])
    started = time.perf_counter()
    second = inbox.check(f"maildir:{work / 'Maildir'}")
    second_time = time.perf_counter() - started
    db.dispose()
    shutil.rmtree(work)
    print(f"messages: {len(rows)} DSNs, SQLite")
    print(f"first run  : {first.seen / first_time:8.0f} messages/s, {first.changes['bounced']} bounced")
    print(f"second run : {second.seen / second_time:8.0f} messages/s, {second.applied} changes (all skipped)")


if __name__ == "__main__":
    main()
