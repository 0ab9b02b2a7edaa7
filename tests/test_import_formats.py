"""Import takes the CSV files people really have: any common delimiter and encoding, and a
rejects file that can be fixed and imported again. Plus the fast address check's proof."""

from __future__ import annotations

import json
import random

import pytest

from newsletter.addresses import normalize_email
from newsletter.errors import DataError
from newsletter.importer import _plain_address, detect_delimiter, detect_encoding, import_address

PEOPLE = [
    ("rene@example.com", "Renée Dubois", "patients"),
    ("bjork@example.com", "Björk Guðmundsdóttir", "caregivers"),
    ("zoe@example.com", "Zoë Müller", "patients"),
]


def people(cli) -> dict[str, tuple[str, list[str]]]:
    rows = json.loads(cli("subscribers", "list", "--format", "json").stdout)
    return {row["email"]: (row["name"], row["tags"]) for row in rows}


def expected() -> dict[str, tuple[str, list[str]]]:
    return {email: (name, [tag]) for email, name, tag in PEOPLE}


def text(delimiter: str, line_ending: str = "\n") -> str:
    lines = [delimiter.join(("email", "name", "tags"))] + [delimiter.join(person) for person in PEOPLE]
    return line_ending.join(lines) + line_ending


@pytest.mark.parametrize(
    ("label", "delimiter", "encoding", "bom", "described"),
    [
        ("semicolon, Excel in much of Europe", ";", "utf-8", b"", "encoding utf-8 (valid UTF-8), delimiter semicolon"),
        ("tab", "\t", "utf-8", b"", "delimiter tab (detected from the header)"),
        ("pipe", "|", "utf-8", b"", "delimiter pipe"),
        ("Windows-1252", ";", "cp1252", b"", "encoding cp1252 (detected by charset-normalizer)"),
        ("UTF-8 with BOM", ",", "utf-8", b"\xef\xbb\xbf", "encoding utf-8-sig (byte order mark)"),
        ("UTF-16 LE with BOM, as Excel saves", "\t", "utf-16-le", b"\xff\xfe", "encoding utf-16 (byte order mark)"),
        ("UTF-16 BE with BOM", ",", "utf-16-be", b"\xfe\xff", "encoding utf-16 (byte order mark)"),
    ],
)
def test_common_csv_dialects_import(cli, tmp_path, label, delimiter, encoding, bom, described):
    path = tmp_path / "people.csv"
    path.write_bytes(bom + text(delimiter, "\r\n").encode(encoding))
    result = cli("subscribers", "import", str(path))
    assert "added 3, updated 0, unchanged 0, rejected 0." in result.stdout, label
    assert described in result.stderr, label
    assert people(cli) == expected(), label


def test_encoding_and_delimiter_can_be_forced(cli, tmp_path):
    path = tmp_path / "people.csv"
    # Latin-1 bytes that no detector could pin down from one name.
    path.write_bytes("email|name\nrene@example.com|Renée\n".encode("latin-1"))
    result = cli("subscribers", "import", str(path), "--encoding", "latin-1", "--delimiter", "|")
    assert "encoding latin-1 (given), delimiter pipe (given)" in result.stderr
    assert people(cli) == {"rene@example.com": ("Renée", [])}


