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
def test_sample_issues_have_no_errors(path, workdir):
    findings = lint(path)
    assert [f for f in findings if f.severity == "error"] == []
    assert {f.rule for f in findings} <= {"reading-level"}


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
    assert f"{bad}:5: error: placeholder '[Subscribe Now]' not replaced" in result.stdout
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
    assert "not every subscriber has 'city'; add a default" in findings[0].message
    with_default = write_issue(tmp_path, "News for {{ subscriber.attributes.city | default('you') }}.\n", name="ok")
    assert lint(with_default) == []


def test_placeholders(tmp_path):
    path = write_issue(tmp_path, "Join us. [Contact Us Today]\n\nA [real link](https://nami.org) is fine.\n")
    findings = lint(path)
    assert [(f.rule, f.message) for f in findings] == [
        ("placeholder", "placeholder '[Contact Us Today]' not replaced: write the text")
    ]


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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Links)  # http:// on loopback: no https warning
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


# -- issue 14: health content, and everything in one run ----------------------------------
EXAMPLE = """\
---
subject: "FREE CURE FOR ANXIETY!!! ACT NOW BEFORE THIS OFFER DISAPPEARS FOREVER TODAY"
---
# Feeling anxious?
![](images/clinic.png)
Call the lifeline at 1-800-273-TALK (8255) any time.
Hello {{ subscriber.frist_name }}, [Subscribe Now] to hear more.
> "Ketamine cured me in one session." (a patient)
"""


def test_the_example_gives_every_error_in_one_run(tmp_path):
    path = tmp_path / "example.md"
    path.write_text(EXAMPLE)
    findings = lint(path)
    errors = {(f.rule, int(f.location.rsplit(":", 1)[1])) for f in findings if f.severity == "error"}
    assert errors == {
        ("claims", 2),  # CURE in the subject
        ("image-alt", 5),
        ("image-url", 5),
        ("crisis-number", 6),
        ("variables", 7),
        ("placeholder", 7),
        ("claims", 8),  # "cured me in one session"
        ("testimonial", 8),
    }
    by_rule = {f.rule: f.message for f in findings}
    assert "did you mean subscriber.first_name?" in by_rule["variables"]
    assert "'CURE' promises results" in next(f.message for f in findings if f.location.endswith(":2"))
    assert "'cured'" in next(f.message for f in findings if f.rule == "claims" and f.location.endswith(":8"))
    assert "story" in by_rule["testimonial"]
    for finding in findings:  # FILE:LINE, one line, at most 200 characters
        assert finding.location.startswith(f"{path}:") and "\n" not in str(finding)
        assert len(str(finding)) <= 200, str(finding)


def test_block_mistakes_do_not_hide_the_rest(tmp_path):
    body = (
        "::: poem\nRoses.\n:::\n\n::: story\nname: S\n\nIt helped.\n:::\n\n:::\n\n::: tips\ntitle: T\n\n- [First Tip]\n"
    )
    path = write_issue(tmp_path, body)
    findings = lint(path)
    assert [(f.rule, int(f.location.rsplit(":", 1)[1])) for f in findings] == [
        ("blocks", 5),  # unknown block 'poem'
        ("blocks", 9),  # story without a headline
        ("blocks", 15),  # stray ':::'
        ("blocks", 17),  # tips never closed
        ("placeholder", 20),
    ]


def test_approved_claims_pass_for_that_issue_only(tmp_path):
    body = "Most patients report no side effects after the first week.\n"
    assert rules(lint(write_issue(tmp_path, body))) == {"claims"}
    approved = 'subject: "A calm subject"\npreheader: "p"\napproved_claims: ["no side effects"]\n'
    assert lint(write_issue(tmp_path, body, front=approved, name="approved")) == []


def test_claims_setting_adds_phrases(tmp_path):
    path = write_issue(tmp_path, "Our life-changing infusions.\n")
    assert lint(path) == []
    findings = lint(path, claims="life changing, reset your brain")
    assert [(f.rule, f.location) for f in findings] == [("claims", f"{path}:5")]


