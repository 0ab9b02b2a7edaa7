"""Streaming CSV import (our own export, Mailchimp audience exports, listmonk exports).

One pass over the file: rows are read and written in batches of BATCH_ROWS, and
committed a few batches at a time (Commits), so a crash or Ctrl-C leaves every batch either
fully written or not at all, and memory stays flat whatever the file size. A duplicate within the file is found
through the subscribers table's own unique index plus 4 bytes per added row (LinesById),
or a temporary table for the few rows that add nobody, never an in-memory set of addresses.

Speed (docs/performance.md): large files are parsed in a forked child process while this
one writes (read_in_child); new subscribers, their tags and "created" events are written
with a few statements per batch on SQLite and with COPY on PostgreSQL; a plain ASCII
address is checked by a strict pattern whose every match email-validator accepts
unchanged (tests/test_import_formats.py proves the agreement on a corpus), every other
address goes to email-validator, which stays the judge.

The file's encoding and delimiter are detected (or given): see `detect_encoding` and
`detect_delimiter`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import multiprocessing
import os
import queue
import re
import signal
import sqlite3
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from .addresses import clean_attributes, clean_tag, clean_text, normalize_email, suppression_hash
from .errors import DataError
from .models import FINAL_STATUSES, Subscriber, SubscriberTag, utcnow
from .subscribers import SubscriberList, change_status

BATCH_ROWS = 2000
# A commit writes every page its transaction changed; in a large list the new rows' index
# entries land on pages all over the file, so ten batches per commit write far fewer
# pages per row than one (at 1,000,000 rows on SQLite, nearly twice the rows per second:
# docs/performance.md). A transaction is never held longer than COMMIT_SECONDS, so a
# signup or an unsubscribe waiting for the database waits about that long at most.
COMMIT_ROWS = 25 * BATCH_ROWS
COMMIT_SECONDS = 2.0
SHOWN_REJECTS = 20  # kept in memory for the report; the rejects file gets all of them
SAMPLE_BYTES = 1 << 20  # read to detect the encoding
# Files at least this large are parsed in a child process (see read_in_child); smaller
# ones on a thread, where starting a process would cost more than it saves.
PARSE_IN_CHILD_BYTES = 1 << 20
DEFAULT_WAL_AUTOCHECKPOINT = 1000  # pages: SQLite's default, restored after an import
TOKEN_BYTES = 10  # random bytes of a subscriber's link value, as models.new_subscriber_token
csv.field_size_limit(1_000_000)

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
# Windows code pages, most used first: what Excel writes when it does not write UTF-8. A
# short file cannot tell them apart from Mac or DOS code pages, so among the encodings
# charset-normalizer finds about as likely, these win.
PREFERRED_LEGACY_ENCODINGS = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "cp1255", "cp1256", "cp1258")

# Column names we understand, lower-cased: ours, Mailchimp's audience export, listmonk's.
EMAIL_COLUMNS = ("email", "email address", "e-mail", "email_address")
NAME_COLUMNS = ("name", "full name")
FIRST_NAME_COLUMNS = ("first name", "fname", "first_name")
LAST_NAME_COLUMNS = ("last name", "lname", "last_name")
TAG_COLUMNS = ("tags",)
STATUS_COLUMNS = ("status",)
ATTRIBUTES_JSON_COLUMNS = ("attributes", "attribs")
CONSENT_COLUMNS = {
    "consent_at": "consent_at",
    "optin_time": "consent_at",
    "consent_ip": "consent_ip",
    "optin_ip": "consent_ip",
    "consent_source": "consent_source",
    "consent_text": "consent_text",
}
# Columns that describe the record rather than the person: recognised, not stored as attributes.
IGNORED_COLUMNS = {
    "uuid",
    "id",
    "created_at",
    "updated_at",
    "confirmed_at",
    "unsubscribed_at",
    "member_rating",
    "confirm_time",
    "confirm_ip",
    "last_changed",
    "leid",
    "euid",
    "latitude",
    "longitude",
    "gmtoff",
    "dstoff",
    "timezone",
    "cc",
    "region",
    "notes",
    "unsub_time",
    "unsub_campaign_title",
    "unsub_campaign_id",
    "unsub_reason",
    "unsub_reason_other",
    "clean_time",
    "clean_campaign_title",
    "clean_campaign_id",
    "reject_reason",  # the last column of our own rejects file, so a fixed one re-imports
}
STATUS_ALIASES = {
    "active": "active",
    "enabled": "active",
    "subscribed": "active",
    "confirmed": "active",
    "pending": "pending",
    "unconfirmed": "pending",
    "unsubscribed": "unsubscribed",
    "blocklisted": "unsubscribed",
    "blocked": "unsubscribed",
    "bounced": "bounced",
    "cleaned": "bounced",
    "complained": "complained",
}


@dataclass
class FileFormat:
    """How a CSV file is read, and how each choice was made (shown to the user)."""

    encoding: str
    encoding_source: str
    delimiter: str
    delimiter_source: str = "given"

    def describe(self) -> str:
        name = DELIMITERS.get(self.delimiter, repr(self.delimiter))
        return f"encoding {self.encoding} ({self.encoding_source}), delimiter {name} ({self.delimiter_source})"


def detect_encoding(sample: bytes, whole_file: bool) -> tuple[str, str]:
    """(codec name, how it was chosen) from the first bytes of a file."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "byte order mark"
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32", "byte order mark"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "byte order mark"
    try:
        # final=False: the sample may end inside a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=whole_file)
        return "utf-8", "valid UTF-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(sample))
    if not matches:
        raise DataError(
            "cannot tell which text encoding the file uses",
            hint="give it with --encoding (e.g. --encoding cp1252 for a file saved by Excel on Windows)",
        )
    best = matches[0]
    close = [match for match in matches if match.chaos <= best.chaos + 0.05]
    for preferred in PREFERRED_LEGACY_ENCODINGS:
        if any(preferred in match.could_be_from_charset for match in close):
            return preferred, "detected by charset-normalizer"
    return best.encoding, "detected by charset-normalizer"


