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


def test_broken_expressions_are_collected_and_blanked(tmp_path):
    path = write_issue(
        tmp_path,
        "Hi {{ frist }}.\n\n{% if x %}y{% endif %}\n\nBye {{ subscriber.name | nope }} {{ subscriber.name }}\n",
    )
    problems = []
    issue = load_issue(path, problems)
    assert sorted(str(p).split(": ", 1)[0].rsplit(":", 1)[1] for p in problems) == ["5", "7", "9"]
    assert len(issue.slots) == 1  # the one good expression is kept
    assert "frist" not in issue.blocks[0].body and "{%" not in issue.blocks[0].body


@pytest.mark.parametrize(
    "front, line, words",
    [
        ("subject: [unclosed\npreheader: p\n", 2, "'[' is not closed"),
        ('preheader: p\nsubject: "unclosed\n', 3, "a quote is not closed"),
        ("subject: Anxiety: what helps\n", 2, "put the whole value in double quotes"),
        ("subject: a\n\tpreheader: b\n", 3, "use spaces"),
    ],
)
def test_yaml_errors_in_plain_words_at_the_right_line(tmp_path, front, line, words):
    path = write_issue(tmp_path, "body\n", front=front)
    with pytest.raises(ContentError) as error:
        load_issue(path)
    assert str(error.value).startswith(f"{path}:{line}: front matter: "), str(error.value)
    assert words in str(error.value)
    assert "mapping" not in str(error.value) and "scalar" not in str(error.value)


def test_content_hash_leaves_out_the_sign_off(tmp_path):
    path = write_issue(tmp_path, "Body.\n")
    plain = load_issue(path).content_hash
    signed = 'subject: "A calm subject"\npreheader: "A preview line"\nreviewed_by: "Dr. X"\nreviewed_hash: "abc"\n'
    assert load_issue(write_issue(tmp_path, "Body.\n", front=signed)).content_hash == plain
    assert load_issue(write_issue(tmp_path, "Body!\n", front=signed)).content_hash != plain
    claims = signed + 'approved_claims: ["no side effects"]\n'  # the sign-off covers accepted claims
    assert load_issue(write_issue(tmp_path, "Body.\n", front=claims)).content_hash != plain
