"""The bytes of a campaign message are exactly what they were before the send path was
optimised (per-issue body templates, pre-encoded and pre-stuffed parts, header folds
cached per shape, prepared HMAC tokens), for an accented and a hostile name, with the
boundary, Message-ID and clock pinned.

Every run compares the optimised message with the reference path (the builder as it was:
documents filled and encoded whole, itsdangerous tokens, email.header folding) and with
the fixtures, captured first from the unoptimised code and re-captured from the reference
path when the message itself changed on purpose (deterministic Message-ID and folding from
the delivery branch, List-Unsubscribe never encoded, main's template colours):
    NEWSLETTER_REGENERATE_FIXTURES=1 python -m pytest tests/test_message_bytes.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newsletter import content as content_module
from newsletter import message as message_module
from newsletter.campaigns import Composer
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import Recipient, Renderer

from .helpers import ENV, SAMPLE_ISSUE, SAMPLE_ISSUES

FIXTURES = Path(__file__).resolve().parent / "fixtures"
READERS = {
    "accented": Recipient(1, "ana@example.com", "Ana López-Núñez", {"city": "Córdoba"}),
    "hostile": Recipient(
        2, "mallory@example.com", "{{7*7}}<script>alert(\"x\")</script> & 'quoted'\r\nBcc: x@evil", {}
    ),
}


def pinned_again(monkeypatch):
    """Pin what legitimately varies between two builds: boundary, Message-ID and Date; and
    the slot markers' nonce as the fixtures were made (a marker's length decides where the
    text part wraps a line holding a personal value)."""
    monkeypatch.setattr(message_module.secrets, "token_hex", lambda n=None: "0123456789abcdef01234567")
    monkeypatch.setattr(content_module, "_marker_nonce", lambda source: "0123456789abcdef01234567")
    monkeypatch.setattr(message_module, "make_msgid", lambda domain=None, **kw: f"<fixed.id@{domain}>")
    monkeypatch.setattr(message_module, "formatdate", lambda *a, **kw: "Thu, 26 Nov 2026 12:00:00 GMT")
    monkeypatch.setattr(message_module, "_last_date", (-1, ""), raising=False)


@pytest.fixture
def pinned(monkeypatch):
    pinned_again(monkeypatch)


def build(recipient: Recipient, repeat: int = 1) -> list[bytes]:
    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(SAMPLE_ISSUE))
    composer = Composer(settings)
    return [composer.compose(rendered, recipient, 7, 11).as_bytes() for _ in range(repeat)]


def build_reference(recipient: Recipient, monkeypatch) -> bytes:
    """The message as it was built before the optimisation: both documents filled whole and
    quoted-printable encoded whole, the links signed by itsdangerous itself, every long
    header folded by email.header."""
    from email.header import Header

    monkeypatch.setattr(
        message_module,
        "_fold_ascii",
        lambda value: Header(value, "us-ascii", maxlinelen=message_module.FOLD_AT).encode(linesep="\r\n"),
    )
    settings = load_settings(environ=ENV)
    renderer = Renderer(settings)
    rendered = renderer.render(load_issue(SAMPLE_ISSUE))
    composer = Composer(settings)
    base = settings.base_url.rstrip("/")
    tokens = composer.tokens
    fields = {
        **renderer.personal_fields(recipient, 7, composer.tokens),
        "unsubscribe_url": f"{base}/u/{tokens.make('unsubscribe', recipient.token, 7)}",
        "preferences_url": f"{base}/p/{tokens.make('preferences', recipient.token, 7)}",
    }
    values = rendered.values_for(recipient, fields)
    html, text = rendered.fill(values)
    message = composer.builder.build(rendered, recipient, html, text, fields, 7, 11, slot_values=values)
    assert message.body is None  # the whole-document path
    data = message.as_bytes()
    monkeypatch.undo()
    return data


@pytest.mark.parametrize("who", sorted(READERS))
def test_message_bytes_identical_to_before_optimisation(pinned, monkeypatch, who):
    fixture = FIXTURES / f"message-{who}.eml"
    reference = build_reference(READERS[who], monkeypatch)
    pinned_again(monkeypatch)
    if os.environ.get("NEWSLETTER_REGENERATE_FIXTURES"):
        fixture.write_bytes(reference)
    first, second = build(READERS[who], repeat=2)  # the second comes from the per-issue caches
    assert first == reference
    assert first == fixture.read_bytes()
    assert second == first


def assert_same(filled, html, text):
    boundary, body = message_module._mime_body(text, html)
    assert filled == (html, text, (boundary, body, message_module._dot_stuffed(body)))


NASTY = [
    "",
    "Ana López",
    "x" * 300,
    "trailing spaces   ",
    ".\n.leading dot\r\nand = signs =3D\ttab",
    "Zoë " * 40 + "end",
    "lone\rcarriage return and \u2028 line separator",
    "=?utf-8?q?encoded?= word " + "ü" * 80,
]


@pytest.mark.parametrize("path", SAMPLE_ISSUES, ids=lambda p: p.stem)
def test_body_template_equals_encoding_the_whole_document(monkeypatch, path):
    """The per-issue template (shared lines encoded once) against encoding every document
    whole, the way every message was built before: the same bytes for awkward values."""
    monkeypatch.setattr(message_module.secrets, "token_hex", lambda n=None: "feedfacefeedfacefeedface")
    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(path))
    template = message_module.BodyTemplate(rendered)
    for index, value in enumerate(NASTY):
        values = {marker: value if n % 2 == index % 2 else value[::-1] for n, marker in enumerate(rendered.slots)}
        html, text = rendered.fill(values)
        assert_same(template.fill(values), html, text)


def test_body_template_without_final_newline(monkeypatch):
    """A document whose last line has no line end (and is long enough to be soft-broken)."""
    monkeypatch.setattr(message_module.secrets, "token_hex", lambda n=None: "feedfacefeedfacefeedface")
    from newsletter.render import RenderedIssue, Slot

    marker = "zslotabcx0z"
    line = "word " * 30
    rendered = RenderedIssue(
        "s",
        "subject",
        "",
        "hash",
        [f"<p>{line}", marker, f" {line}."],
        ["top\n.", marker, f" {line}\t"],
        {marker: Slot(marker, "field", "greeting", 0)},
        frozenset(),
    )
    template = message_module.BodyTemplate(rendered)
    for value in ("", "Hi Ana,", "x" * 200 + " ", "."):
        html, text = rendered.fill({marker: value})
        assert_same(template.fill({marker: value}), html, text)


def test_link_tokens_round_trip():
    """Sealed tokens read back to the random value and campaign they were made from; links
    in messages sent before migration 0006 (itsdangerous-signed ids) still read."""
    import secrets

    from newsletter.tokens import Tokens

    tokens = Tokens(ENV["NEWSLETTER_SECRET_KEY"])
    for campaign_id in (None, 1, 7, 11111111, 2**32 - 1):
        for purpose in ("unsubscribe", "preferences"):
            key = secrets.token_hex(10)
            data = tokens.read(purpose, tokens.make(purpose, key, campaign_id))
            assert (data.key, data.campaign_id) == (key, campaign_id)
            legacy = tokens.read(purpose, tokens._legacy[purpose].dumps([123456, campaign_id]))
            assert (legacy.legacy_id, legacy.campaign_id) == (123456, campaign_id)


def test_list_unsubscribe_is_never_an_encoded_word(pinned):
    """RFC 2369/8058: receivers read the URLs straight from the header; it may be folded
    between its two entries, never turned into RFC 2047 encoded words."""
    raw = build(READERS["hostile"])[0].split(b"\r\n\r\n", 1)[0].decode("ascii")
    header = raw.split("List-Unsubscribe: ", 1)[1].split("\r\nList-Unsubscribe-Post", 1)[0]
    assert "=?" not in header
    https, mailto = header.replace("\r\n ", " ").split(", ")
    assert https.startswith("<http") and mailto.startswith("<mailto:") and mailto.endswith(">")


@pytest.fixture
def inlining(monkeypatch, tmp_path):
    """Every time the CSS is inlined afresh, from an empty cache folder."""
    from newsletter import render

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing remembered yet
    calls = []
    original = render.inline_css
    monkeypatch.setattr(render, "inline_css", lambda html: calls.append(1) or original(html))
    return calls


def test_send_inlines_css_once_per_issue(cli, send_env, monkeypatch, inlining):
    """However many readers, `send` renders and inlines the issue once (lint included)."""
    from .helpers import add_subscribers
    from .smtp_server import SMTPServer

    calls = inlining
    add_subscribers(cli.database_url, [f"r{i}@example.com" for i in range(12)])
    with SMTPServer() as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", server.url)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        assert len(server.handler.messages) == 12
    assert "sent 12," in result.stdout
    assert len(calls) == 1


def test_send_after_lint_reuses_the_inlined_issue_until_it_changes(cli, monkeypatch, tmp_path, inlining):
    """`lint` inlines the issue's CSS and remembers it (the user's cache folder): the send or
    preview that follows builds the same bytes without inlining again; a damaged entry and an
    edited issue are inlined afresh."""
    import shutil

    calls = inlining
    issue = tmp_path / SAMPLE_ISSUE.name
    shutil.copy(SAMPLE_ISSUE, issue)
    cli("lint", str(issue), expect=None)
    assert len(calls) == 1
    settings = load_settings()  # as the command found them (newsletter.toml here, the environment)
    remembered = Renderer(settings).render(load_issue(issue))
    assert len(calls) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    fresh = Renderer(settings).render(load_issue(issue))
    assert len(calls) == 2
    assert remembered == fresh
    for entry in (tmp_path / "elsewhere" / "newsletter" / "inlined").iterdir():
        entry.write_text(entry.read_text(encoding="utf-8")[:-200], encoding="utf-8")  # a damaged entry
    assert Renderer(settings).render(load_issue(issue)) == fresh
    assert len(calls) == 3
    issue.write_text(issue.read_text(encoding="utf-8").replace("anxiety", "worry", 1), encoding="utf-8")
    Renderer(settings).render(load_issue(issue))
    assert len(calls) == 4


def test_smtp_form_is_the_message_dot_stuffed(pinned):
    """What DATA carries: every line starting with "." doubled (RFC 5321 4.5.2), then ".".

    The dot-stuffing now happens per piece (the shared ones once per issue); it must equal
    the plain regex over the whole message that the SMTP adapter used to run."""
    import re

    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(SAMPLE_ISSUE))
    composer = Composer(settings)
    dotty = Recipient(3, "dot@example.com", ".Dot", {"city": ".\n.x"})
    for reader in (*READERS.values(), dotty):
        message = composer.compose(rendered, reader, 7, 11)
        assert message.as_wire() == re.sub(rb"(?m)^\.", b"..", message.as_bytes()) + b".\r\n"
    for sample in (b".a\r\n.b\r\n..c\r\nd.\r\n", b"a\r\n", b".", b""):
        assert message_module._dot_stuffed(sample) == re.sub(rb"(?m)^\.", b"..", sample)


def test_ascii_folding_by_shape_equals_email_header():
    """The per-shape fold cache gives exactly email.header's folding, for random values."""
    import random
    from email.header import Header

    rng = random.Random(12)
    alphabet = "abcXYZ0189-_.:/?=%<>@" * 3 + ",;  \t"
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60, 260)))
        value = " ".join(value.split())
        expected = Header(value, "us-ascii", maxlinelen=message_module.FOLD_AT).encode(linesep="\r\n")
        assert message_module._fold_ascii(value) == expected, value