def check_encoding(name: str) -> str:
    try:
        codecs.lookup(name)
        return name
    except LookupError:
        raise DataError(
            f"unknown encoding {name!r}", hint="use a Python codec name such as utf-8, cp1252, latin-1 or utf-16"
        ) from None


def _header_names(header_line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([header_line], delimiter=delimiter), [])
    except csv.Error:
        return []


def detect_delimiter(header_line: str) -> str:
    """The delimiter that splits the header into the most columns, one of them an address column."""
    best, best_score = ",", (False, 0)
    for delimiter in DELIMITERS:
        names = _header_names(header_line, delimiter)
        has_email = any(_column_key(name) in EMAIL_COLUMNS for name in names)
        score = (has_email, len(names))
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _column_key(name: str) -> str:
    return name.strip().lstrip("\ufeff").lower()


@dataclass
class Reject:
    line: int
    reason: str
    text: str = ""  # the record exactly as it was in the file, line ending included


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects: list[Reject] = field(default_factory=list)  # the first SHOWN_REJECTS, in line order
    committed_through: int = 0  # last line of the last batch written
    interrupted: bool = False
    stopped: str | None = None  # why the import stopped early, when not by an interrupt
    format: FileFormat | None = None
    rejects_written: int = 0


@dataclass
class Row:
    line: int
    email: str
    key: str
    name: str | None
    tags: frozenset[str]
    status: str | None
    attributes: dict[str, Any]
    consent: dict[str, Any]
    text: str


class ColumnMap:
    """Where each field lives in a header row."""

    def __init__(self, header: list[str], delimiter: str = ","):
        names = [_column_key(column) for column in header]
        self.width = len(names)

        def find(candidates: tuple[str, ...]) -> int | None:
            for index, column in enumerate(names):
                if column in candidates:
                    return index
            return None

        self.email = find(EMAIL_COLUMNS)
        if self.email is None:
            shown = ", ".join(repr(name[:40]) for name in header[:8]) + (", ..." if len(header) > 8 else "")
            raise DataError(
                f"line 1: no 'email' column in the header (read with delimiter "
                f"{DELIMITERS.get(delimiter, repr(delimiter))}: {shown or 'nothing'})",
                hint="name the address column 'email' (or 'Email Address'); "
                "if the columns are split wrongly, give --delimiter",
            )
        self.name = find(NAME_COLUMNS)
        self.first = find(FIRST_NAME_COLUMNS)
        self.last = find(LAST_NAME_COLUMNS)
        self.tags = find(TAG_COLUMNS)
        self.status = find(STATUS_COLUMNS)
        self.attributes_json = find(ATTRIBUTES_JSON_COLUMNS)
        self.consent = {index: CONSENT_COLUMNS[c] for index, c in enumerate(names) if c in CONSENT_COLUMNS}
        known = {self.email, self.name, self.first, self.last, self.tags, self.status, self.attributes_json}
        self.extra = {
            index: header[index].strip()
            for index, column in enumerate(names)
            if index not in known and index not in self.consent and column not in IGNORED_COLUMNS and column
        }


# A plain ASCII address: dot-atom local part from a common subset of characters, host
# labels of letters, digits and inner hyphens, a top-level domain of letters. Everything
# this accepts (with the checks in `_plain_address`), email-validator accepts and
# normalises to the same string: only the domain's case changes. Anything else, and every
# non-ASCII address, goes to email-validator.
_PLAIN_ADDRESS = re.compile(
    r"([A-Za-z0-9_'+=-]+(?:\.[A-Za-z0-9_'+=-]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}))\Z"
)
# email-validator's own lists, copied so that an import need not load it for plain
# addresses (tests/test_import_formats.py checks that they still match): every
# special-use domain name ends in one of these labels, so a different TLD cannot match
# any; and the RFC 2142 role mailboxes it lower-cases.
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})
_CASE_INSENSITIVE_MAILBOXES = frozenset(
    {"abuse", "ftp", "hostmaster", "info", "marketing", "news", "noc", "postmaster", "sales", "security"}
    | {"support", "usenet", "uucp", "webmaster", "www"}
)


def _plain_address(candidate: str) -> tuple[str, str] | None:
    """(normalized, key) for a well-formed plain ASCII address; None means: ask email-validator."""
    if len(candidate) > 254:
        return None
    match = _PLAIN_ADDRESS.match(candidate)
    if (
        match is None
        or len(match[1]) > 64
        or "--" in match[2]  # Punycode (xn--) and R-LDH labels: IDNA rules apply
        or match[3].lower() in _SPECIAL_USE_TLDS
        or match[1].lower() in _CASE_INSENSITIVE_MAILBOXES  # email-validator lower-cases these
    ):
        return None
    normalized = f"{match[1]}@{match[2].lower()}"
    return normalized, normalized.lower()


def import_address(raw: str) -> tuple[str, str]:
    """normalize_email's answer, quickly for the common plain address."""
    return _plain_address((raw or "").strip()) or normalize_email(raw)


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes the codec could not read (surrogateescape)