def test_claims_in_preheader_and_story_fields(tmp_path):
    front = 'subject: "A calm subject"\npreheader: "Guaranteed calm"\n'
    body = "::: story\nname: S\nheadline: A miracle\n\nIt helped.\n:::\n"
    findings = lint(write_issue(tmp_path, body, front=front))
    assert [(f.rule, f.location.rsplit(":", 1)[1]) for f in findings] == [("claims", "3"), ("claims", "7")]


@pytest.mark.parametrize(
    "body",
    [
        '"After two weeks I could sleep again," says Maria.\n',
        'Maria said "the infusions changed everything for me."\n',
        '"I finally feel like myself again." (a client)\n',
        '> "I felt calm within hours of my first visit."\n',
        'As one patient put it, "the fog lifted after a week."\n',
        "> Ketamine changed my life.\n>\n> \u2014 Maria\n",
        "> Ketamine changed my life.\n> -- a patient\n",
        '*"I feel like myself again."* - John D.\n',
        "'I'm finally sleeping through the night.' (a patient)\n",
        'According to a patient, "it changed my life".\n',
    ],
)
def test_testimonials_outside_story_blocks(tmp_path, body):
    path = write_issue(tmp_path, "Some news.\n\n" + body)
    findings = lint(path)
    assert [(f.rule, f.location) for f in findings] == [("testimonial", f"{path}:7")]
    inside = write_issue(tmp_path, f"::: story\nname: Maria\nheadline: Sleep\n\n{body}:::\n", name="story")
    assert lint(inside) == []


def test_quotes_that_are_no_testimonial_pass(tmp_path):
    body = 'The "fight or flight response" is normal.\n\nSome call it "the silent epidemic" (NIH data).\n'
    assert lint(write_issue(tmp_path, body)) == []
    body = (
        'According to the NIH, "anxiety disorders are common".\n\n'
        "> Anxiety is a normal reaction to stress.\n>\n> \u2014 National Institute of Mental Health\n\n"
        "We call it 'the worry loop' in our groups.\n\n"
        "Don't skip meals; it's 'better to eat early' - a tip that helps.\n"
    )
    assert lint(write_issue(tmp_path, body, name="more")) == []


def test_story_whose_disclaimer_was_removed_from_the_text_part(tmp_path, templates):
    text = templates / "email" / "newsletter.txt"
    text.write_text(text.read_text().replace("{{ text }}", "{{ text.split('Individual')[0] }}"))
    path = write_issue(tmp_path, "Intro.\n\n::: story\nname: S\nheadline: H\n\nIt helped.\n:::\n")
    findings = lint(path, templates_dir=str(templates))
    assert [(f.rule, f.location) for f in findings] == [("disclaimer", f"{path}:7")]


def test_sample_issue_reading_level_names_its_grade(workdir):
    from newsletter.content import load_issue
    from newsletter.readability import markdown_sentences, measure

    path = SAMPLE_ISSUES[0]
    warnings = [f for f in lint(path) if f.rule == "reading-level"]
    assert warnings and all(f.severity == "warning" for f in warnings)
    block = next(b for b in load_issue(path).blocks if f"{path}:{b.line}" == warnings[0].location)
    grade = measure(markdown_sentences(block.body, block.body_line)).grade
    assert grade > 8
    assert f"reads at grade {grade:.1f} (aim for 8)" in warnings[0].message
    assert warnings[0].message.count("line ") == 3  # the three hardest sentences, by line
    assert [f for f in lint(path, reading_grade="14") if f.rule == "reading-level"] == []


def test_reading_level_works_without_network(monkeypatch):
    import socket

    from newsletter import readability

    def no_network(*args, **kwargs):
        raise OSError("network is off")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    readability._pronunciations.cache_clear()
    readability.syllables.cache_clear()
    assert readability.syllables("anxiety") == 4  # from the bundled CMU dictionary
    assert readability.syllables("zolpidemish") >= 2  # not in the dictionary: pyphen's bundled patterns
    easy = "The cat sat on the mat. " * 10
    hard = "Comprehensive neuropsychopharmacological evaluation necessitates interdisciplinary collaboration. " * 5
    assert readability.measure(readability.markdown_sentences(easy, 1)).grade < 2
    assert readability.measure(readability.markdown_sentences(hard, 1)).grade > 16