def test_compose_process_hands_over_the_same_bytes(pinned):
    """Where `send` composes in a second process, SMTP gets the very bytes composing here
    gives (the fixtures' accented and hostile readers, and lines starting with '.'), and
    the light message passed between the processes still gives its whole MIME form."""
    import pickle

    from newsletter.compose_process import ComposeProcess, fork_available
    from newsletter.store import Claimed

    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(SAMPLE_ISSUE))
    composer = Composer(settings)
    readers = [*READERS.values(), Recipient(3, "dot@example.com", ".Dot", {"city": ".\n.x"})]
    here = [composer.compose(rendered, reader, 7, 11 + n) for n, reader in enumerate(readers)]
    rows = [Claimed(11 + n, r.id, r.email, r.name, r.attributes, r.token) for n, r in enumerate(readers)]
    if fork_available():
        process = ComposeProcess(composer, rendered, 7)
        try:
            there = list(process.compose(rows))
        finally:
            process.close()
    else:
        there = [pickle.loads(pickle.dumps(message.for_wire())) for message in here]
    for mine, theirs in zip(here, there, strict=True):
        assert theirs.as_wire() == mine.as_wire()
        assert theirs.as_bytes() == mine.as_bytes()
        assert theirs.smtp_envelope() == mine.smtp_envelope()
        assert (theirs.delivery_id, theirs.message_id, theirs.envelope_from) == (
            mine.delivery_id,
            mine.message_id,
            mine.envelope_from,
        )
    for sample in (b".a\r\n.b\r\n..c\r\nd.\r\n", b"a\r\n", b".", b"", b"..\r\n...\r\n"):
        assert message_module._dot_unstuffed(message_module._dot_stuffed(sample)) == sample


