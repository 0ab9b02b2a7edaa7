"""The subscriber-list commands, end to end through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.db import Database
from newsletter.models import Event, Subscriber


def write_csv(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return str(path)


def statuses(cli) -> dict[str, str]:
    rows = json.loads(cli("subscribers", "list", "--format", "json").stdout)
    return {row["email"]: row["status"] for row in rows}


def test_add_list_and_show(cli):
    cli("subscribers", "add", "Ana@Example.COM", "--name", "Ana", "--tag", "monthly")
    result = cli("subscribers", "list")
    assert "Ana@example.com" in result.stdout
    assert "monthly" in result.stdout
    shown = json.loads(cli("subscribers", "show", "ana@example.com").stdout)
    assert shown["name"] == "Ana"
    assert shown["status"] == "active"
    assert shown["tags"] == ["monthly"]
    assert shown["events"][0]["kind"] == "created"


def test_add_rejects_case_insensitive_duplicate_and_invalid_address(cli):
    cli("subscribers", "add", "ana@example.com")
    result = cli("subscribers", "add", "ANA@example.com", expect=1)
    assert "already on the list" in result.stderr
    result = cli("subscribers", "add", "not-an-address", expect=1)
    assert result.stderr.startswith("Error: invalid email address")
    assert "Traceback" not in result.output


def test_usage_error_exits_2(cli):
    result = cli("subscribers", "add", expect=2)
    assert "Missing argument" in result.stderr


def test_import_reports_each_bad_row_with_line_and_reason(cli, tmp_path):
    rows = (
        b"email,name,tags\n"
        b"good@example.com,Good One,patients\n"
        b"not-an-address,Bad,\n"
        b"GOOD@example.com,Duplicate In Other Case,\n"
        b"\n"
        b"extra@example.com,Too,Many,Columns\n"
        b"latin1@example.com,Jos\xe9,\n"
        b'crlf@example.com,"Mallory\r\nBcc: victim@example.com",\n'
        b"html@example.com,<b>{{ 7*7 }}</b>,\n"
    )
    path = write_csv(tmp_path / "list.csv", rows)
    rejects = tmp_path / "rejects.csv"
    # Forced to UTF-8, the one Latin-1 row is rejected (detection would read the file as cp1252).
    result = cli("subscribers", "import", path, "--rejects", str(rejects), "--encoding", "utf-8")
    assert "added 3, updated 0, unchanged 0, rejected 4." in result.stdout
    assert f"{path}:3: invalid email address" in result.stderr
    assert f"{path}:4: duplicate of line 2" in result.stderr
    assert f"{path}:6: expected 3 fields, found 4" in result.stderr
    assert f"{path}:7: not valid UTF-8; if the file was saved by Excel, try --encoding cp1252" in result.stderr
    # Rejected rows are written back byte for byte, with the reason as a last column.
    assert rejects.read_bytes() == (
        b"email,name,tags,reject_reason\n"
        b"not-an-address,Bad,,invalid email address: An email address must have an @-sign.\n"
        b"GOOD@example.com,Duplicate In Other Case,,duplicate of line 2\n"
        b'extra@example.com,Too,Many,Columns,"expected 3 fields, found 4"\n'
        b'latin1@example.com,Jos\xe9,,"not valid UTF-8; if the file was saved by Excel, try --encoding cp1252"\n'
    )
    shown = json.loads(cli("subscribers", "show", "crlf@example.com").stdout)
    assert "\r" not in shown["name"] and "\n" not in shown["name"]
    assert shown["name"] == "Mallory Bcc: victim@example.com"
    shown = json.loads(cli("subscribers", "show", "html@example.com").stdout)
    assert shown["name"] == "<b>{{ 7*7 }}</b>"


def test_import_dry_run_writes_nothing(cli, tmp_path):
    path = write_csv(tmp_path / "list.csv", "email\na@example.com\nb@example.com\n")
    result = cli("subscribers", "import", path, "--dry-run")
    assert "Dry run: would have added 2" in result.stdout
    assert statuses(cli) == {}


def test_import_never_reactivates(cli, tmp_path):
    for address in ("gone@example.com", "bounce@example.com", "forgot@example.com"):
        cli("subscribers", "add", address)
    cli("subscribers", "unsubscribe", "gone@example.com", "--reason", "asked by phone")
    db = Database(cli.database_url)
    with db.session() as session:
        bounced = session.scalar(select(Subscriber).where(Subscriber.email_key == "bounce@example.com"))
        bounced.status = "bounced"
    cli("subscribers", "forget", "forgot@example.com", "--yes")
    path = write_csv(
        tmp_path / "again.csv",
        "email,name,status\ngone@example.com,Gone,active\nBOUNCE@example.com,B,\nforgot@example.com,F,\n",
    )
    result = cli("subscribers", "import", path, "--status", "active")
    assert "rejected 1" in result.stdout
    assert f"{path}:4: address was erased on request" in result.stderr
    assert statuses(cli) == {"gone@example.com": "unsubscribed", "bounce@example.com": "bounced"}
    result = cli("subscribers", "add", "forgot@example.com", expect=1)
    assert "erased on request" in result.stderr
    db.dispose()


def test_import_mailchimp_and_listmonk_exports(cli, tmp_path):
    mailchimp = write_csv(
        tmp_path / "mailchimp.csv",
        "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CITY,TAGS\n"
        'mc@example.com,Mary,Chimp,2,2024-05-01 10:00:00,203.0.113.9,Boston,"""vip"",""patients"""\n',
    )
    cli("subscribers", "import", mailchimp)
    shown = json.loads(cli("subscribers", "show", "mc@example.com").stdout)
    assert shown["name"] == "Mary Chimp"
    assert shown["tags"] == ["patients", "vip"]
    assert shown["attributes"] == {"city": "Boston"}
    assert shown["consent_ip"] == "203.0.113.9"
    assert shown["consent_at"].startswith("2024-05-01T10:00:00")
    listmonk = write_csv(
        tmp_path / "listmonk.csv",
        "uuid,email,name,attributes,status,created_at,updated_at\n"
        'a1b2,lm@example.com,List Monk,"{""plan"": ""gold""}",blocklisted,2024-01-01,2024-01-02\n'
        "c3d4,ok@example.com,Ok Person,{},enabled,2024-01-01,2024-01-02\n",
    )
    cli("subscribers", "import", listmonk)
    assert statuses(cli) == {
        "mc@example.com": "active",
        "lm@example.com": "unsubscribed",
        "ok@example.com": "active",
    }
    assert json.loads(cli("subscribers", "show", "lm@example.com").stdout)["attributes"] == {"plan": "gold"}


def test_export_round_trips_through_import(cli, tmp_path):
    path = write_csv(
        tmp_path / "in.csv",
        'email,name,tags,city\nzoe@example.com,"Zoë, ""Z"" Ng",a;b,Paris\nyan@example.com,Yan,,\n',
    )
    cli("subscribers", "import", path)
    cli("subscribers", "unsubscribe", "yan@example.com")
    exported = tmp_path / "out.csv"
    cli("subscribers", "export", str(exported))
    before = json.loads(cli("subscribers", "list", "--format", "json").stdout)
    result = cli("subscribers", "import", str(exported))
    assert "added 0, updated 0, unchanged 2, rejected 0." in result.stdout
    assert json.loads(cli("subscribers", "list", "--format", "json").stdout) == before
    # and into an empty list, the same people come back with the same data
    stdout = cli("subscribers", "export").stdout
    assert stdout == exported.read_text(encoding="utf-8")


def test_tag_untag_list_filters_and_stats(cli):
    cli("subscribers", "add", "a@example.com", "--tag", "monthly")
    cli("subscribers", "add", "b@example.com", "--status", "pending")
    assert "monthly, patients" in cli("subscribers", "tag", "a@example.com", "patients").stdout
    cli("subscribers", "tag", "b@example.com", "patients")
    cli("subscribers", "untag", "a@example.com", "monthly")
    listed = cli("subscribers", "list", "--tag", "patients", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(listed)))
    assert [row["email"] for row in rows] == ["a@example.com", "b@example.com"]
    pending = json.loads(cli("subscribers", "list", "--status", "pending", "--format", "json").stdout)
    assert [row["email"] for row in pending] == ["b@example.com"]
    stats = cli("subscribers", "stats").stdout
    assert "Total: 2" in stats
    assert "active        1" in stats and "pending       1" in stats
    assert "patients                 2" in stats


def test_unsubscribe_logs_event_and_is_idempotent(cli):
    cli("subscribers", "add", "a@example.com")
    assert "Unsubscribed." in cli("subscribers", "unsubscribe", "a@example.com", "--reason", "phone").stdout
    assert "nothing changed" in cli("subscribers", "unsubscribe", "a@example.com").stdout
    events = json.loads(cli("subscribers", "show", "a@example.com").stdout)["events"]
    assert [(e["old_status"], e["new_status"], e["reason"]) for e in events] == [
        ("", "active", ""),
        ("active", "unsubscribed", "phone"),
    ]
    result = cli("subscribers", "unsubscribe", "nobody@example.com", expect=1)
    assert result.stderr.strip() == "Error: no subscriber with that address"


def test_forget_erases_personal_data(cli):
    cli("subscribers", "add", "erase.me@example.com", "--name", "Erin")
    cli("subscribers", "forget", "erase.me@example.com", "--yes")
    cli("subscribers", "show", "erase.me@example.com", expect=1)
    db = Database(cli.database_url)
    with db.session() as session:
        assert session.scalars(select(Subscriber)).all() == []
        kinds = [event.kind for event in session.scalars(select(Event))]
        assert kinds == ["created", "forgotten"]
    db.dispose()
    assert "Suppressed (erased): 1" in cli("subscribers", "stats").stdout


@pytest.mark.parametrize("in_child", [False, True], ids=["thread", "child-process"])
def test_interrupted_import_leaves_whole_batches_and_resumes(cli, tmp_path, monkeypatch, in_child):
    from newsletter import importer as importer_module

    monkeypatch.setattr(importer_module, "BATCH_ROWS", 100)
    # Large files are parsed in a child process, small ones on a thread: run both here.
    monkeypatch.setattr(importer_module, "PARSE_IN_CHILD_BYTES", 0 if in_child else 1 << 40)
    rows = "".join(f"p{i}@example.com,Person {i}\n" for i in range(1000))
    path = write_csv(tmp_path / "big.csv", "email,name\n" + rows)
    read = {"bytes": 0}

    def ctrl_c_midway(count):
        read["bytes"] += count
        if read["bytes"] > 12_000:
            raise KeyboardInterrupt

    db = Database(cli.database_url)
    people = importer_module.SubscriberList(db, cli_secret())
    report = importer_module.Importer(people).run(__import__("pathlib").Path(path), progress=ctrl_c_midway)
    assert report.interrupted
    with db.session() as session:
        stored = len(session.scalars(select(Subscriber.id)).all())
    db.dispose()
    assert stored > 0 and stored % 100 == 0  # whole batches only
    assert report.committed_through == stored + 1  # line numbers count the header
    result = cli("subscribers", "import", path)
    assert f"added {1000 - stored}, updated 0, unchanged {stored}, rejected 0." in result.stdout


def test_a_second_interrupt_mid_batch_keeps_exactly_what_the_report_names(cli, tmp_path, monkeypatch):
    """Batches are committed several at a time: an interrupt that lands inside a batch
    (a second Ctrl-C) takes back everything since the last commit, and the report's
    counts and last saved line say exactly what stayed."""
    from newsletter import importer as importer_module

    monkeypatch.setattr(importer_module, "BATCH_ROWS", 100)
    monkeypatch.setattr(importer_module, "COMMIT_ROWS", 300)
    rows = "".join(f"p{i}@example.com,Person {i}\n" for i in range(1000))
    path = write_csv(tmp_path / "big.csv", "email,name\n" + rows)
    inserts = {"count": 0}
    real_insert = importer_module.Importer._insert

    def second_ctrl_c_in_batch_five(self, writer, new_rows):
        inserts["count"] += 1
        if inserts["count"] == 5:
            raise KeyboardInterrupt
        return real_insert(self, writer, new_rows)

    monkeypatch.setattr(importer_module.Importer, "_insert", second_ctrl_c_in_batch_five)
    db = Database(cli.database_url)
    report = importer_module.Importer(importer_module.SubscriberList(db, cli_secret())).run(Path(path))
    with db.session() as session:
        stored = len(session.scalars(select(Subscriber.id)).all())
    db.dispose()
    assert report.interrupted
    assert stored == 300  # the first commit (batches 1-3); batch 4 went back with batch 5
    assert report.added == stored and report.committed_through == stored + 1
    monkeypatch.setattr(importer_module.Importer, "_insert", real_insert)
    result = cli("subscribers", "import", path)
    assert f"added {1000 - stored}, updated 0, unchanged {stored}, rejected 0." in result.stdout


def cli_secret() -> str:
    from .conftest import SECRET

    return SECRET


@pytest.mark.parametrize("in_child", [False, True], ids=["thread", "child-process"])
def test_duplicates_in_later_batches_name_the_first_line(cli, tmp_path, monkeypatch, in_child):
    from newsletter import importer as importer_module

    monkeypatch.setattr(importer_module, "BATCH_ROWS", 2)
    monkeypatch.setattr(importer_module, "PARSE_IN_CHILD_BYTES", 0 if in_child else 1 << 40)
    cli("subscribers", "add", "old@example.com")
    cli("subscribers", "add", "erased@example.com")
    cli("subscribers", "forget", "erased@example.com", "--yes")
    path = write_csv(
        tmp_path / "list.csv",
        "email,name\n"
        "a@example.com,A\n"  # line 2: new
        "old@example.com,Old\n"  # line 3: an existing subscriber, updated
        "erased@example.com,E\n"  # line 4: refused
        "b@example.com,B\n"
        "A@example.com,again\n"  # line 6: a row this import added, two batches back
        "old@example.com,again\n"  # line 7: a row that updated an existing subscriber
        "erased@example.com,again\n"  # line 8
        "b@example.com,again\n",  # line 9
    )
    for dry_run in (("--dry-run",), ()):
        result = cli("subscribers", "import", path, *dry_run)
        assert "added 2, updated 1, unchanged 0, rejected 5." in result.stdout
        assert f"{path}:4: address was erased on request; not imported" in result.stderr
        for line, first in ((6, 2), (7, 3), (8, 4), (9, 5)):
            assert f"{path}:{line}: duplicate of line {first}" in result.stderr
    assert statuses(cli) == {"old@example.com": "active", "a@example.com": "active", "b@example.com": "active"}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_tags_survive_migration_0007_and_leave_with_their_subscriber(tmp_path, kind):
    """0007 rebuilds (SQLite) or loosens (PostgreSQL) subscriber_tags: existing tags stay,
    and forgetting a person still removes their tags, now through the ORM's cascade."""
    from alembic import command
    from sqlalchemy import text

    from newsletter.db import _alembic_config, make_engine
    from newsletter.subscribers import SubscriberList

    from .conftest import _POSTGRES, drop_postgres_schema, postgres_schema_url

    schema = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    elif not _POSTGRES:
        pytest.skip("PostgreSQL is not reachable")
    else:
        url, schema = postgres_schema_url()
    try:
        engine = make_engine(url)
        command.upgrade(_alembic_config(engine), "0006")
        db = Database(url, check_schema=False)
        people = SubscriberList(db, cli_secret())
        people.add("ana@example.com", tags=["monthly", "patients"])
        people.add("ben@example.com", tags=["monthly"])
        command.upgrade(_alembic_config(engine), "head")
        assert people.show("ana@example.com")["tags"] == ["monthly", "patients"]
        people.forget("ben@example.com")
        people.add("cy@example.com", tags=["caregivers"])
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT tag FROM subscriber_tags ORDER BY tag")).scalars().all()
        assert rows == ["caregivers", "monthly", "patients"]
        command.downgrade(_alembic_config(engine), "0006")
        assert people.show("ana@example.com")["tags"] == ["monthly", "patients"]
        db.dispose()
        engine.dispose()
    finally:
        if schema:
            drop_postgres_schema(schema)


