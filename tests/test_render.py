"""Rendering: inline once, personalise safely, produce valid HTML and readable text."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.request

import html5lib
import lxml.html
import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.errors import ContentError
from newsletter.preview import PreviewServer
from newsletter.render import Recipient, Renderer
from newsletter.tokens import Tokens

from .conftest import ROOT
from .helpers import ENV, SAMPLE_ISSUE, SAMPLE_ISSUES, write_issue

HOSTILE = [
    Recipient(1, "ana@example.com", "Ana López", {"city": "Springfield"}),
    Recipient(2, "mallory@example.com", "{{7*7}}<script>alert(\"x\")</script> & 'quoted'", {}),
    Recipient(3, "nobody@example.com", "", {}),
]


@pytest.fixture
def renderer():
    return Renderer(load_settings(environ=ENV))


def personalise(renderer, issue_path, recipient):
    issue = load_issue(issue_path)
    rendered = renderer.render(issue)
    fields = renderer.personal_fields(recipient, 7, Tokens(renderer.settings.secret_key))
    html, text = rendered.personalise(recipient, fields)
    return issue, rendered, fields, html, text


@pytest.mark.parametrize("path", SAMPLE_ISSUES, ids=lambda p: p.stem)
@pytest.mark.parametrize("recipient", HOSTILE, ids=["accented", "hostile", "nameless"])
def test_inline_once_equals_inlining_each_message(renderer, path, recipient):
    issue, rendered, fields, html, _ = personalise(renderer, path, recipient)
    assert html == renderer.render_reference(issue, rendered, recipient, fields)


def test_body_expression_uses_subscriber_values(renderer):
    _, _, _, html, text = personalise(renderer, SAMPLE_ISSUE, HOSTILE[0])
    assert "right for you, Ana?" in html and "right for you, Ana?" in text
    _, _, _, html, text = personalise(renderer, SAMPLE_ISSUE, HOSTILE[2])
    assert "right for you, friend?" in html and "Hello," in text


def test_css_is_inlined_and_html_is_valid(renderer):
    _, _, _, html, _ = personalise(renderer, SAMPLE_ISSUE, HOSTILE[0])
    document = lxml.html.document_fromstring(html)
    masthead = document.find_class("masthead")[0]
    assert "background-color:#1f6f78" in masthead.get("style").replace(" ", "")
    disclaimer = document.find_class("disclaimer")[0]
    assert "font-size:12px" in disclaimer.get("style").replace(" ", "")
    style = document.find(".//style").text
    assert "@media only screen and (max-width: 620px)" in style and "prefers-color-scheme: dark" in style
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(html)  # raises on any parse error
    assert len(html.encode()) < 102 * 1024


def test_subscriber_values_cannot_inject_markup(renderer):
    _, _, _, html, _ = personalise(renderer, SAMPLE_ISSUE, HOSTILE[1])
    document = lxml.html.document_fromstring(html)
    assert document.findall(".//script") == []
    assert 'Hi {{7*7}}<script>alert("x")</script>,' in document.text_content()
    assert "49" not in document.text_content()


def test_plain_text_is_72_columns_with_footnoted_links(renderer):
    _, _, fields, _, text = personalise(renderer, SAMPLE_ISSUE, HOSTILE[0])
    long_lines = [line for line in text.splitlines() if len(line) > 72 and "http" not in line]
    assert long_lines == []
    assert "nami.org [1]" in text and "[1] https://www.nami.org" in text
    assert "Individual results vary" in text
    assert "call or text 988" in text and "text HOME to 741741" in text
    assert f"Unsubscribe: {fields['unsubscribe_url']}" in text
    assert "PATIENT STORY: SARAH" in text


def test_every_message_has_footer_links_and_postal_address(renderer):
    _, _, fields, html, _ = personalise(renderer, SAMPLE_ISSUE, HOSTILE[0])
    document = lxml.html.document_fromstring(html)
    hrefs = [a.get("href") for a in document.iter("a")]
    assert fields["unsubscribe_url"] in hrefs and fields["preferences_url"] in hrefs
    assert "https://news.calmharbor.example/archive/2026-12-understanding-anxiety" in hrefs
    assert "100 Example Street, Springfield" in document.text_content()


def test_broken_template_is_file_line_error(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "email" / "newsletter.html").write_text("<p>{% if %}</p>\n")
    settings = load_settings(environ=ENV, overrides={"templates_dir": str(templates)})
    with pytest.raises(ContentError, match=r"newsletter.html:1: "):
        Renderer(settings).render(load_issue(SAMPLE_ISSUE))


def test_render_command_formats(workdir, monkeypatch, tmp_path):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    text = runner.invoke(main, ["render", str(SAMPLE_ISSUE), "--format", "text"])
    assert text.exit_code == 0 and text.stdout.startswith("Calm Harbor Ketamine Clinic")
    out = tmp_path / "issue.html"
    html = runner.invoke(main, ["render", str(SAMPLE_ISSUE), "-o", str(out)])
    assert html.exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    missing = runner.invoke(main, ["render", "no-such-issue"])
    assert missing.exit_code == 1 and "issue 'no-such-issue' not found" in missing.stderr
    bad = write_issue(tmp_path, "Hi {{ frist }}\n")
    broken = runner.invoke(main, ["render", str(bad)])
    assert broken.exit_code == 1
    assert broken.stderr.startswith(f"Error: {bad}:5: unknown variable 'frist'")
    assert "Traceback" not in broken.output


def test_issues_new_and_list(workdir, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    created = runner.invoke(main, ["issues", "new", "2027-02-sleep"])
    assert created.exit_code == 0, created.output
    assert (workdir / "issues" / "2027-02-sleep.md").exists()
    again = runner.invoke(main, ["issues", "new", "2027-02-sleep"])
    assert again.exit_code == 1 and "already exists" in again.stderr
    listed = runner.invoke(main, ["issues", "list"])
    assert "2027-02-sleep" in listed.stdout and "A clear, specific subject" in listed.stdout
    assert runner.invoke(main, ["render", "2027-02-sleep", "--format", "text"]).exit_code == 0


def test_preview_writes_files_and_serve_rerenders_on_change(workdir, tmp_path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["preview", str(SAMPLE_ISSUE), "--no-browser"])
    assert result.exit_code == 0, result.output
    assert (workdir / "preview" / "2026-12-understanding-anxiety.html").exists()
    assert "PATIENT STORY" in (workdir / "preview" / "2026-12-understanding-anxiety.txt").read_text()

    path = write_issue(tmp_path, "First version.\n")
    server = PreviewServer(load_settings(environ=ENV), path, HOSTILE[0], 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert "First version." in urllib.request.urlopen(server.url).read().decode()
        time.sleep(0.01)
        write_issue(tmp_path, "Second version.\n")
        page = urllib.request.urlopen(server.url).read().decode()
        assert "Second version." in page and "/__version" in page
        assert "Second version." in urllib.request.urlopen(server.url + "text").read().decode()
        write_issue(tmp_path, "::: poem\n:::\n")
        assert "unknown block 'poem'" in urllib.request.urlopen(server.url).read().decode()
    finally:
        server.shutdown()


def test_long_personal_values_keep_text_within_72_columns(renderer):
    long_name = Recipient(9, "m@example.com", "Maximilianaxxxxxxxxxxxxxxxxxxxxxxxxxxxxx Smith", {})
    _, _, _, _, text = personalise(renderer, SAMPLE_ISSUE, long_name)
    assert "Maximilianaxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" in text
    assert [line for line in text.splitlines() if len(line) > 72 and "://" not in line] == []