ENVELOPE_ADDRESSES = [
    "p1@example.com",
    "Ana.Lopez+news@Example.ORG",
    "bounce+7.123.abcdef@news.example.com",
    "a..b@example.com",
    ".lead@example.com",
    "trail.@example.com",
    '"quoted local"@example.com',
    "name <x@example.com>",
    "x@[127.0.0.1]",
    "x@example..com",
    "x@-example.com",
    "o'brien@example.com",
    "ana@exämple.com",
    "anä@example.com",
    "x@example.com.",
    "(comment)x@example.com",
    "",
    "no-at-sign",
]


@pytest.mark.parametrize("address", ENVELOPE_ADDRESSES)
def test_envelope_addresses_are_quoted_as_smtplib_quotes_them(address):
    import smtplib

    assert message_module.quote_address(address) == smtplib.quoteaddr(address)


def test_generated_envelope_addresses_are_quoted_as_smtplib_quotes_them():
    import random
    import smtplib

    pick = random.Random(12)
    plain, tricky = "aZ09_+-.@", "aZ09_+-.@\"'<> ()[],;:\\é"
    plain_ones = 0
    for index in range(10000):
        letters = plain if index % 2 else tricky
        address = "".join(pick.choice(letters) for _ in range(pick.randint(1, 14)))
        assert message_module.quote_address(address) == smtplib.quoteaddr(address), address
        plain_ones += bool(message_module._PLAIN_ADDRESS.match(address))
    assert plain_ones > 100  # the short cut itself was tried, not only the parse it stands for