class RowParser:
    """Turns the fields of one record into a Row, raising DataError with the reason."""

    def __init__(self, columns: ColumnMap, default_tags: set[str], encoding: str):
        self.columns = columns
        self.default_tags = frozenset(default_tags)
        self.undecodable = (
            "not valid UTF-8; if the file was saved by Excel, try --encoding cp1252"
            if encoding.startswith("utf")
            else f"bytes that are not valid {encoding}; give the file's encoding with --encoding"
        )
        self._tag_cache: dict[str, frozenset[str]] = {}

    def tags(self, raw: str) -> frozenset[str]:
        cached = self._tag_cache.get(raw)
        if cached is None:
            # Mailchimp writes "tag one","tag two"; we write tag one;tag two.
            separator = ";" if ";" in raw or '"' not in raw else ","
            parsed = {clean_tag(t.strip().strip('"')) for t in raw.split(separator) if t.strip().strip('"')}
            cached = self.default_tags | parsed
            if len(self._tag_cache) > 10_000:  # many distinct tag sets: keep memory flat
                self._tag_cache.clear()
            self._tag_cache[raw] = cached
        return cached

    def parse(self, values: list[str], line: int, text: str) -> Row:
        columns = self.columns
        if len(values) != columns.width:
            raise DataError(f"expected {columns.width} fields, found {len(values)}")
        if _UNDECODABLE.search(text):
            raise DataError(self.undecodable)
        email, key = import_address(values[columns.email])
        name = None
        if columns.name is not None:
            name = clean_text(values[columns.name])
        elif columns.first is not None or columns.last is not None:
            parts = [values[i] for i in (columns.first, columns.last) if i is not None]
            name = clean_text(" ".join(part.strip() for part in parts if part.strip()))
        tags = self.default_tags
        if columns.tags is not None and values[columns.tags].strip():
            tags = self.tags(values[columns.tags])
        status = None
        if columns.status is not None and values[columns.status].strip():
            status = STATUS_ALIASES.get(values[columns.status].strip().lower())
            if status is None:
                raise DataError(f"unknown status {values[columns.status].strip()!r}")
        attributes: dict[str, Any] = {}
        if columns.attributes_json is not None and values[columns.attributes_json].strip():
            try:
                parsed = json.loads(values[columns.attributes_json])
            except json.JSONDecodeError:
                raise DataError("the attributes column is not valid JSON") from None
            if not isinstance(parsed, dict):
                raise DataError("the attributes column must be a JSON object")
            attributes.update(parsed)
        for index, column in columns.extra.items():
            if values[index].strip():
                attributes[column] = values[index].strip()
        consent: dict[str, Any] = {}
        for index, field_name in columns.consent.items():
            value = values[index].strip()
            if not value:
                continue
            if field_name == "consent_at":
                consent[field_name] = _parse_time(value)
            else:
                consent[field_name] = clean_text(value, 2000)
        if attributes:
            attributes = clean_attributes(attributes)
        return Row(line, email, key, name, tags, status, attributes, consent, text)


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"cannot read {value!r} as a date and time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class CsvSource:
    """The records of a text stream, each with its line number and its exact text."""

    def __init__(self, stream: TextIO, delimiter: str | None):
        self.header_text = stream.readline()
        if not self.header_text.strip():
            raise DataError("the file is empty")
        self.delimiter = delimiter or detect_delimiter(self.header_text)
        self.delimiter_source = "given" if delimiter else "detected from the header"
        self._pending: list[str] = []
        self._reader = csv.reader(self._capture(self.header_text, stream), delimiter=self.delimiter)
        try:
            self.header = next(self._reader)
        except csv.Error as exc:
            raise DataError(f"line 1: {exc}") from None
        self._pending.clear()
        ending = self.header_text[len(self.header_text.rstrip("\r\n")) :]
        self.line_ending = ending or "\n"

    def _capture(self, first: str, stream: Iterable[str]) -> Iterator[str]:
        pending = self._pending
        pending.append(first)
        yield first
        for line in stream:
            pending.append(line)
            yield line

    def records(self) -> Iterator[tuple[int, list[str] | None, str, str | None]]:
        """(first line, fields or None, exact text, CSV error) for every record after the header."""
        reader, pending = self._reader, self._pending
        line = reader.line_num
        while True:
            start = line + 1
            error = None
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                values, error = None, f"malformed CSV: {exc}"
            line = reader.line_num
            text = pending[0] if len(pending) == 1 else "".join(pending)
            pending.clear()
            yield start, values, text, error


class RejectsFile:
    """The input's header plus a `reject_reason` column, then each rejected record exactly
    as it was: fix the rows in place and import the file again. Opened at the first reject."""

    def __init__(self, path: Path, source: CsvSource, encoding: str):
        self.path = path
        self.source = source
        self.encoding = encoding
        self.handle: TextIO | None = None
        self._quote_buffer = io.StringIO()
        self._quoter = csv.writer(self._quote_buffer, delimiter=source.delimiter, lineterminator="")

    def _field(self, value: str) -> str:
        self._quote_buffer.seek(0)
        self._quote_buffer.truncate()
        self._quoter.writerow([value])
        return self._quote_buffer.getvalue()

    def _line(self, text: str, last: str) -> str:
        record = text.rstrip("\r\n")
        return f"{record}{self.source.delimiter}{self._field(last)}{self.source.line_ending}"

    def write(self, reject: Reject) -> None:
        if self.handle is None:
            try:
                self.handle = open(self.path, "w", encoding=self.encoding, errors="surrogateescape", newline="")
            except OSError as exc:
                raise DataError(f"{self.path}: cannot write the rejects file: {exc.strerror}") from None
            self.handle.write(self._line(self.source.header_text, "reject_reason"))
        self.handle.write(self._line(reject.text, reject.reason))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


SUBSCRIBER_COLUMNS = (
    "email",
    "email_key",
    "name",
    "status",
    "attributes",
    "consent_at",
    "consent_source",
    "consent_ip",
    "consent_text",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "token",  # the random link value (tokens.py): raw SQL skips the model's default
)
EVENT_COLUMNS = ("subscriber_id", "at", "kind", "old_status", "new_status", "source", "reason")
CREATED_EVENTS = "SELECT id, created_at, 'created', '', status, ?, '' FROM subscribers WHERE id"

# A parsed row as it travels from the parsing process: plain tuples pickle twice as fast
# as objects. `values` is the new subscriber's row in SUBSCRIBER_COLUMNS order; `prepared`
# is what the writer makes of it ahead of time (BulkWriter.prepare).
# (line, text, values, tags, status in the file, prepared)
Parsed = tuple[int, str, tuple, frozenset[str], str | None, Any]


@dataclass
class Batch:
    """BATCH_ROWS parsed rows, the rejects among them, and the bytes read to get them."""

    rows: list[Parsed]
    rejects: list[tuple[int, str, str]]  # line, reason, text
    last_line: int
    bytes_read: int = 0