# -- issue 13: what staff get wrong ------------------------------------------------------
def test_untouched_scaffold_fails_until_edited(workdir):
    import re

    runner = CliRunner(env=ENV)
    assert runner.invoke(main, ["issues", "new", "2027-02-sleep"]).exit_code == 0
    path = workdir / "issues" / "2027-02-sleep.md"
    result = runner.invoke(main, ["lint", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2: error: placeholder '[A clear, specific subject" in result.stdout
    edited = re.sub(r"\[([A-Z][^\[\]\n]*)\](?![(])", "Short plain words here", path.read_text())
    path.write_text(edited)
    result = runner.invoke(main, ["lint", str(path)])
    assert result.exit_code == 0, result.stdout


def test_http_links_warn_and_footer_links_must_be_https(tmp_path):
    path = write_issue(tmp_path, "Read [this](http://nami.org/page).\n")
    findings = lint(path)
    assert [(f.severity, f.rule, f.location) for f in findings] == [("warning", "https", f"{path}:5")]
    config = tmp_path / "newsletter.toml"
    config.write_text('adapter = "outbox"\nbase_url = "http://news.calmharbor.example"\n')
    environ = {name: value for name, value in ENV.items() if name != "NEWSLETTER_BASE_URL"}  # the file's counts
    settings = load_settings(config, environ=environ)
    findings = Linter(settings).lint(write_issue(tmp_path, "Hello\n", name="plain"))
    assert [(f.severity, f.rule, f.location) for f in findings] == [("error", "https", f"{config}:2")]
    assert "unsubscribe, preference and archive links must use https://" in findings[0].message


def test_raw_html_would_show_as_text(tmp_path):
    path = write_issue(tmp_path, "Hello.\n\nThis is <b>important</b>.\n\n<div>\nblock\n</div>\n")
    findings = lint(path)
    assert [(f.rule, f.location) for f in findings] == [
        ("raw-html", f"{path}:7"),
        ("raw-html", f"{path}:7"),
        ("raw-html", f"{path}:9"),
    ]
    assert "<b> would show as text in the email" in findings[0].message
    assert lint(write_issue(tmp_path, "See <https://nami.org> and 3 < 4.\n", name="ok")) == []


def test_missing_template_points_at_the_front_matter_line(tmp_path):
    front = 'subject: "A calm subject"\npreheader: "p"\ntemplate: fancy\n'
    path = write_issue(tmp_path, "Hello\n", front=front)
    findings = lint(path)
    assert [(f.rule, f.location) for f in findings] == [("template", f"{path}:4")]
    assert "template 'fancy' not found" in findings[0].message and "newsletter" in findings[0].message


def test_data_image_message_is_one_short_line(tmp_path):
    path = write_issue(tmp_path, f"![A chart](data:image/png;base64,{'A' * 5_000})\n")
    findings = lint(path)
    assert [(f.rule, f.location) for f in findings] == [("image-url", f"{path}:5")]
    assert len(str(findings[0])) <= 200


def test_dunder_attribute_gets_a_sensible_message(tmp_path):
    for expression in ("x.__class__", "subscriber.__class__", "subscriber['__class__']"):
        path = write_issue(tmp_path, f"Hi {{{{ {expression} }}}}\n")
        (finding,) = lint(path)
        assert finding.location == f"{path}:5"
        assert "'__class__' is not available in issues" in finding.message
        assert "default" not in finding.message


def test_yaml_error_in_plain_words_at_the_right_line(tmp_path):
    path = write_issue(tmp_path, "Hello\n", front='subject: [unclosed\npreheader: "p"\n')
    (finding,) = lint(path)
    assert finding.location == f"{path}:2"
    assert "'[' is not closed" in finding.message


def test_stale_approval_warns(tmp_path):
    from newsletter.review import approve

    path = write_issue(tmp_path, "Hello\n")
    approve(path, "Dr. Ana Ruiz")
    assert lint(path) == []
    path.write_text(path.read_text() + "\nOne more line.\n")
    findings = lint(path)
    assert [(f.rule, f.location) for f in findings] == [("review", f"{path}:6")]
    assert "changed since Dr. Ana Ruiz approved it" in findings[0].message


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("Most patients feel\nno\nside effects at all.\n", "no side effects"),
        ("It is not a permanent\nfix for anyone.\n", "permanent fix"),
        ("Expect instant\nrelief in many cases.\n", "instant relief"),
        ("It is 100%\neffective, we say.\n", "100% effective"),
        ("Our plan is risk\u2011free.\n", "risk free"),
        ("Our plan is risk\u2013free.\n", "risk free"),
        ("It is 100 % effective.\n", "100% effective"),
        ("You will have **no side** effects.\n", "no side effects"),
        ("A c&#117;re for worry.\n", "cure"),
        ("Cur\u00aded in weeks.\n", "cured"),
        ("A mir\u200bacle for worry.\n", "miracle"),
        ("A \uff23\uff55\uff52\uff45 for worry.\n", "cure"),
        ('Read [our news](https://example.com/a "A guaranteed result").\n', "guaranteed"),
        ('![A calm room](https://cdn.example.com/a.png "Clinically proven calm")\n', "clinically proven"),
        ("Visit <https://miracle.example.com/>.\n", "miracle"),
        ("> Most feel\n> no side effects.\n", "no side effects"),
    ],
)
def test_claims_split_or_disguised_are_found_where_they_start(tmp_path, body, phrase):
    path = write_issue(tmp_path, "Some news.\n\n" + body)
    findings = [f for f in lint(path) if f.rule == "claims"]
    start = 7 + next(index for index, line in enumerate(body.splitlines()) if _starts_claim(line, phrase))
    assert [f.location for f in findings] == [f"{path}:{start}"], findings
    assert len(str(findings[0])) <= 200 and "\n" not in str(findings[0])


