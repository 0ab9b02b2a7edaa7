"""Clinical sign-off: `issues approve`, and a real send refusing what nobody approved."""

from __future__ import annotations

import re

from newsletter.content import content_hash, load_issue
from newsletter.review import approve

from .helpers import SAMPLE_ISSUE, add_subscribers, write_issue
from .smtp_server import SMTPServer


def unreviewed_copy(directory):
    """The first sample issue without its sample sign-off."""
    path = directory / "unreviewed.md"
    path.write_text(re.sub(r"(?m)^reviewed_\w+:.*\n", "", SAMPLE_ISSUE.read_text(encoding="utf-8")))
    return path


def test_approve_writes_who_when_and_hash(tmp_path):
    path = unreviewed_copy(tmp_path)
    before = path.read_text()
    review = approve(path, "  Dr. Ana   Ruiz, MD ")
    after = path.read_text()
    assert review["by"] == "Dr. Ana Ruiz, MD" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", review["on"])
    assert review["hash"] == content_hash(before) == content_hash(after)
    issue = load_issue(path)
    assert issue.review == review and issue.content_hash == review["hash"]
    # only the three lines were added, inside the front matter; the rest is untouched
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert [line.split(":")[0] for line in added] == ["reviewed_by", "reviewed_on", "reviewed_hash"]
    assert after.replace("".join(f"{line}\n" for line in added), "") == before
    approve(path, "Dr. Ben Cho")  # a second approval replaces the first
    assert load_issue(path).review["by"] == "Dr. Ben Cho"
    assert path.read_text().count("reviewed_by:") == 1


def test_real_send_needs_a_sign_off_of_this_version(cli, send_env, monkeypatch, tmp_path):
    add_subscribers(cli.database_url, ["a@example.com", "b@example.com"])
    path = unreviewed_copy(tmp_path)
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        refused = cli("send", str(path), "--yes", "--force", expect=1)
        assert "has no clinical sign-off; a real send needs one" in refused.stderr
        assert f'newsletter issues approve {path} --by "NAME"' in refused.stderr  # the path as given
        assert server.handler.messages == []

        approved = cli("issues", "approve", str(path), "--by", "Dr. Ana Ruiz")
        assert "Approved" in approved.stdout
        path.write_text(path.read_text().replace("Anxiety is a normal part", "Anxiety is a common part"))
        changed = cli("send", str(path), "--yes", expect=1)
        assert "changed since Dr. Ana Ruiz approved it" in changed.stderr
        assert server.handler.messages == []

        cli("issues", "approve", str(path), "--by", "Dr. Ana Ruiz")
        sent = cli("send", str(path), "--yes")
        assert "sent 2, failed 0" in sent.stdout
        assert len(server.handler.messages) == 2
    shown = cli("campaigns", "show", "1").stdout
    version = load_issue(path).content_hash[:12]
    assert "reviewed by Dr. Ana Ruiz on " in shown and f"version {version}: the version sent" in shown


def test_outbox_and_proofs_need_no_sign_off(cli, send_env, monkeypatch, tmp_path):
    add_subscribers(cli.database_url, ["a@example.com"])
    path = unreviewed_copy(tmp_path)
    with SMTPServer() as server:  # a proof goes to staff, who may be the reviewers
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        cli("send", str(path), "--test-to", "clinician@clinic.example")
        assert len(server.handler.messages) == 1
    result = cli("send", str(path), "--yes", "--adapter", "outbox")
    assert "sent 1, failed 0" in result.stdout
    assert "not clinically reviewed" in cli("campaigns", "show", "1").stdout


def test_issues_list_shows_the_sign_off_state(cli, send_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_ISSUES_DIR", str(tmp_path))
    path = unreviewed_copy(tmp_path)
    assert " unreviewed " in cli("issues", "list").stdout
    cli("issues", "approve", "unreviewed", "--by", "Dr. Ana Ruiz")
    assert " approved " in cli("issues", "list").stdout
    path.write_text(path.read_text() + "\nOne more line.\n")
    assert " changed " in cli("issues", "list").stdout


def test_approve_refuses_an_issue_with_lint_errors_unless_forced(cli, send_env, tmp_path):
    path = write_issue(tmp_path, "Ketamine is a cure for anxiety. [Book Now]\n")
    before = path.read_text()
    refused = cli("issues", "approve", str(path), "--by", "Dr. Ana Ruiz", expect=1)
    assert f"{path}:5: not approved: 2 lint error(s)" in refused.stderr
    assert f"run: newsletter lint {path}" in refused.stderr and "--force" in refused.stderr
    assert path.read_text() == before and load_issue(path).review is None
    forced = cli("issues", "approve", str(path), "--by", "Dr. Ana Ruiz", "--force")
    assert "Approved" in forced.stdout and load_issue(path).review["by"] == "Dr. Ana Ruiz"


def test_refusal_hints_repeat_a_slug_as_given(cli, send_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_ISSUES_DIR", str(tmp_path))
    write_issue(tmp_path, "Ketamine is a cure for anxiety.\n", name="s1")
    refused = cli("issues", "approve", "s1", "--by", "Dr. Ana Ruiz", expect=1)
    assert "run: newsletter lint s1;" in refused.stderr
    unreviewed_copy(tmp_path)
    add_subscribers(cli.database_url, ["a@example.com"])
    refused = cli("send", "unreviewed", "--yes", "--adapter", "smtp", expect=1)
    assert 'newsletter issues approve unreviewed --by "NAME"' in refused.stderr
