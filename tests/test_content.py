"""Issue files: blocks, front matter and the FILE:LINE errors staff see."""

from __future__ import annotations

import pytest

from newsletter.content import load_issue
from newsletter.errors import ContentError

from .helpers import SAMPLE_ISSUES, write_issue


def test_blocks_and_fields_are_parsed(tmp_path):
    path = write_issue(
        tmp_path,
        """
        Loose text becomes an article.

        ::: story
        name: Sarah
        headline: Breaking free
        quote: It helped.

        Body with **bold**.
        :::

        ::: cta
        text: Book
        url: https://clinic.example/book
        :::
        """,
    )
    issue = load_issue(path)
    assert [block.kind for block in issue.blocks] == ["article", "story", "cta"]
    story = issue.blocks[1]
    assert story.fields == {"name": "Sarah", "headline": "Breaking free", "quote": "It helped."}
    assert "<strong>bold</strong>" in story.html
    assert story.line == 8  # 4 front-matter lines, a blank line, then the loose text
    assert issue.subject == "A calm subject"


def test_sample_issues_parse():
    kinds = {block.kind for path in SAMPLE_ISSUES for block in load_issue(path).blocks}
    assert kinds == {"article", "story", "tips", "resources", "cta"}


@pytest.mark.parametrize(
    "body, message",
    [
        ("::: poem\nroses\n:::\n", "test-issue.md:6: unknown block 'poem'"),
        ("::: article\nnever closed\n", "test-issue.md:6: 'article' block is not closed"),
        ("text\n:::\n", "test-issue.md:7: ':::' closes a block that was never opened"),
        ("::: story\nname: S\n\nno headline\n:::\n", "test-issue.md:6: story block needs a 'headline:' line"),
        ("Hi {{ frist_name }}\n", "test-issue.md:6: unknown variable 'frist_name'"),
        (
            "ok\n\nHi {{ subscriber.name | nosuchfilter }}\n",
            "test-issue.md:8: unknown filter 'nosuchfilter'",
        ),
        ("{% if subscriber.name %}x{% endif %}\n", "test-issue.md:6: only {{ ... }} expressions"),
        ("Hi {{ subscriber.name\n", "test-issue.md:6: unbalanced"),
    ],
)
def test_errors_name_file_and_line(tmp_path, body, message):
    path = write_issue(tmp_path, "\n" + body)
    with pytest.raises(ContentError) as error:
        load_issue(path)
    assert str(error.value).startswith(str(tmp_path)), str(error.value)
    assert message in str(error.value)


def test_front_matter_errors(tmp_path):
    path = tmp_path / "broken.md"
    path.write_text("---\nsubject: [unclosed\n---\nbody\n")
    with pytest.raises(ContentError, match=r"broken.md:\d+: front matter"):
        load_issue(path)
    path.write_text("no front matter\n")
    with pytest.raises(ContentError, match="broken.md:1: missing front matter"):
        load_issue(path)
    path.write_text("---\nsubjct: typo\n---\nbody\n")
    with pytest.raises(ContentError, match="unknown front matter field 'subjct'"):
        load_issue(path)