def _starts_claim(line: str, phrase: str) -> bool:
    """The source line where the phrase starts (its first word, disguised or not)."""
    first = phrase.split()[0]
    from newsletter.lint import claim_text

    return first.lower().rstrip("%") in claim_text(line).lower().replace("\u00ad", "").replace("*", "")


def test_claims_across_paragraphs_or_list_items_are_separate_words(tmp_path):
    body = "We never say no.\n\nSide effects are listed below.\n\n- a permanent\n- fix list\n"
    assert lint(write_issue(tmp_path, body)) == []


def test_approved_claim_written_as_a_string_counts_as_one(tmp_path):
    body = "Most patients report no side\neffects after the first week.\n"
    approved = 'subject: "A calm subject"\npreheader: "p"\napproved_claims: "no side effects"\n'
    assert lint(write_issue(tmp_path, body, front=approved)) == []


@pytest.mark.parametrize(
    "style",
    ["display:none", "visibility: hidden", "font-size: 0", "font-size:0px !important", "opacity:0"],
)
def test_story_whose_disclaimer_is_hidden_by_a_style(tmp_path, templates, style):
    story = templates / "email" / "blocks" / "story.html"
    story.write_text(story.read_text().replace('<p class="disclaimer">', f'<p class="disclaimer" style="{style}">'))
    path = write_issue(tmp_path, "::: story\nname: S\nheadline: H\n\nIt helped.\n:::\n")
    findings = lint(path, templates_dir=str(templates))
    assert [(f.rule, f.location) for f in findings] == [("disclaimer", f"{path}:5")]


def test_story_whose_disclaimer_is_hidden_by_a_stylesheet_class(tmp_path, templates):
    layout = templates / "email" / "newsletter.html"
    layout.write_text(layout.read_text().replace("</style>", ".disclaimer { display: none; }\n</style>", 1))
    path = write_issue(tmp_path, "::: story\nname: S\nheadline: H\n\nIt helped.\n:::\n")
    findings = lint(path, templates_dir=str(templates))
    assert [(f.rule, f.location) for f in findings] == [("disclaimer", f"{path}:5")]
