"""What staff see before and around a send: dry runs that show who and how, segment typos,
where proofs went, sending time without pauses."""

from __future__ import annotations

import csv

from newsletter.db import Database
from newsletter.store import CampaignStore

from .helpers import SAMPLE_ISSUE, add_subscribers
from .smtp_server import SMTPServer


def test_dry_run_lists_the_first_twenty_and_writes_all(cli, send_env, monkeypatch, tmp_path):
    addresses = [f"reader{i:02d}@example.com" for i in range(25)]
    add_subscribers(cli.database_url, addresses, tags=("monthly", "patients"))
    add_subscribers(cli.database_url, ["carer@example.com"], tags=("caregivers",))
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "outbox")
    dry = cli("send", str(SAMPLE_ISSUE), "--dry-run").stdout
    assert "would go to 25 recipient(s) (monthly) via outbox: .eml files under outbox/campaign-N/" in dry
    listed = [line for line in dry.splitlines() if line.startswith("reader")]
    assert len(listed) == 20
    assert listed[0].split() == ["reader00@example.com", "Reader", "reader00", "monthly,", "patients"]
    assert "... and 5 more (--output FILE.csv writes them all)" in dry
    assert "carer@example.com" not in dry and "Nothing was sent." in dry
    output = tmp_path / "who.csv"
    written = cli("send", str(SAMPLE_ISSUE), "--dry-run", "--output", str(output)).stdout
    assert f"All 25 recipient(s) written to {output}." in written
    with open(output, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["email"] for row in rows] == addresses
    assert rows[0]["name"] == "Reader reader00" and rows[0]["tags"] == "monthly;patients"
    assert "No campaigns yet" in cli("campaigns", "list").stdout
    cli("send", str(SAMPLE_ISSUE), "--yes", "--queue")
    open_ = cli("send", str(SAMPLE_ISSUE), "--dry-run").stdout
    assert "campaign 1 of this issue is running with 25 deliveries queued; sending would resume it" in open_
    assert not (tmp_path / "work" / "outbox").exists()


def test_dry_run_checks_the_adapter_settings(cli, send_env, monkeypatch):
    add_subscribers(cli.database_url, ["a@example.com"])
    monkeypatch.delenv("NEWSLETTER_SMTP_URL", raising=False)
    missing = cli("send", str(SAMPLE_ISSUE), "--dry-run", "--adapter", "smtp", expect=1)
    assert "setting 'smtp_url' is required for the smtp adapter" in missing.stderr
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp://mail.example.org:587")
    ready = cli("send", str(SAMPLE_ISSUE), "--dry-run", "--adapter", "smtp").stdout
    assert "via smtp: the mail server mail.example.org:587" in ready
    provider = cli("send", str(SAMPLE_ISSUE), "--dry-run", "--adapter", "postmark", expect=1)
    assert "setting 'postmark_token' is required" in provider.stderr
    monkeypatch.setenv("NEWSLETTER_POSTMARK_TOKEN", "token")
    shown = cli("send", str(SAMPLE_ISSUE), "--dry-run", "--adapter", "postmark").stdout
    assert "via postmark: the provider API at https://api.postmarkapp.com" in shown


def test_unknown_segment_tag_lists_the_tags_in_use(cli, send_env):
    add_subscribers(cli.database_url, ["a@example.com"], tags=("monthly",))
    add_subscribers(cli.database_url, ["b@example.com"], tags=("caregivers", "patients"))
    result = cli("send", str(SAMPLE_ISSUE), "--dry-run", "--segment", "caregiver", expect=1)
    assert "Error: no subscriber has the tag 'caregiver'" in result.stderr
    assert "Hint: tags in use (closest first): caregivers, " in result.stderr
    assert "monthly" in result.stderr and "patients" in result.stderr


def test_test_to_says_where_each_proof_went(cli, send_env, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "outbox")
    staff = ("--test-to", "staff@calmharbor.example", "--test-to", "dr@calmharbor.example")
    result = cli("send", str(SAMPLE_ISSUE), *staff)
    lines = [line for line in result.stdout.splitlines() if line.startswith("Proof for")]
    assert len(lines) == 2
    for line in lines:
        path = line.rsplit(": ", 1)[1]
        assert path.startswith("outbox/proofs/") and path.endswith(".eml")
        with open(path, encoding="ascii") as handle:
            assert "Subject: [TEST] " in handle.read()
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_ADAPTER", "smtp")
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        smtp = cli("send", str(SAMPLE_ISSUE), "--test-to", "staff@calmharbor.example").stdout
        assert f"Proof for staff@calmharbor.example: handed to smtp: the mail server 127.0.0.1:{server.port}" in smtp
        assert len(server.handler.messages) == 1


def test_sending_time_leaves_pauses_out(cli, send_env, monkeypatch):
    from datetime import timedelta

    from newsletter.models import Campaign, utcnow

    add_subscribers(cli.database_url, ["a@example.com", "b@example.com"])
    monkeypatch.setenv("NEWSLETTER_ADAPTER", "outbox")
    cli("send", str(SAMPLE_ISSUE), "--yes", "--queue")
    db = Database(cli.database_url)
    store = CampaignStore(db)
    store.set_status(1, "paused")
    with db.session() as session:  # as if it had run 3 s, then sat paused for an hour
        campaign = session.get(Campaign, 1)
        campaign.sending_seconds = 3.0
        campaign.started_at = utcnow() - timedelta(hours=1)
    db.dispose()
    cli("campaigns", "resume", "1")
    shown = cli("campaigns", "show", "1").stdout
    seconds = float(shown.split("sending time ", 1)[1].split("s", 1)[0])
    assert 3.0 <= seconds < 60, shown