class ByteCounter:
    """Bytes read so far, handed over with each batch (the progress bar runs in the writer)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, count: int) -> None:
        self.count += count

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


class LinesById:
    """The line each subscriber added by this import came from, by id: 4 bytes a row.

    A later row with the same address finds the earlier one through the subscribers table's
    own unique index, so duplicates need no table of their own. Ids are taken in runs
    (consecutive within a batch, and usually across batches): one array per run."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.lines: list[array] = []

    def add(self, ids: list[int], lines: list[int]) -> None:
        start = 0
        for index in range(1, len(ids) + 1):
            if index == len(ids) or ids[index] != ids[index - 1] + 1:
                self._add_run(ids[start], lines[start:index])
                start = index

    def _add_run(self, first_id: int, lines: list[int]) -> None:
        if self.starts and self.starts[-1] + len(self.lines[-1]) == first_id:
            self.lines[-1].extend(lines)
        else:
            self.starts.append(first_id)
            self.lines.append(array("I", lines))

    def get(self, subscriber_id: int) -> int | None:
        run = bisect_right(self.starts, subscriber_id) - 1
        if run < 0:
            return None
        offset = subscriber_id - self.starts[run]
        return self.lines[run][offset] if offset < len(self.lines[run]) else None


class BulkWriter:
    """The few statements an import runs per batch, in bulk, on the session's own
    connection and transaction (so the ORM merge of existing rows commits with them)."""

    def __init__(self, session: Session):
        self.session = session
        dialect = session.get_bind().dialect
        # Store datetimes exactly as the ORM would (SQLite keeps them as text). JSON is
        # json.dumps, the engine's serializer (db.make_engine sets no other).
        self._time = Subscriber.__table__.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        self.seen_rows = 0  # rows in the seen-table (see Importer._check_batch)

    @property
    def dbapi(self) -> Any:
        # session.connection() begins the session's transaction if none is open.
        return self.session.connection().connection.driver_connection

    def time(self, value: datetime | None) -> Any:
        return self._time(value) if self._time and value is not None else value

    def json(self, value: dict[str, Any]) -> str:
        return json.dumps(value)

    SEEN_TABLE = "CREATE TEMPORARY TABLE import_seen (email_key VARCHAR(320) PRIMARY KEY, line INTEGER)"

    def create_seen(self) -> None:
        cursor = self.dbapi.cursor()
        cursor.execute("DROP TABLE IF EXISTS import_seen")
        cursor.execute(self.SEEN_TABLE)
        self.session.commit()

    def drop_seen(self) -> None:
        try:
            self.session.rollback()
            self.dbapi.cursor().execute("DROP TABLE IF EXISTS import_seen")
            self.session.commit()
        except Exception:  # the connection may already be gone after an interrupt
            self.session.rollback()

    def record_seen(self, pairs: list[tuple[str, int]]) -> None:
        if pairs:
            self.insert_rows("import_seen", ("email_key", "line"), pairs)
            self.seen_rows += len(pairs)

    def has_suppressions(self) -> bool:
        cursor = self.dbapi.cursor()
        cursor.execute("SELECT 1 FROM suppressions LIMIT 1")
        return cursor.fetchone() is not None

    def seen_lines(self, keys: list[str]) -> dict[str, int]:
        if not self.seen_rows or not keys:
            return {}
        return dict(self._select_in("SELECT email_key, line FROM import_seen WHERE email_key", keys))

    def existing_ids(self, keys: list[str]) -> dict[str, int]:
        return dict(self._select_in("SELECT email_key, id FROM subscribers WHERE email_key", keys)) if keys else {}

    def suppressed(self, hashes: list[str]) -> set[str]:
        return {h for (h,) in self._select_in("SELECT address_hash FROM suppressions WHERE address_hash", hashes)}

    def _select_in(self, sql: str, values: list[str]) -> list[tuple]:
        raise NotImplementedError

    def prepare(self, values: tuple) -> Any:
        """Work on a new subscriber's values that the parsing process can do ahead of time."""
        return None

    def insert_subscribers(self, rows: list[Parsed]) -> list[int]:
        """Insert the rows' values (SUBSCRIBER_COLUMNS); return their ids in the same order."""
        raise NotImplementedError

    def insert_tags(self, ids: list[int], rows: list[Parsed]) -> None:
        raise NotImplementedError

    def insert_rows(self, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
        raise NotImplementedError

    def insert_created_events(self, ids: list[int], source: str) -> None:
        """A "created" event for each new subscriber, copied from its row inside the database."""
        raise NotImplementedError

    def after_commit(self) -> None:
        """Housekeeping between batches (see the subclasses)."""

    def finish(self) -> None:
        """After the last batch, even an interrupted one."""


class Checkpointer:
    """Copies the WAL back into an SQLite database file on a second connection, on a thread.

    SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages: a
    sixth of an import's writing time, on the writer's path. Here the writer's commits
    only wake this thread, whose PASSIVE checkpoints never block the writer (SQLite
    releases the GIL while it copies pages). The thread starts at the first commit: by
    then any parsing process has been forked."""

    def __init__(self, path: str):
        self.path = path
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def poke(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="import-checkpoint", daemon=True)
            self.thread.start()
        self.wake.set()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout=1000")
            while True:
                self.wake.wait()
                self.wake.clear()
                if self.stopping:
                    return
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:  # the writer's connection checkpoints when it closes
            return
        finally:
            connection.close()

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join()


class SqliteWriter(BulkWriter):
    CHUNK = 500  # bound parameters per IN (...), well under every SQLite build's limit
    checkpointer: Checkpointer | None = None
    # One b-tree instead of a table plus its primary-key index.
    SEEN_TABLE = BulkWriter.SEEN_TABLE + " WITHOUT ROWID"

    def _select_in(self, sql: str, values: list, before: tuple = ()) -> list[tuple]:
        cursor = self.dbapi.cursor()
        found: list[tuple] = []
        for start in range(0, len(values), self.CHUNK):
            chunk = values[start : start + self.CHUNK]
            cursor.execute(f"{sql} IN ({','.join('?' * len(chunk))})", (*before, *chunk))
            found.extend(cursor.fetchall())
        return found

    def insert_subscribers(self, rows: list[Parsed]) -> list[int]:
        values = [row[2] for row in rows]
        self._insert_subscribers(values)
        cursor = self.dbapi.cursor()
        last = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(values) + 1
        # SQLite has one writer at a time and gives each new row the next rowid, so our rows
        # took consecutive ids: true exactly when the first and last rows sit at both ends.
        ends = dict(cursor.execute("SELECT id, email_key FROM subscribers WHERE id IN (?, ?)", (first, last)))
        keys = [row[1] for row in values]
        if ends.get(first) == keys[0] and ends.get(last) == keys[-1]:
            return list(range(first, last + 1))
        ids = dict(self._select_in("SELECT email_key, id FROM subscribers WHERE email_key", keys))
        return [ids[key] for key in keys]

    def _insert_subscribers(self, values: list[tuple]) -> None:
        """executemany binds every value of every row: when a batch's rows differ only in
        address, name and link value (the usual file), the rest goes in as SQL literals."""
        shared = values[0][3:12]
        if all(row[3:12] == shared for row in values) and all(_sqlite_literal_safe(v) for v in shared):
            literals = ", ".join(_sqlite_literal(value) for value in shared)
            sql = f"INSERT INTO subscribers ({', '.join(SUBSCRIBER_COLUMNS)}) VALUES (?, ?, ?, {literals}, ?)"
            self.dbapi.cursor().executemany(sql, [(row[0], row[1], row[2], row[12]) for row in values])
        else:
            self.insert_rows("subscribers", SUBSCRIBER_COLUMNS, values)

    def insert_tags(self, ids: list[int], rows: list[Parsed]) -> None:
        """One statement per distinct tag, its ids as one JSON array that SQLite reads
        itself: a third cheaper than binding two values for every tag row."""
        ids_by_tag: dict[str, list[int]] = {}
        for subscriber_id, row in zip(ids, rows, strict=True):
            for tag in row[3]:
                ids_by_tag.setdefault(tag, []).append(subscriber_id)
        cursor = self.dbapi.cursor()
        for tag, tagged in ids_by_tag.items():
            cursor.execute(
                "INSERT INTO subscriber_tags (subscriber_id, tag) SELECT value, ? FROM json_each(?)",
                (tag, json.dumps(tagged)),
            )

    def create_seen(self) -> None:
        super().create_seen()
        # The import's commits only append to the WAL; copying it back into the database
        # file (a checkpoint) runs on a thread of its own (see Checkpointer).
        path = self.session.get_bind().engine.url.database
        if path and path != ":memory:" and not path.startswith("file:"):
            self.dbapi.execute("PRAGMA wal_autocheckpoint=0")
            self.checkpointer = Checkpointer(path)

    def after_commit(self) -> None:
        if self.checkpointer:
            self.checkpointer.poke()

    def finish(self) -> None:
        if self.checkpointer:
            self.checkpointer.close()
            self.checkpointer = None
            try:
                self.dbapi.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_WAL_AUTOCHECKPOINT}")
            except Exception:  # the connection may already be gone after an interrupt
                pass

    def insert_created_events(self, ids: list[int], source: str) -> None:
        if ids[-1] - ids[0] == len(ids) - 1:  # consecutive: one range scan of the primary key
            self.dbapi.cursor().execute(
                f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) {CREATED_EVENTS} BETWEEN ? AND ?",
                (source, ids[0], ids[-1]),
            )
        else:
            self._select_in(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) {CREATED_EVENTS}", ids, (source,))

    def insert_rows(self, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        self.dbapi.cursor().executemany(sql, rows)


class PostgresWriter(BulkWriter):
    """COPY for every insert; ids come from the table's own sequence, taken in one query."""

    def __init__(self, session: Session):
        super().__init__(session)
        self.batches = 0
        self._shared_text: dict[tuple, str] = {}

    def after_commit(self) -> None:
        """Autovacuum never analyses a temporary table: without statistics the planner
        may read the whole seen-table for every batch's lookup (quadratic). Analyse it
        after batch 1, 2, 4, 8, ... in which it holds rows: a few times in all. The
        subscribers table needs none: its lookup is by a unique index, which the planner
        prefers whatever the statistics say (measured at 1,000,000 rows)."""
        if not self.seen_rows:
            return
        self.batches += 1
        if self.batches & (self.batches - 1) == 0:
            self.dbapi.cursor().execute("ANALYZE import_seen")

    def _select_in(self, sql: str, values: list[str]) -> list[tuple]:
        cursor = self.dbapi.cursor()
        cursor.execute(f"{sql} = ANY(%s)", (values,))
        return cursor.fetchall()

    def insert_created_events(self, ids: list[int], source: str) -> None:
        select = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) {CREATED_EVENTS.replace('?', '%s')}"
        if ids[-1] - ids[0] == len(ids) - 1:  # consecutive: one range scan of the primary key
            self.dbapi.cursor().execute(f"{select} BETWEEN %s AND %s", (source, ids[0], ids[-1]))
        else:
            self.dbapi.cursor().execute(f"{select} = ANY(%s)", (source, ids))

    def time(self, value: datetime | None) -> str | None:
        # Text, as COPY takes it: a datetime object would be formatted once per column
        # per row and pickle slowly on its way from the parsing process.
        return value.astimezone(UTC).isoformat(sep=" ") if value is not None else None

    def prepare(self, values: tuple) -> str:
        """The row as a line of COPY text, all but the id, so the writer only joins strings.

        Rows of a file mostly share every value but address, name and link value: that
        shared part is formatted once."""
        shared = values[3:12]
        text = self._shared_text.get(shared)
        if text is None:
            if len(self._shared_text) > 1000:  # a file with per-row consent data: keep memory flat
                self._shared_text.clear()
            text = self._shared_text[shared] = "\t".join([_copy_field(value) for value in shared])
        # values[12], the link value, is hexadecimal: nothing to escape.
        return f"{_copy_field(values[0])}\t{_copy_field(values[1])}\t{_copy_field(values[2])}\t{text}\t{values[12]}\n"

    def insert_subscribers(self, rows: list[Parsed]) -> list[int]:
        cursor = self.dbapi.cursor()
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('subscribers', 'id')) FROM generate_series(1, %s)", (len(rows),)
        )
        ids = [subscriber_id for (subscriber_id,) in cursor.fetchall()]
        text = "".join([f"{i}\t{row[5]}" for i, row in zip(ids, rows, strict=True)])
        self._copy("subscribers", ("id", *SUBSCRIBER_COLUMNS), text)
        return ids

    def insert_tags(self, ids: list[int], rows: list[Parsed]) -> None:
        text = "".join([f"{i}\t{_copy_field(tag)}\n" for i, row in zip(ids, rows, strict=True) for tag in row[3]])
        self._copy("subscriber_tags", ("subscriber_id", "tag"), text)

    def _copy(self, table: str, columns: tuple[str, ...], text: str) -> None:
        with self.dbapi.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            copy.write(text)

    def insert_rows(self, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
        with self.dbapi.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any) -> str:
    """A value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    return (value if isinstance(value, str) else str(value)).translate(_COPY_ESCAPES)


def _sqlite_literal_safe(value: Any) -> bool:
    return value is None or (isinstance(value, str) and "\x00" not in value)


def _sqlite_literal(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def make_writer(session: Session) -> BulkWriter:
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return SqliteWriter(session)
    if name == "postgresql":
        return PostgresWriter(session)
    raise DataError(f"import does not support the {name} database", hint="use SQLite or PostgreSQL")


class Commits:
    """The open transaction's batches, committed together when COMMIT_ROWS rows or
    COMMIT_SECONDS have gone into it; only then do they count in the report (added,
    updated, rejects, the last line saved), so the report never names a row that a
    failure or a second Ctrl-C took back out."""

    def __init__(
        self,
        session: Session,
        writer: BulkWriter,
        report: ImportReport,
        rejects_file: RejectsFile | None,
        every_batch: bool = False,
    ):
        self.session = session
        self.writer = writer
        self.report = report
        self.rejects_file = rejects_file
        self.every_batch = every_batch
        self._batches: list[tuple[int, int, int, int, list[Reject]]] = []  # only counts: memory stays flat
        self._rows = 0
        self._opened = 0.0
        self._in_batch = False

    def written(self, batch: Batch, added: int, updated: int, unchanged: int, rejects: list[Reject]) -> None:
        if not self._batches:
            self._opened = time.monotonic()
        self._batches.append((batch.last_line, added, updated, unchanged, rejects))
        self._rows += len(batch.rows)

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._in_batch = True
        yield
        self._in_batch = False

    def commit_whole_or_roll_back(self) -> None:
        if self._in_batch:
            self._batches, self._rows = [], 0
            self.session.rollback()
            return
        try:
            self.commit()
        except BaseException:  # interrupted again while committing: what the database kept, it kept
            self._batches, self._rows = [], 0
            self.session.rollback()

    def commit_if_due(self) -> None:
        if self.every_batch or self._rows >= COMMIT_ROWS or time.monotonic() - self._opened >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        if not self._batches:
            return
        self.session.commit()
        self.writer.after_commit()
        batches, self._batches, self._rows = self._batches, [], 0
        report = self.report
        for last_line, added, updated, unchanged, rejects in batches:
            report.added += added
            report.updated += updated
            report.unchanged += unchanged
            report.committed_through = last_line
            rejects.sort(key=lambda reject: reject.line)
            for reject in rejects:
                report.rejected += 1
                if len(report.rejects) < SHOWN_REJECTS:
                    report.rejects.append(reject)
                if self.rejects_file:
                    self.rejects_file.write(reject)


class Importer:
    def __init__(
        self,
        subscribers: SubscriberList,
        tags: tuple[str, ...] = (),
        status: str = "active",
        dry_run: bool = False,
        source: str = "import",
        encoding: str | None = None,
        delimiter: str | None = None,
    ):
        if status not in ("active", "pending", "unsubscribed"):
            raise DataError("--status must be active, pending or unsubscribed")
        if delimiter is not None and delimiter not in DELIMITERS:
            raise DataError(f"unsupported delimiter {delimiter!r}", hint="use one of , ; | or tab")
        self.db = subscribers.db
        self.secret_key = subscribers.secret_key
        self.default_tags = {clean_tag(tag) for tag in tags}
        self.default_status = status
        self.dry_run = dry_run
        self.source = source[:40]  # the events.source column's width
        self.encoding = check_encoding(encoding) if encoding else None
        self.delimiter = delimiter
        self.added_lines = LinesById()

    def run(
        self,
        path: Path,
        progress: Callable[[int], None] | None = None,
        rejects_path: Path | None = None,
    ) -> ImportReport:
        """Import `path`; `progress` is called with the number of bytes read since last call.

        With `rejects_path`, rejected records go there as they are found (see RejectsFile)."""
        report = ImportReport()
        if rejects_path is not None and Path(rejects_path).resolve() == Path(path).resolve():
            raise DataError(
                f"{path}: the rejects file cannot be the file being imported", hint="give --rejects a new name"
            )
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise DataError(f"{path}: {exc.strerror}") from None
        with raw:
            if self.encoding:
                encoding, encoding_source = self.encoding, "given"
            else:
                sample = raw.read(SAMPLE_BYTES)
                raw.seek(0)
                encoding, encoding_source = detect_encoding(sample, whole_file=len(sample) < SAMPLE_BYTES)
            counter = ByteCounter()
            stream = io.TextIOWrapper(
                io.BufferedReader(_CountingReader(raw, counter), 1 << 16),
                encoding=encoding,
                errors="surrogateescape",
                newline="",
            )
            try:
                source = CsvSource(stream, self.delimiter)
            except UnicodeError as exc:  # e.g. a UTF-16 file forced to read as UTF-32
                raise DataError(
                    f"{path}: cannot read as {encoding}: {getattr(exc, 'reason', None) or exc}", hint="check --encoding"
                ) from None
            report.format = FileFormat(encoding, encoding_source, source.delimiter, source.delimiter_source)
            parser = RowParser(ColumnMap(source.header, source.delimiter), self.default_tags, encoding)
            rejects_file = RejectsFile(rejects_path, source, encoding) if rejects_path else None
            in_child = _can_fork() and Path(path).stat().st_size >= PARSE_IN_CHILD_BYTES
            try:
                self._run(source, parser, counter, report, rejects_file, progress, in_child)
            finally:
                if rejects_file:
                    rejects_file.close()
                    report.rejects_written = report.rejected if rejects_file.handle else 0
        return report

    def _run(
        self,
        source: CsvSource,
        parser: RowParser,
        counter: ByteCounter,
        report: ImportReport,
        rejects: RejectsFile | None,
        progress: Callable[[int], None] | None,
        in_child: bool,
    ) -> None:
        # One connection for the whole run: the temporary seen-table lives on it.
        with self.db.engine.connect() as connection:
            session = Session(bind=connection, expire_on_commit=False)
            writer = make_writer(session)
            try:
                writer.create_seen()
                batches = self._batches(source, parser, counter, writer)
                # Parsing runs ahead of writing: in a child process on large files (two
                # cores, no shared GIL), else on a thread.
                # A dry run commits every batch: its rollback must not undo an earlier
                # batch's seen-table rows.
                commits = Commits(session, writer, report, rejects, every_batch=self.dry_run)
                with interrupts_between_batches() as interrupted:
                    for batch in (read_in_child if in_child else read_ahead)(batches):
                        if progress and batch.bytes_read:
                            progress(batch.bytes_read)
                        if interrupted():
                            commits.commit()
                            raise KeyboardInterrupt
                        with commits.writing():
                            self._write_batch(session, writer, batch, commits)
                        if interrupted():
                            commits.commit()
                            raise KeyboardInterrupt
                        commits.commit_if_due()
                    commits.commit()
            except KeyboardInterrupt:
                # Raised between batches (the progress callback, the reader): the batches
                # written are whole and are kept. In the middle of one (a second Ctrl-C),
                # everything since the last commit goes.
                commits.commit_whole_or_roll_back()
                report.interrupted = True
            except ParserStopped as exc:  # whole batches stay saved: say through which line
                commits.commit()
                report.stopped = str(exc)
            finally:
                writer.finish()
                writer.drop_seen()
                session.close()

    def _batches(
        self, source: CsvSource, parser: RowParser, counter: ByteCounter, writer: BulkWriter
    ) -> Iterator[Batch]:
        """The file's records in line order, parsed, BATCH_ROWS rows (plus their rejects) at a time."""
        rows: list[Row] = []
        rejects: list[tuple[int, str, str]] = []
        line = 0
        for line, values, text, error in source.records():
            if error is not None:
                rejects.append((line, error, text))
                continue
            if not "".join(values).strip():  # a blank line, or only empty fields
                continue
            try:
                rows.append(parser.parse(values, line, text))
            except DataError as exc:
                rejects.append((line, str(exc), text))
                continue
            if len(rows) >= BATCH_ROWS:
                yield Batch(self._ready(rows, writer), rejects, line, counter.take())
                rows, rejects = [], []
        if rows or rejects:
            yield Batch(self._ready(rows, writer), rejects, line, counter.take())

    def _ready(self, rows: list[Row], writer: BulkWriter) -> list[Parsed]:
        """Each row with its new subscriber's values, built while the writer is busy elsewhere."""
        stored_now = writer.time(utcnow())
        empty_json = writer.json({})
        # One system call for the batch's random link values, not one per row.
        tokens = os.urandom(TOKEN_BYTES * len(rows)).hex()
        width = 2 * TOKEN_BYTES
        ready = []
        for index, row in enumerate(rows):
            status = row.status or self.default_status
            consent = row.consent
            values = (
                row.email,
                row.key,
                row.name or "",
                status,
                writer.json(row.attributes) if row.attributes else empty_json,
                writer.time(consent["consent_at"]) if "consent_at" in consent else stored_now,
                consent.get("consent_source", self.source),
                consent.get("consent_ip", ""),
                consent.get("consent_text", ""),
                stored_now,
                stored_now if status == "active" else None,
                stored_now if status == "unsubscribed" else None,
                tokens[index * width : (index + 1) * width],
            )
            ready.append((row.line, row.text, values, row.tags, row.status, writer.prepare(values)))
        return ready

    def _write_batch(self, session: Session, writer: BulkWriter, batch: Batch, commits: Commits) -> None:
        """Write one batch in the open transaction; `commits` reports it once committed."""
        rejects = [Reject(*reject) for reject in batch.rejects]
        new_rows, existing, seen = self._check_batch(writer, batch.rows, rejects)
        merged = self._merge_existing(session, existing) if existing else 0
        ids = self._insert(writer, new_rows)
        if self.dry_run:
            session.rollback()  # discard the batch; the seen-table below still records it
            seen.extend((row[2][1], row[0]) for row in new_rows)
        elif ids:
            self.added_lines.add(ids, [row[0] for row in new_rows])
        writer.record_seen(seen)
        commits.written(batch, len(new_rows), merged, len(existing) - merged, rejects)

    def _check_batch(
        self, writer: BulkWriter, batch: list[Parsed], rejects: list[Reject]
    ) -> tuple[list[Parsed], list[Parsed], list[tuple[str, int]]]:
        """(new rows, rows of existing subscribers, (key, line) for the seen-table); the
        duplicates and erased addresses go to `rejects`.

        A duplicate names the first line of its address. Earlier in this batch: a dict. In
        an earlier batch: rows this import added are found by the subscribers table's own
        index and `added_lines`; rows that matched an existing subscriber, were erased, or
        were not written (dry run) are kept in the seen-table."""
        first_line: dict[str, int] = {}
        unique: list[Parsed] = []
        for row in batch:
            key = row[2][1]
            first = first_line.setdefault(key, row[0])
            if first != row[0]:
                rejects.append(Reject(row[0], f"duplicate of line {first}", row[1]))
            else:
                unique.append(row)
        found = writer.existing_ids(list(first_line))
        earlier = {key: line for key, subscriber_id in found.items() if (line := self.added_lines.get(subscriber_id))}
        earlier.update(writer.seen_lines([key for key in first_line if key not in earlier]))
        rows = []
        for row in unique:
            if row[2][1] in earlier:
                rejects.append(Reject(row[0], f"duplicate of line {earlier[row[2][1]]}", row[1]))
            else:
                rows.append(row)
        seen: list[tuple[str, int]] = []
        # Hashing every address costs more than the rest of the row: skip it while the
        # suppression list is empty (checked in this batch's transaction).
        if rows and writer.has_suppressions():
            hashes = [suppression_hash(self.secret_key, row[2][1]) for row in rows]
            erased = writer.suppressed(hashes)
            kept = []
            for row, address_hash in zip(rows, hashes, strict=True):
                if address_hash in erased:
                    rejects.append(Reject(row[0], "address was erased on request; not imported", row[1]))
                    seen.append((row[2][1], row[0]))
                else:
                    kept.append(row)
            rows = kept
        if not found:
            return rows, [], seen
        existing = [row for row in rows if row[2][1] in found]
        seen.extend((row[2][1], row[0]) for row in existing)
        return [row for row in rows if row[2][1] not in found], existing, seen

    def _merge_existing(self, session: Session, rows: list[Parsed]) -> int:
        """Merge each row into its existing subscriber; how many of them changed."""
        subscribers = {
            subscriber.email_key: subscriber
            for subscriber in session.scalars(
                select(Subscriber).where(Subscriber.email_key.in_([row[2][1] for row in rows]))
            )
        }
        changed = sum(self._merge(session, subscribers[row[2][1]], row) for row in rows)
        session.flush()
        return changed

    def _merge(self, session: Session, subscriber: Subscriber, row: Parsed) -> bool:
        """Update name, tags, attributes; status may only move towards a final status."""
        _line, _text, values, tags, status, _prepared = row
        changed = False
        name = values[2]
        if name and name != subscriber.name:
            subscriber.name = name
            changed = True
        missing_tags = tags - set(subscriber.tags)
        for tag in sorted(missing_tags):
            subscriber.tag_rows.append(SubscriberTag(tag=tag))
            changed = True
        merged = {**(subscriber.attributes or {}), **json.loads(values[4])}
        if merged != (subscriber.attributes or {}):
            subscriber.attributes = merged
            changed = True
        if status in FINAL_STATUSES and subscriber.status not in FINAL_STATUSES:
            change_status(session, subscriber, status, self.source, "imported status")
            changed = True
        return changed

    def _insert(self, writer: BulkWriter, rows: list[Parsed]) -> list[int]:
        if not rows:
            return []
        ids = writer.insert_subscribers(rows)
        writer.insert_tags(ids, rows)
        writer.insert_created_events(ids, self.source)
        return ids


