"""`newsletter proofs`: one PNG and one HTML page with phone and desktop, light and dark, inbox line, text."""

from __future__ import annotations

import re
import shlex
import shutil
import threading
import urllib.request

import pytest
from click.testing import CliRunner
from PIL import Image

from newsletter.chromium import PHONE_WIDTH, chromium_available
from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.preview import PreviewServer
from newsletter.proofs import DESKTOP_CROP, SHEET_WIDTH, make_proof_sheet
from newsletter.render import SAMPLE_RECIPIENT

from .conftest import ROOT
from .helpers import ENV, SAMPLE_ISSUE, add_subscribers

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not chromium_available(), reason="chromium is not installed (apt-get install -y chromium); .ci/run installs it"
    ),
]


def luminance(pixel) -> float:
    r, g, b = pixel[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.fixture
def env(workdir, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEWSLETTER_ISSUES_DIR", str(ROOT / "issues"))
    return workdir


def test_proofs_writes_a_png_and_html_sheet_with_four_panels(env, tmp_path):
    database = f"sqlite:///{tmp_path / 'subscribers.db'}"
    assert CliRunner().invoke(main, ["--database-url", database, "init"]).exit_code == 0
    add_subscribers(database, ["ana@example.com"])
    result = CliRunner().invoke(
        main,
        ["--database-url", database, "proofs", "2026-12-understanding-anxiety", "--subscriber", "ana@example.com"],
    )
    assert result.exit_code == 0, result.output
    png = env / "proofs" / "2026-12-understanding-anxiety.png"
    page = env / "proofs" / "2026-12-understanding-anxiety.html"
    assert f"Wrote proofs/{page.name} and proofs/{png.name}" in result.stdout
    assert "Contrast: all" in result.stdout and "pass WCAG AA" in result.stdout
    assert "Inbox line on a phone: Calm Harbor Clinic | Understanding anxiety" in result.stdout

    # The HTML page stands alone: four embedded screenshots, the inbox line, the personalised text part.
    sheet = page.read_text(encoding="utf-8")
    assert sheet.count('src="data:image/png;base64,') == 4
    assert "What anxiety is, why ketamine works differently" in sheet  # preheader in the inbox line
    assert "Hi Reader," in sheet and "PATIENT STORY: SARAH" in sheet  # the plain-text part, for this subscriber
    for caption in ("Phone, 375 px, light", "Phone, 375 px, dark", "Desktop, 600 px message in a 1280 px window, dark"):
        assert caption in sheet

    image = Image.open(png).convert("RGB")
    width, height = image.size
    size = re.search(r"\((\d+)x(\d+) px\)", result.stdout)
    assert (width, height) == (SHEET_WIDTH, int(size.group(2)))
    assert height > 3000  # whole messages, not one screen of them


def test_panels_sit_where_the_sheet_says_and_dark_is_darker(tmp_path):
    settings = load_settings(environ=ENV)
    sheet = make_proof_sheet(settings, SAMPLE_ISSUE, SAMPLE_RECIPIENT, tmp_path)
    image = Image.open(sheet.png_path).convert("RGB")
    assert image.size == (sheet.width, sheet.height) == (SHEET_WIDTH, sheet.height)
    assert set(sheet.panels) == {"phone-light", "phone-dark", "desktop-light", "desktop-dark"}
    for name, (x, y, w, h) in sheet.panels.items():
        assert w == (PHONE_WIDTH if name.startswith("phone") else DESKTOP_CROP), name
        assert h > 1500 and x >= 0 and y >= 0 and x + w <= sheet.width and y + h <= sheet.height, name
    # Phones side by side on top, desktops side by side below them.
    phone_light, phone_dark = sheet.panels["phone-light"], sheet.panels["phone-dark"]
    desktop_light, desktop_dark = sheet.panels["desktop-light"], sheet.panels["desktop-dark"]
    assert phone_light[1] == phone_dark[1] and phone_dark[0] > phone_light[0] + PHONE_WIDTH
    assert desktop_light[1] == desktop_dark[1] > phone_light[1] + phone_light[3]

    for light, dark in ((phone_light, phone_dark), (desktop_light, desktop_dark)):
        # The page background in the top-left corner of the panel (the wrapper around the message),
        # and the message's own background just inside the container, below the masthead.
        corner = (4, 4)
        light_pixel = image.getpixel((light[0] + corner[0], light[1] + corner[1]))
        dark_pixel = image.getpixel((dark[0] + corner[0], dark[1] + corner[1]))
        assert light_pixel == (0xF4, 0xF1, 0xEC)  # the light wrapper, exactly as the CSS says
        assert luminance(dark_pixel) < 40 < 200 < luminance(light_pixel)
        # The message's own background, left of the text (inside the container's padding).
        inside = (14, 250)
        assert image.getpixel((light[0] + inside[0], light[1] + inside[1])) == (0xFF, 0xFF, 0xFF)
        assert image.getpixel((dark[0] + inside[0], dark[1] + inside[1])) == (0x1B, 0x25, 0x29)

    # Gmail on a phone cuts the 58-character subject and the 67-character preheader.
    assert 25 < sheet.inbox.subject_shown < len(sheet.inbox.subject)
    assert 25 < sheet.inbox.preheader_shown < len(sheet.inbox.preheader)
    assert sheet.inbox.summary().count("\u2026") == 2
    assert sheet.findings == []


def test_proofs_names_a_low_contrast_heading(env, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    page = templates / "email" / "newsletter.html"
    css = page.read_text(encoding="utf-8")
    old = ".tips-title { font-family: Helvetica, Arial, sans-serif; font-size: 20px; color: #1f4e55;"
    assert old in css
    page.write_text(css.replace(old, old.replace("#1f4e55", "#c9c9c9")), encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["proofs", "2027-01-life-after-treatment", "-o", str(tmp_path / "out")],
        env={"NEWSLETTER_TEMPLATES_DIR": str(templates)},
    )
    assert result.exit_code == 0, result.output  # a proof sheet reports; lint --contrast is the gate
    assert 'light mode: p.tips-title "Seven tips for managing anxiety" is #c9c9c9 on #ffffff' in result.stdout
    assert "Contrast: 1 text element(s) below WCAG AA" in result.stdout
    sheet = (tmp_path / "out" / "2027-01-life-after-treatment.html").read_text(encoding="utf-8")
    assert "1 text element(s) below WCAG AA" in sheet and "#c9c9c9" in sheet


def test_preview_server_links_to_the_proof_sheet(tmp_path):
    server = PreviewServer(load_settings(environ=ENV), SAMPLE_ISSUE, SAMPLE_RECIPIENT, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = urllib.request.urlopen(server.url).read().decode()
        assert 'href="/proofs"' in page
        sheet = urllib.request.urlopen(server.url + "proofs", timeout=120).read().decode()
        assert "Proof sheet: Understanding anxiety" in sheet and sheet.count("data:image/png;base64,") == 4
    finally:
        server.shutdown()


def test_readme_proofs_example_runs_and_its_sheet_is_committed(env):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("newsletter proofs ")]
    assert examples, "README has no `newsletter proofs` example"
    for example in examples:
        result = CliRunner().invoke(main, shlex.split(example)[1:])
        assert result.exit_code == 0, f"{example}\n{result.output}"
    assert "docs/proof-sheet.png" in readme
    image = Image.open(ROOT / "docs" / "proof-sheet.png")
    assert image.size[0] == SHEET_WIDTH