def test_import_stores_special_characters_exactly(cli, tmp_path):
    """Bulk writes put values in SQL literals (SQLite) and COPY text (PostgreSQL): quotes,
    backslashes, tabs and COPY's own null marker come back as they were in the file."""
    path = write_csv(
        tmp_path / "o'brien's list.csv",
        'email,name,tags,city\nq@example.com,"O\'Brien \\\\N back\\\\slash",a:b;c d,"\\\\N\ttab"\n',
    )
    assert "added 1," in cli("subscribers", "import", path).stdout
    shown = json.loads(cli("subscribers", "show", "q@example.com").stdout)
    assert shown["name"] == "O'Brien \\\\N back\\\\slash"
    assert shown["attributes"] == {"city": "\\\\N tab"}  # control characters become spaces, as before
    assert shown["tags"] == ["a:b", "c d"]
    assert shown["consent_source"] == "import:o'brien's list.csv"
    assert shown["events"][0]["source"] == "import:o'brien's list.csv"


def _import_in_background(sqlite_url: str, path) -> tuple:
    import os
    import subprocess
    import sys
    import time

    from .helpers import ENV

    env = {**os.environ, **ENV, "NEWSLETTER_DATABASE_URL": sqlite_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "subscribers", "import", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = Database(sqlite_url)
    deadline = time.monotonic() + 60
    while True:  # until the first batches are saved (the file is over 1 MiB: parsed in a child process)
        with db.session() as session:
            if session.scalars(select(Subscriber.id).limit(1)).first() is not None:
                break
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    return process, db


def _children_of(pid: int) -> list[int]:
    from pathlib import Path

    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.parametrize("how", ["SIGTERM", "parser killed"])
def test_a_stopped_import_says_which_lines_were_saved(sqlite_url, workdir, how):
    """SIGTERM stops like Ctrl-C (the batch in hand is finished; exit 130); a parsing process
    killed outright is one line saying so (exit 1). Either way the report names the last
    line saved, and what it names is what the database holds."""
    import os
    import signal
    import sys

    if how == "parser killed" and not sys.platform.startswith("linux"):
        pytest.skip("finds the parsing process through /proc")
    rows = "".join(f"reader{i:06d}@example.com,Reader {i},monthly\n" for i in range(150_000))
    path = write_csv(workdir / "big.csv", "email,name,tags\n" + rows)
    process, db = _import_in_background(sqlite_url, path)
    if how == "SIGTERM":
        process.send_signal(signal.SIGTERM)
    else:
        for child in _children_of(process.pid):
            os.kill(child, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=60)
    with db.session() as session:
        stored = len(session.scalars(select(Subscriber.id)).all())
    db.dispose()
    assert 0 < stored < 150_000 and stored % 2000 == 0, (stored, stderr)  # whole batches only
    assert f"rows through line {stored + 1} were saved" in stderr, stderr
    assert "Traceback" not in stderr
    if how == "SIGTERM":
        assert process.returncode == 130 and "\nInterrupted: rows through line" in stderr, stderr
    else:
        assert process.returncode == 1
        assert "Error: the process reading the file stopped (exit code -9)" in stderr, stderr
