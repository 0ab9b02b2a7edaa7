"""Every lint rule, made to fire; the sample issues lint clean."""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.lint import Linter

from .conftest import ROOT
from .helpers import ENV, SAMPLE_ISSUES, write_issue


def lint(path, **overrides):
    settings = load_settings(environ=ENV, overrides=overrides)
    return Linter(settings).lint(path)


def rules(findings, severity="error"):
    return {finding.rule for finding in findings if finding.severity == severity}


@pytest.fixture
def templates(tmp_path):
    """A private copy of the bundled templates, to break on purpose."""
    target = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", target)
    return target


@pytest.mark.parametrize("path", SAMPLE_ISSUES, ids=lambda p: p.stem)
def test_sample_issues_lint_clean(path, workdir):
    assert lint(path) == []


def test_cli_exit_codes(workdir, tmp_path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    ok = runner.invoke(main, ["lint", str(SAMPLE_ISSUES[0])])
    assert ok.exit_code == 0 and "OK: no errors" in ok.stdout
    bad = write_issue(tmp_path, "Call 1-800-273-TALK. [Subscribe Now]\n")
    result = runner.invoke(main, ["lint", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:5: error: outdated crisis number" in result.stdout
    assert f"{bad}:5: error: leftover placeholder '[Subscribe Now]'" in result.stdout
    assert "2 error(s)" in result.stderr


def test_subject_and_preheader_rules(tmp_path):
    assert "subject" in rules(lint(write_issue(tmp_path, "Hello\n", front='preheader: "p"\n')))
    long_subject = "A" + "a" * 90
    findings = lint(write_issue(tmp_path, "Hello\n", front=f'subject: "{long_subject}"\npreheader: "p"\n'))
    assert "subject-length" in rules(findings, "warning")
    findings = lint(write_issue(tmp_path, "Hello\n", front='subject: "FREE KETAMINE NOW"\npreheader: "p"\n'))
    assert "subject-caps" in rules(findings, "warning")
    findings = lint(write_issue(tmp_path, "Hello\n", front='subject: "Fine"\n'))
    assert "preheader" in rules(findings, "warning")
    assert rules(findings) == set()


def test_image_rules(tmp_path):
    path = write_issue(tmp_path, "![](https://cdn.example.com/a.png)\n\n![A room](images/room.png)\n")
    findings = lint(path)
    by_rule = {f.rule: f for f in findings}
    assert by_rule["image-alt"].location == f"{path}:5"
    assert by_rule["image-url"].location == f"{path}:7"


def test_size_rule(tmp_path):
    paragraph = "Anxiety is a normal part of life and a natural response to stress. " * 20
    path = write_issue(tmp_path, "\n\n".join([paragraph] * 90) + "\n")
    assert "size" in rules(lint(path))


def test_missing_postal_address(tmp_path):
    path = write_issue(tmp_path, "Hello\n")
    findings = lint(path, postal_address=" ")
    assert any(f.rule == "footer" and "postal_address is not set" in f.message for f in findings)


def test_template_without_unsubscribe_link(tmp_path, templates):
    layout = templates / "email" / "newsletter.html"
    layout.write_text(layout.read_text().replace('<a href="{{ personal.unsubscribe_url }}">Unsubscribe</a>', ""))
    findings = lint(write_issue(tmp_path, "Hello\n"), templates_dir=str(templates))
    assert any(f.rule == "footer" and "unsubscribe" in f.message for f in findings)


def test_story_without_disclaimer(tmp_path, templates):
    story = templates / "email" / "blocks" / "story.html"
    story.write_text(story.read_text().replace('<p class="disclaimer">{{ disclaimer }}</p>', ""))
    path = write_issue(tmp_path, "::: story\nname: S\nheadline: H\n\nIt helped.\n:::\n")
    findings = lint(path, templates_dir=str(templates))
    assert [(f.rule, f.location) for f in findings] == [("disclaimer", f"{path}:5")]


def test_missing_crisis_resources(tmp_path, templates):
    layout = templates / "email" / "newsletter.html"
    layout.write_text(layout.read_text().replace('{% include "blocks/crisis.html" %}', ""))
    findings = lint(write_issue(tmp_path, "Hello\n"), templates_dir=str(templates))
    assert rules(findings) == {"crisis-resources"}


def test_outdated_crisis_number(tmp_path):
    findings = lint(write_issue(tmp_path, "Hello\n\nCall (800) 273-8255 any time.\n"))
    assert [(f.rule, f.location.rsplit(":", 1)[1]) for f in findings] == [("crisis-number", "7")]


def test_unresolved_variable(tmp_path):
    path = write_issue(tmp_path, "Hello\n\nNews for {{ subscriber.attributes.city }}.\n")
    findings = lint(path)
    assert [f.location for f in findings if f.rule == "variables"] == [f"{path}:7"]
    assert "default" in findings[0].message
    with_default = write_issue(tmp_path, "News for {{ subscriber.attributes.city | default('you') }}.\n", name="ok")
    assert lint(with_default) == []


def test_placeholders(tmp_path):
    path = write_issue(tmp_path, "Join us. [Contact Us Today]\n\nA [real link](https://nami.org) is fine.\n")
    findings = lint(path)
    assert [(f.rule, f.message) for f in findings] == [("placeholder", "leftover placeholder '[Contact Us Today]'")]


def test_broken_template_is_reported_with_location(tmp_path, templates):
    (templates / "email" / "blocks" / "tips.html").write_text("<tr><td>{{ block.fields.title }\n</td></tr>\n")
    path = write_issue(tmp_path, "::: tips\ntitle: T\n\n- one\n:::\n")
    findings = lint(path, templates_dir=str(templates))
    assert len(findings) == 1
    assert findings[0].location.endswith("blocks/tips.html:1")


@pytest.mark.parametrize("link", ["www.nami.org", "javascript:alert(1)", "https://", "mailto:nobody"])
def test_malformed_links(tmp_path, link):
    path = write_issue(tmp_path, f"See [this]({link}).\n")
    findings = lint(path)
    assert [(f.rule, f.location) for f in findings] == [("link", f"{path}:5")]


class _Links(BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802
        self.send_response(200 if self.path == "/ok" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_check_links_requests_each_url(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Links)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        path = write_issue(tmp_path, f"[fine]({base}/ok)\n\n[gone]({base}/gone)\n")
        settings = load_settings(environ=ENV)
        findings = Linter(settings, check_links=True, link_timeout=5).lint(path)
    finally:
        server.shutdown()
    assert [(f.rule, f.location, f.message) for f in findings] == [
        ("link-check", f"{path}:7", f"link answers 404: {base}/gone")
    ]
