"""Streaming CSV import (our own export, Mailchimp audience exports, listmonk exports).

Rows are read and written in batches of BATCH_ROWS, one transaction per batch, so a crash
or Ctrl-C leaves every batch either fully written or not at all, and memory stays flat
whatever the file size. Duplicates within the file are found through a temporary table,
not an in-memory set, for the same reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.orm import Session

from .addresses import clean_attributes, clean_tag, clean_text, normalize_email, suppression_hash
from .errors import DataError
from .models import FINAL_STATUSES, Event, Subscriber, SubscriberTag, Suppression, utcnow
from .subscribers import SubscriberList, change_status

BATCH_ROWS = 2000
csv.field_size_limit(1_000_000)

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
class Reject:
    line: int
    reason: str
    raw: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    committed_through: int = 0  # last line of the last batch written
    interrupted: bool = False

    @property
    def rejected(self) -> int:
        return len(self.rejects)


@dataclass
class Row:
    line: int
    email: str
    key: str
    name: str | None
    tags: set[str]
    status: str | None
    attributes: dict[str, Any]
    consent: dict[str, Any]


class ColumnMap:
    """Where each field lives in a header row."""

    def __init__(self, header: list[str]):
        names = [column.strip().lstrip("\ufeff").lower() for column in header]
        self.width = len(names)

        def find(candidates: tuple[str, ...]) -> int | None:
            for index, column in enumerate(names):
                if column in candidates:
                    return index
            return None

        self.email = find(EMAIL_COLUMNS)
        if self.email is None:
            raise DataError("line 1: no 'email' column in the header")
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


def parse_row(columns: ColumnMap, values: list[str], line: int, default_tags: set[str]) -> Row:
    if len(values) != columns.width:
        raise DataError(f"expected {columns.width} fields, found {len(values)}")
    for value in values:
        if any("\udc80" <= char <= "\udcff" for char in value):
            raise DataError("not valid UTF-8")
    email, key = normalize_email(values[columns.email])
    name = None
    if columns.name is not None:
        name = clean_text(values[columns.name])
    elif columns.first is not None or columns.last is not None:
        parts = [values[i] for i in (columns.first, columns.last) if i is not None]
        name = clean_text(" ".join(part.strip() for part in parts if part.strip()))
    tags = set(default_tags)
    if columns.tags is not None and values[columns.tags].strip():
        raw = values[columns.tags]
        # Mailchimp writes "tag one","tag two"; we write tag one;tag two.
        separator = ";" if ";" in raw or '"' not in raw else ","
        tags |= {clean_tag(t.strip().strip('"')) for t in raw.split(separator) if t.strip().strip('"')}
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
    return Row(line, email, key, name, tags, status, clean_attributes(attributes), consent)


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"cannot read {value!r} as a date and time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_rows(stream: TextIO, default_tags: set[str]) -> Iterator[Row | Reject]:
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("the file is empty") from None
    except csv.Error as exc:
        raise DataError(f"line 1: {exc}") from None
    columns = ColumnMap(header)
    line = reader.line_num
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield Reject(start, f"malformed CSV: {exc}")
            continue
        line = reader.line_num
        if not values or all(not value.strip() for value in values):
            continue
        try:
            yield parse_row(columns, values, start, default_tags)
        except DataError as exc:
            yield Reject(start, str(exc), values)


class Importer:
    def __init__(
        self,
        subscribers: SubscriberList,
        tags: tuple[str, ...] = (),
        status: str = "active",
        dry_run: bool = False,
        source: str = "import",
    ):
        if status not in ("active", "pending", "unsubscribed"):
            raise DataError("--status must be active, pending or unsubscribed")
        self.db = subscribers.db
        self.secret_key = subscribers.secret_key
        self.default_tags = {clean_tag(tag) for tag in tags}
        self.default_status = status
        self.dry_run = dry_run
        self.source = source

    def run(self, path: Path, progress: Callable[[int], None] | None = None) -> ImportReport:
        """Import `path`; `progress` is called with the number of bytes read since last call."""
        report = ImportReport()
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise DataError(f"{path}: {exc.strerror}") from None
        counter = _CountingReader(raw, progress)
        stream = io.TextIOWrapper(
            io.BufferedReader(counter), encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        # One connection for the whole run: the temporary seen-table lives on it.
        with self.db.engine.connect() as connection, stream:
            session = Session(bind=connection, expire_on_commit=False)
            try:
                self._create_seen_table(session)
                batch: list[Row] = []
                for item in read_rows(stream, self.default_tags):
                    if isinstance(item, Reject):
                        report.rejects.append(item)
                        continue
                    batch.append(item)
                    if len(batch) >= BATCH_ROWS:
                        self._write_batch(session, batch, report)
                        batch = []
                if batch:
                    self._write_batch(session, batch, report)
            except KeyboardInterrupt:
                session.rollback()
                report.interrupted = True
            finally:
                self._drop_seen_table(session)
                session.close()
        report.rejects.sort(key=lambda reject: reject.line)
        return report

    # The seen-table records every address of this file already written, with its line.
    def _create_seen_table(self, session: Session) -> None:
        session.execute(text("DROP TABLE IF EXISTS import_seen"))
        session.execute(text("CREATE TEMPORARY TABLE import_seen (email_key VARCHAR(320) PRIMARY KEY, line INTEGER)"))
        session.commit()

    def _drop_seen_table(self, session: Session) -> None:
        try:
            session.rollback()
            session.execute(text("DROP TABLE IF EXISTS import_seen"))
            session.commit()
        except Exception:  # the connection may already be gone after an interrupt
            session.rollback()

    def _write_batch(self, session: Session, batch: list[Row], report: ImportReport) -> None:
        rows = self._drop_duplicates(session, batch, report)
        keys = [row.key for row in rows]
        suppressed = set(
            session.scalars(
                select(Suppression.address_hash).where(
                    Suppression.address_hash.in_([suppression_hash(self.secret_key, k) for k in keys])
                )
            )
        )
        existing = {
            subscriber.email_key: subscriber
            for subscriber in session.scalars(select(Subscriber).where(Subscriber.email_key.in_(keys)))
        }
        new_rows: list[Row] = []
        for row in rows:
            if suppression_hash(self.secret_key, row.key) in suppressed:
                report.rejects.append(Reject(row.line, "address was erased on request; not imported"))
            elif row.key in existing:
                if self._merge(session, existing[row.key], row):
                    report.updated += 1
                else:
                    report.unchanged += 1
            else:
                new_rows.append(row)
        self._insert(session, new_rows)
        report.added += len(new_rows)
        if self.dry_run:
            session.rollback()  # discard the batch; the seen-table below still records it
        session.execute(
            text("INSERT INTO import_seen (email_key, line) VALUES (:key, :line)"),
            [{"key": row.key, "line": row.line} for row in rows],
        )
        session.commit()
        report.committed_through = batch[-1].line

    def _drop_duplicates(self, session: Session, batch: list[Row], report: ImportReport) -> list[Row]:
        first_line: dict[str, int] = {}
        for key, line in session.execute(
            text("SELECT email_key, line FROM import_seen WHERE email_key IN :keys").bindparams(
                bindparam("keys", expanding=True)
            ),
            {"keys": [row.key for row in batch]},
        ):
            first_line[key] = line
        unique: list[Row] = []
        for row in batch:
            if row.key in first_line:
                report.rejects.append(Reject(row.line, f"duplicate of line {first_line[row.key]}"))
                continue
            first_line[row.key] = row.line
            unique.append(row)
        return unique

    def _merge(self, session: Session, subscriber: Subscriber, row: Row) -> bool:
        """Update name, tags, attributes; status may only move towards a final status."""
        changed = False
        if row.name and row.name != subscriber.name:
            subscriber.name = row.name
            changed = True
        missing_tags = row.tags - set(subscriber.tags)
        for tag in sorted(missing_tags):
            subscriber.tag_rows.append(SubscriberTag(tag=tag))
            changed = True
        merged = {**(subscriber.attributes or {}), **row.attributes}
        if merged != (subscriber.attributes or {}):
            subscriber.attributes = merged
            changed = True
        if row.status in FINAL_STATUSES and subscriber.status not in FINAL_STATUSES:
            change_status(session, subscriber, row.status, self.source, "imported status")
            changed = True
        return changed

    def _insert(self, session: Session, rows: list[Row]) -> None:
        if not rows:
            return
        now = utcnow()
        values = []
        for row in rows:
            status = row.status or self.default_status
            values.append(
                {
                    "email": row.email,
                    "email_key": row.key,
                    "name": row.name or "",
                    "status": status,
                    "attributes": row.attributes,
                    "consent_at": row.consent.get("consent_at", now),
                    "consent_source": row.consent.get("consent_source", self.source),
                    "consent_ip": row.consent.get("consent_ip", ""),
                    "consent_text": row.consent.get("consent_text", ""),
                    "created_at": now,
                    "confirmed_at": now if status == "active" else None,
                    "unsubscribed_at": now if status == "unsubscribed" else None,
                }
            )
        ids = session.execute(
            insert(Subscriber).returning(Subscriber.id, Subscriber.email_key, sort_by_parameter_order=True),
            values,
        ).all()
        tag_values = [
            {"subscriber_id": subscriber_id, "tag": tag}
            for (subscriber_id, _), row in zip(ids, rows, strict=True)
            for tag in sorted(row.tags)
        ]
        if tag_values:
            session.execute(insert(SubscriberTag), tag_values)
        session.execute(
            insert(Event),
            [
                {
                    "subscriber_id": subscriber_id,
                    "kind": "created",
                    "source": self.source,
                    "old_status": "",
                    "new_status": value["status"],
                    "reason": "",
                    "at": now,
                    "campaign_id": None,
                }
                for (subscriber_id, _), value in zip(ids, values, strict=True)
            ],
        )


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


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "reason", "row"])
        for reject in rejects:
            writer.writerow([reject.line, reject.reason, *reject.raw])