class ParserStopped(DataError):
    """The forked process parsing the file is gone: the import stops after its last whole batch."""


@contextmanager
def interrupts_between_batches() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (or SIGTERM) lets the batch being written finish and stops before the next
    one, so the report names exactly the lines saved (an interrupt landing between a commit
    and its bookkeeping could not). A second one interrupts at once, e.g. a batch waiting
    for a locked database. Only the main thread can handle signals; elsewhere, and for a
    signal that is ignored or handled by someone else, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {signum: signal.getsignal(signum) for signum in defaults}
    requested: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    for signum, default in defaults.items():
        if previous[signum] is default:
            signal.signal(signum, handler)
    try:
        yield lambda: bool(requested)
    finally:
        for signum, default in defaults.items():
            if previous[signum] is default:
                signal.signal(signum, previous[signum])


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def read_in_child(items: Iterator[Any]) -> Iterator[Any]:
    """Yield from `items`, computed in a forked child process and handed over through a pipe.

    The child parses while this process writes, each on its own core with its own GIL.
    The pipe holds little, so the child stays about a batch ahead and memory stays flat.
    Ctrl-C is this process's to handle: the child ignores it and is ended here."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_send_all, args=(items, sender, receiver), name="import-parser", daemon=True)
    child.start()
    sender.close()
    try:
        while True:
            try:
                kind, item = receiver.recv()
            except (EOFError, OSError):  # OSError: it died in the middle of handing over a batch
                child.join(1.0)
                raise ParserStopped(
                    f"the process reading the file stopped (exit code {child.exitcode}): killed, or out of memory"
                ) from None
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _send_all(items: Iterator[Any], sender: Connection, receiver: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The writer's end, inherited: closed, so that a send fails once the writer is gone.
    receiver.close()
    try:
        for item in items:
            sender.send(("item", item))
        sender.send(("done", None))
    except BrokenPipeError:  # the writer stopped early
        return
    except Exception as error:  # handed to the writer, who decides
        try:
            sender.send(("error", error))
        except Exception:  # not picklable
            sender.send(("error", DataError(str(error))))


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def read_ahead(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Yield from `items`, computed on a helper thread up to `depth` items ahead.

    Parsing the next batch (Python) then overlaps with writing this one (SQLite and
    PostgreSQL do their work without holding the GIL). Memory stays bounded by `depth`
    batches; an exception in the helper (a Ctrl-C from the progress callback included) is
    raised here, in the caller's thread, and stopping early stops the helper."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(finished)
        except BaseException as error:  # handed to the caller, who decides
            put(_Raised(error))

    helper = threading.Thread(target=produce, name="import-reader", daemon=True)
    helper.start()
    try:
        while True:
            item = handoff.get()
            if item is finished:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        helper.join()


class _CountingReader(io.RawIOBase):
    """Reports bytes read, so the progress bar can show the share of the file done."""

    def __init__(self, raw: io.BufferedReader, progress: Callable[[int], None] | None):
        self.raw = raw
        self.progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        if self.progress and count:
            self.progress(count)
        return count

    def close(self) -> None:
        self.raw.close()
        super().close()
