"""WCAG contrast: the arithmetic, the sample issues in light and dark mode, a low-contrast heading named."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from newsletter.chromium import chromium_available, with_browser
from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.contrast import (
    check_issue_contrast,
    contrast_findings,
    contrast_ratio,
    measure_html,
    personalised_html,
)
from newsletter.render import Renderer

from .conftest import ROOT
from .helpers import ENV, SAMPLE_ISSUE, SAMPLE_ISSUES, add_subscribers, write_issue

NEEDS_CHROMIUM = pytest.mark.skipif(
    not chromium_available(), reason="chromium is not installed (apt-get install -y chromium); .ci/run installs it"
)


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


@pytest.mark.parametrize(
    "foreground, background, expected",
    [
        ("#000000", "#ffffff", 21.0),
        ("#ffffff", "#ffffff", 1.0),
        ("#767676", "#ffffff", 4.54),  # the lightest grey that passes AA on white
        ("#1f4e55", "#1b2529", 1.69),  # the old dark-mode headings, as the issue measured them
        ("#ffffff", "#c8553d", 4.35),  # the old button
    ],
)
def test_contrast_ratio_matches_wcag(foreground, background, expected):
    assert contrast_ratio(rgb(foreground), rgb(background)) == pytest.approx(expected, abs=0.01)
    assert contrast_ratio(rgb(background), rgb(foreground)) == pytest.approx(expected, abs=0.01)


def templates_with(tmp_path, old: str, new: str):
    """A copy of the bundled templates with one piece of CSS replaced."""
    copy = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", copy)
    page = copy / "email" / "newsletter.html"
    source = page.read_text(encoding="utf-8")
    assert old in source
    page.write_text(source.replace(old, new), encoding="utf-8")
    return copy


@pytest.mark.browser
@NEEDS_CHROMIUM
@pytest.mark.parametrize("path", SAMPLE_ISSUES, ids=lambda p: p.stem)
def test_sample_issues_pass_aa_in_light_and_dark_mode(path):
    settings = load_settings(environ=ENV)
    issue = load_issue(path)
    rendered = Renderer(settings).render(issue)
    html = personalised_html(settings, rendered)
    measured = with_browser(lambda browser: measure_html(browser, html))
    light = [item for item in measured if item.mode == "light"]
    dark = [item for item in measured if item.mode == "dark"]
    # Every heading, paragraph, link, the button and the footer were measured, in both modes.
    assert len(light) > 50 and len(dark) > 50
    assert any(item.element.startswith("a.button") for item in dark)
    assert [item.describe() for item in measured if not item.passes] == []
    assert contrast_findings(settings, rendered, issue) == []


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_low_contrast_heading_is_named_with_both_colours(tmp_path):
    # Light grey article headings on the white container: 2.2:1.
    light_css = (
        ".block h1, .block h2 { font-family: Helvetica, Arial, sans-serif; color: #1f4e55; font-size: 22px;",
        ".block h1, .block h2 { font-family: Helvetica, Arial, sans-serif; color: #aaaaaa; font-size: 22px;",
    )
    templates = templates_with(tmp_path, *light_css)
    settings = load_settings(environ={**ENV, "NEWSLETTER_TEMPLATES_DIR": str(templates)})
    findings = check_issue_contrast(settings, SAMPLE_ISSUE)
    assert findings, "a 2.3:1 heading passed the contrast check"
    heading = [f for f in findings if 'h2 "Understanding anxiety"' in f.message]
    assert len(heading) == 1
    message = heading[0].message
    assert "light mode" in message and "#aaaaaa on #ffffff" in message and "2.32:1" in message
    assert "3:1" in message  # 22 px bold is large text
    lines = SAMPLE_ISSUE.read_text(encoding="utf-8").splitlines()
    title_line = lines.index("title: Understanding anxiety") + 1
    assert heading[0].location.endswith(f"2026-12-understanding-anxiety.md:{title_line}")  # the block's title line
    assert heading[0].severity == "error" and heading[0].rule == "contrast"
    assert all("dark mode" not in f.message for f in findings)  # dark mode overrides the colour


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_dark_mode_heading_regression_is_caught_and_lint_contrast_fails(tmp_path, workdir, monkeypatch):
    # Drop the dark-mode heading colour: the light-mode teal comes back on the dark container.
    dark_css = (
        ".block h1, .block h2, .block h3, .block h4, .story-headline, .pull-quote, .tips-title "
        "{ color: #8fd0d6 !important; }",
        "",
    )
    templates = templates_with(tmp_path, *dark_css)
    for name, value in {**ENV, "NEWSLETTER_TEMPLATES_DIR": str(templates)}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["lint", str(SAMPLE_ISSUE), "--contrast"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stdout.splitlines() if "[contrast]" in line]
    assert any('dark mode: h2 "Understanding anxiety" is #1f4e55 on #1b2529, contrast 1.69:1' in line for line in lines)
    assert any('p.story-headline "Breaking free from anxiety" is #1f4e55 on #213338' in line for line in lines)
    assert all("light mode" not in line for line in lines)

    monkeypatch.setenv("NEWSLETTER_TEMPLATES_DIR", str(ROOT / "templates"))
    result = CliRunner().invoke(main, ["lint", str(SAMPLE_ISSUE), "--contrast"])
    assert result.exit_code == 0, result.output
    assert "[contrast]" not in result.stdout


def test_missing_chromium_is_one_line_with_what_to_install(workdir, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", str(workdir))  # no chromium on it
    # An issue no other test measured: results are remembered per message within a process.
    path = write_issue(workdir, "A paragraph only this test renders.\n")
    result = CliRunner().invoke(main, ["lint", str(path), "--contrast"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: Chromium is not installed, so proofs and contrast checks cannot run",
        "Hint: apt-get install -y chromium",
    ]
    assert "Traceback" not in result.output


def test_missing_playwright_is_one_line_naming_the_extra(workdir, monkeypatch):
    import newsletter.chromium

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(newsletter.chromium, "find_spec", lambda name: None)
    result = CliRunner().invoke(main, ["proofs", str(SAMPLE_ISSUE)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: Playwright is not installed, so proofs and contrast checks cannot run",
        "Hint: pip install -e '.[proofs]'",
    ]


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_send_refuses_low_contrast_like_a_lint_error(tmp_path, workdir, monkeypatch, sqlite_url):
    light_css = (
        ".button { display: inline-block;",
        ".button { color: #f0d0c8 !important; display: inline-block;",
    )
    templates = templates_with(tmp_path, *light_css)
    for name, value in {**ENV, "NEWSLETTER_TEMPLATES_DIR": str(templates)}.items():
        monkeypatch.setenv(name, value)
    add_subscribers(sqlite_url, ["reader@example.com"])
    send = ["--database-url", sqlite_url, "send", str(SAMPLE_ISSUE), "--dry-run"]
    result = CliRunner().invoke(main, send)
    assert result.exit_code == 1, result.output
    assert 'a.button "Book a consultation" is #f0d0c8 on #b84a33' in result.stderr
    assert "[contrast]" in result.stderr and "--force" in result.stderr
    result = CliRunner().invoke(main, [*send, "--force"])
    assert result.exit_code == 0, result.output


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_a_measurement_is_remembered_across_runs_until_the_message_changes(tmp_path, workdir, monkeypatch):
    """`send` after `lint --contrast` (a new process) does not launch Chromium again for the
    same message; a changed message is measured afresh, and its failure still found."""
    import newsletter.contrast

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    launches = []
    launch = newsletter.contrast.with_browser
    monkeypatch.setattr(newsletter.contrast, "with_browser", lambda work: launches.append(1) or launch(work))
    path = write_issue(workdir, "A paragraph only the remembering test renders.\n")
    lint = ["lint", str(path), "--contrast"]
    assert CliRunner().invoke(main, lint).exit_code == 0
    assert len(launches) == 1
    newsletter.contrast._CACHE.clear()  # what a new process remembers: only the disk
    assert CliRunner().invoke(main, lint).exit_code == 0
    assert len(launches) == 1

    light_css = (".button { display: inline-block;", ".button { color: #f0d0c8 !important; display: inline-block;")
    monkeypatch.setenv("NEWSLETTER_TEMPLATES_DIR", str(templates_with(tmp_path, *light_css)))
    newsletter.contrast._CACHE.clear()
    result = CliRunner().invoke(main, ["lint", str(SAMPLE_ISSUE), "--contrast"])  # it has a button
    assert len(launches) == 2
    assert result.exit_code == 1 and "#f0d0c8" in result.stdout and "[contrast]" in result.stdout