def test_unknown_encoding_and_missing_email_column_are_one_clear_error(cli, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("mail;name\nrene@example.com;Renée\n", encoding="utf-8")
    result = cli("subscribers", "import", str(path), "--encoding", "klingon", expect=1)
    assert result.stderr.splitlines()[-2:] == [
        "Error: unknown encoding 'klingon'",
        "Hint: use a Python codec name such as utf-8, cp1252, latin-1 or utf-16",
    ]
    result = cli("subscribers", "import", str(path), "--delimiter", ",", expect=1)
    assert "Error: line 1: no 'email' column in the header (read with delimiter comma: 'mail;name')" in result.stderr
    assert "give --delimiter" in result.stderr
    assert "Traceback" not in result.output


def test_rejects_file_fixed_and_imported_again_adds_exactly_the_fixed_rows(cli, tmp_path):
    cli("subscribers", "add", "erased@example.com")
    cli("subscribers", "forget", "erased@example.com", "--yes")
    source = (
        "Email;Name;Tags;City\r\n"
        "ana@example.com;Ana López;patients;Sevilla\r\n"
        "ana.at.example.com;Ana Typo;patients;Sevilla\r\n"  # fixable: bad address
        "ANA@example.com;Ana Again;;Sevilla\r\n"  # duplicate of line 2
        "bo@example;Bo Ström;caregivers;Malmö\r\n"  # fixable: no top-level domain
        "erased@example.com;Erased;;\r\n"  # erased on request: stays rejected
        'cy@example.com;"Cy; ""the Third""";monthly;Zürich;extra\r\n'  # fixable: one field too many
        "dee@example.com;Dee;nonsense tag!;\r\n"  # fixable: bad tag
    ).encode("cp1252")
    path = tmp_path / "people.csv"
    path.write_bytes(source)
    rejects = tmp_path / "rejects.csv"
    result = cli("subscribers", "import", str(path), "--rejects", str(rejects))
    assert "added 1, updated 0, unchanged 0, rejected 6." in result.stdout
    written = rejects.read_bytes()
    # The input's header, encoding, delimiter and line endings; each row as it was, plus why.
    lines = written.split(b"\r\n")
    assert lines[0] == b"Email;Name;Tags;City;reject_reason"
    assert lines[1].startswith(b"ana.at.example.com;Ana Typo;patients;Sevilla;invalid email address")
    assert lines[2] == b"ANA@example.com;Ana Again;;Sevilla;duplicate of line 2"
    assert lines[3].startswith("bo@example;Bo Ström;caregivers;Malmö;".encode("cp1252"))
    assert lines[4] == b'erased@example.com;Erased;;;"address was erased on request; not imported"'
    assert lines[5].startswith('cy@example.com;"Cy; ""the Third""";monthly;Zürich;extra;'.encode("cp1252"))
    assert len(lines) == 8 and lines[7] == b""

    fixed = (
        written.replace(b"ana.at.example.com", b"ana.lopez@example.com")
        .replace(b"bo@example;", b"bo@example.se;")
        .replace(b"Z\xfcrich;extra;", b"Z\xfcrich;")
        .replace(b"nonsense tag!", b"monthly")
    )
    rejects.write_bytes(fixed)
    result = cli("subscribers", "import", str(rejects))
    assert "added 4, updated 1, unchanged 0, rejected 1." in result.stdout  # the duplicate updates Ana's name
    assert f"{rejects}:5: address was erased on request" in result.stderr
    listed = people(cli)
    assert listed["ana.lopez@example.com"] == ("Ana Typo", ["patients"])
    assert listed["bo@example.se"] == ("Bo Ström", ["caregivers"])
    assert listed["cy@example.com"] == ('Cy; "the Third"', ["monthly"])
    assert listed["dee@example.com"] == ("Dee", ["monthly"])
    assert len(listed) == 5
    shown = json.loads(cli("subscribers", "show", "cy@example.com").stdout)
    assert shown["attributes"] == {"city": "Zürich"}  # reject_reason is not an attribute
    assert [(e["kind"], e["new_status"], e["source"]) for e in shown["events"]] == [
        ("created", "active", "import:rejects.csv")
    ]
    assert shown["created_at"] == shown["confirmed_at"] == shown["events"][0]["at"]
    assert shown["created_at"].endswith("+00:00")


def test_detection_rules():
    assert detect_encoding(b"\xef\xbb\xbfemail\n", True) == ("utf-8-sig", "byte order mark")
    assert detect_encoding("email\n".encode("utf-16"), True)[0] == "utf-16"
    assert detect_encoding("email,name\na@example.com,Zoë\n".encode(), True)[0] == "utf-8"
    # A sample cut inside a multi-byte character is still UTF-8.
    assert detect_encoding("email,name\na@example.com,Zoë".encode()[:-1], False)[0] == "utf-8"
    assert detect_encoding("email;name\nb@example.com;Björk Guðmundsdóttir\n".encode("cp1252"), True)[0] == "cp1252"
    assert detect_delimiter("email,name\r\n") == ","
    assert detect_delimiter("Email Address;First Name;Last Name\n") == ";"
    assert detect_delimiter("email\tname;with semicolon\n") == "\t"
    assert detect_delimiter("email\n") == ","
    assert detect_delimiter('"name, full";email\n') == ";"


# The fast address check must never disagree with email-validator (via normalize_email,
# the project's one address rule): whatever it accepts, normalize_email accepts and
# normalises to the same string. It may decline anything; the exact path then decides.
EDGE_CASES = [
    "ana@example.com",
    "Ana@Example.COM",
    "  padded@example.com ",
    "first.last@sub.example.co.uk",
    "o'brien@example.ie",
    "a+tag@example.com",
    "a=b@example.com",
    "x@example.c",
    "x@example.museum",
    "x@example.123",
    "x@123.example",
    "x@-example.com",
    "x@example-.com",
    "x@ex--ample.com",
    "x@xn--bcher-kva.example",
    "x@xn--bcher.example",
    "x@ab--cd.com",
    "x@example..com",
    ".x@example.com",
    "x.@example.com",
    "x..y@example.com",
    "x@example.com.",
    "x@localhost",
    "x@example.local",
    "x@printer.LOCAL",
    "x@example.test",
    "x@example.invalid",
    "x@example.onion",
    "x@in-addr.arpa",
    "x@example.internal",
    "x@example",
    "Postmaster@example.com",
    "ABUSE@example.com",
    "info@example.com",
    "x@[192.0.2.1]",
    '"quoted"@example.com',
    "x y@example.com",
    "x@exa mple.com",
    "@example.com",
    "x@",
    "x@@example.com",
    "zoë@example.com",
    "x@bücher.example",
    "x@ＥＸＡＭＰＬＥ.com",
    "x\u200b@example.com",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "x@" + "a" * 63 + ".com",
    "x@" + "a" * 64 + ".com",
    "x@" + ".".join(["a" * 60] * 4) + ".com",
    "x@" + ".".join(["a" * 61] * 4) + ".com",
    "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".co",
    "x@example.c0m",
    "x@example.xn--p1ai",
    "x@EXAMPLE.ORG",
    "Ana.López@example.com",
    "x\n@example.com",
    "x@example.com\r\n",
]

ALPHABET = "abcXYZ019._+-'=@@..--" + "!#$%&*/?^`{|}~ " + "éß"


def random_addresses(count: int) -> list[str]:
    rng = random.Random(12)
    addresses = []
    for _ in range(count):
        local = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        labels = [
            "".join(rng.choice("abcXYZ019-") for _ in range(rng.randint(0, 10))) for _ in range(rng.randint(1, 4))
        ]
        tld = rng.choice(["com", "org", "c", "local", "test", "co", "museum", "q1", "ARPA", "xn--p1ai", ""])
        addresses.append(f"{local}@{'.'.join([*labels, tld])}")
    return addresses


def judged(address: str) -> tuple[str, str] | None:
    try:
        return normalize_email(address)
    except DataError:
        return None


def test_fast_address_check_agrees_with_email_validator():
    corpus = EDGE_CASES + random_addresses(20_000) + [f"user{i}@example{i % 97}.com" for i in range(2_000)]
    fast_accepted = 0
    for address in corpus:
        fast = _plain_address(address.strip())
        exact = judged(address)
        if fast is not None:
            fast_accepted += 1
            assert fast == exact, address
        assert (import_address(address) if exact else None) == exact, address
    # The check is not vacuous: every plain address and some random ones took the fast path.
    assert fast_accepted > 2_100


def test_fast_address_check_uses_email_validators_current_lists():
    """The importer keeps copies of two of email-validator's lists (so that a plain import
    never loads it): an upgrade of email-validator that changes them fails here."""
    from email_validator import SPECIAL_USE_DOMAIN_NAMES
    from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

    from newsletter import importer

    assert importer._SPECIAL_USE_TLDS == {name.rsplit(".", 1)[-1] for name in SPECIAL_USE_DOMAIN_NAMES}
    assert importer._CASE_INSENSITIVE_MAILBOXES == set(CASE_INSENSITIVE_MAILBOX_NAMES)


def test_greeting_is_on_by_default_and_front_matter_turns_it_off(tmp_path):
    from newsletter.config import load_settings
    from newsletter.content import load_issue
    from newsletter.errors import ContentError
    from newsletter.render import Recipient, Renderer
    from newsletter.tokens import Tokens

    from .helpers import ENV, SAMPLE_ISSUE

    renderer = Renderer(load_settings(environ=ENV))
    ana = Recipient(1, "ana@example.com", "Ana López", {})

    def render(path):
        rendered = renderer.render(load_issue(path))
        return rendered.personalise(ana, renderer.personal_fields(ana, 7, Tokens(renderer.settings.secret_key)))

    html, text = render(SAMPLE_ISSUE)
    assert "Hi Ana," in html and text.count("Hi Ana,") == 1
    source = SAMPLE_ISSUE.read_text(encoding="utf-8")
    without = tmp_path / SAMPLE_ISSUE.name
    without.write_text(source.replace("---\n", "---\ngreeting: false\n", 1), encoding="utf-8")
    html, text = render(without)
    assert "Hi Ana," not in html and "Hi Ana," not in text
    assert 'class="greeting"' not in html
    wrong = tmp_path / "wrong.md"
    wrong.write_text(source.replace("---\n", "---\ngreeting: nope\n", 1), encoding="utf-8")
    with pytest.raises(ContentError, match="front matter 'greeting' must be true or false"):
        load_issue(wrong)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rejects_file_cannot_overwrite_the_input(cli, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("email\nnot-an-address\n", encoding="utf-8")
    result = cli("subscribers", "import", str(path), "--rejects", str(path), expect=1)
    assert f"Error: {path}: the rejects file cannot be the file being imported" in result.stderr
    assert path.read_text(encoding="utf-8") == "email\nnot-an-address\n"
