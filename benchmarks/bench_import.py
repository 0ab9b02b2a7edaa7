"""CSV import speed and memory, on SQLite and PostgreSQL, against baselines from the same run.

    python benchmarks/bench_import.py                                  # SQLite: 10k, 100k, 1M rows
    python benchmarks/bench_import.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/bench_import.py --rows 100000 --old-importer main   # plus the importer as of `main`

For each database and size, in this order, each in a fresh child process and a fresh
database (a new SQLite file; a new schema on PostgreSQL):

- raw: the database itself taking the same rows: csv.reader plus executemany (SQLite) or
  COPY (PostgreSQL) of the subscriber rows alone, no validation, tags or events: a ceiling
  (both raw rows write 2,000 rows per statement and commit every 50,000, as the importer);
- writes: the database itself taking every row the import writes: the subscriber rows,
  their tag rows and a "created" event each, in the importer's own statements (executemany
  and json_each on SQLite; ids from the sequence and COPY on PostgreSQL), a transaction
  per 50,000 rows, no validation or duplicate checks: the ceiling for this schema;
- import: `newsletter subscribers import FILE`, the whole command (interpreter start-up,
  schema check, encoding and delimiter detection, validation, subscribers + tags +
  "created" events + duplicate tracking, a transaction per 50,000 rows or 2 seconds);
- old (with --old-importer REF): the same command with the package as of git REF.

The generated file is `email,name,tags` (two tags per row), as issue 12 specifies. Figures:
wall-clock rows/s of the whole command; CPU seconds (user + system: less sensitive to
other load on a shared machine) of the command with every process it started ("cpu s"),
of the importing process alone ("writer s": the critical path, since large files are
parsed in a second process) and of the PostgreSQL backend serving it ("server s", read
from /proc: the server must run on this machine); the importing process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RAW_SQLITE = """
import csv, secrets, sqlite3, sys, time
from datetime import datetime, timezone
now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
connection = sqlite3.connect(sys.argv[2])
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("PRAGMA synchronous=NORMAL")
sql = ("INSERT INTO subscribers (email, email_key, name, status, attributes, consent_at, consent_source,"
       " consent_ip, consent_text, created_at, confirmed_at, token)"
       " VALUES (?, ?, ?, 'active', '{}', ?, 'raw', '', '', ?, ?, ?)")
with open(sys.argv[1], newline="", encoding="utf-8") as handle:
    reader = csv.reader(handle)
    next(reader)
    batch, batches = [], 0
    for email, name, tags in reader:
        batch.append((email, email.lower(), name, now, now, now, secrets.token_hex(10)))
        if len(batch) == 2000:
            connection.executemany(sql, batch)
            batches += 1
            if batches % 25 == 0:
                connection.commit()
            batch = []
    connection.executemany(sql, batch)
    connection.commit()
"""

# CPU seconds a PostgreSQL backend has used so far (the server runs on this machine).
BACKEND_CPU = """
import os
def backend_cpu(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
"""

RAW_POSTGRES = """
import csv, secrets, sys
from datetime import datetime, timezone
import psycopg
now = datetime.now(timezone.utc)
columns = ("email, email_key, name, status, attributes, consent_at, consent_source, consent_ip, consent_text,"
           " created_at, confirmed_at, token")
with psycopg.connect(sys.argv[2], options=f"-csearch_path={sys.argv[3]}") as connection:
    with open(sys.argv[1], newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        done, batches = False, 0
        while not done:
            with connection.cursor().copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
                for count, (email, name, tags) in enumerate(reader, 1):
                    token = secrets.token_hex(10)
                    copy.write_row((email, email.lower(), name, "active", "{}", now, "raw", "", "", now, now, token))
                    if count == 2000:
                        break
                else:
                    done = True
            batches += 1
            if done or batches % 25 == 0:
                connection.commit()
    print("SERVERCPU", backend_cpu(connection.info.backend_pid), file=sys.stderr)
"""

RAW_POSTGRES = BACKEND_CPU + RAW_POSTGRES

# "writes": the rows the import writes, by the importer's own statements, and nothing else.
WRITES_SQLITE = """
import csv, json, secrets, sqlite3, sys
from datetime import datetime, timezone
now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
connection = sqlite3.connect(sys.argv[2], isolation_level=None)
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("PRAGMA synchronous=NORMAL")
sql = ("INSERT INTO subscribers (email, email_key, name, status, attributes, consent_at, consent_source,"
       " consent_ip, consent_text, created_at, confirmed_at, token)"
       " VALUES (?, ?, ?, 'active', '{}', ?, 'raw', '', '', ?, ?, ?)")
events = ("INSERT INTO events (subscriber_id, at, kind, old_status, new_status, source, reason)"
          " SELECT id, created_at, 'created', '', status, 'raw', '' FROM subscribers WHERE id BETWEEN ? AND ?")

def write(batch, tags, last_batch=False):
    global batches
    if not connection.in_transaction:
        connection.execute("BEGIN")
    connection.executemany(sql, batch)
    last = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
    first = last - len(batch) + 1
    by_tag = {}
    for offset, names in enumerate(tags):
        for tag in names.split(";"):
            by_tag.setdefault(tag, []).append(first + offset)
    for tag, ids in by_tag.items():
        connection.execute("INSERT INTO subscriber_tags (subscriber_id, tag) SELECT value, ? FROM json_each(?)",
                           (tag, json.dumps(ids)))
    connection.execute(events, (first, last))
    batches += 1
    if last_batch or batches % 25 == 0:
        connection.execute("COMMIT")

batches = 0

with open(sys.argv[1], newline="", encoding="utf-8") as handle:
    reader = csv.reader(handle)
    next(reader)
    batch, tags = [], []
    for email, name, tag_list in reader:
        batch.append((email, email.lower(), name, now, now, now, secrets.token_hex(10)))
        tags.append(tag_list)
        if len(batch) == 2000:
            write(batch, tags)
            batch, tags = [], []
    write(batch, tags, last_batch=True) if batch else connection.in_transaction and connection.execute("COMMIT")
"""

WRITES_POSTGRES = (
    BACKEND_CPU
    + """
import csv, secrets, sys
from datetime import datetime, timezone
import psycopg
now = datetime.now(timezone.utc).isoformat(sep=" ")
columns = ("id, email, email_key, name, status, attributes, consent_at, consent_source, consent_ip, consent_text,"
           " created_at, confirmed_at, token")
events = ("INSERT INTO events (subscriber_id, at, kind, old_status, new_status, source, reason)"
          " SELECT id, created_at, 'created', '', status, 'raw', '' FROM subscribers WHERE id BETWEEN %s AND %s")

def write(connection, rows, last_batch=False):
    global batches
    cursor = connection.cursor()
    cursor.execute("SELECT nextval(pg_get_serial_sequence('subscribers', 'id')) FROM generate_series(1, %s)",
                   (len(rows),))
    ids = [i for (i,) in cursor.fetchall()]
    with cursor.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
        copy.write("".join(f"{i}\\t{e}\\t{e.lower()}\\t{n}\\tactive\\t{{}}\\t{now}\\traw\\t\\t\\t{now}\\t{now}\\t"
                           f"{secrets.token_hex(10)}\\n" for i, (e, n, _) in zip(ids, rows)))
    with cursor.copy("COPY subscriber_tags (subscriber_id, tag) FROM STDIN") as copy:
        copy.write("".join(f"{i}\\t{tag}\\n" for i, (_, _, tags) in zip(ids, rows) for tag in tags.split(";")))
    if ids[-1] - ids[0] == len(ids) - 1:
        cursor.execute(events, (ids[0], ids[-1]))
    else:
        raise SystemExit("ids not consecutive")
    batches += 1
    if last_batch or batches % 25 == 0:
        connection.commit()

batches = 0

with psycopg.connect(sys.argv[2], options=f"-csearch_path={sys.argv[3]}") as connection:
    with open(sys.argv[1], newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        batch = []
        for row in reader:
            batch.append(row)
            if len(batch) == 2000:
                write(connection, batch)
                batch = []
        write(connection, batch, last_batch=True) if batch else connection.commit()
    print("SERVERCPU", backend_cpu(connection.info.backend_pid), file=sys.stderr)
"""
)

IMPORT = (
    BACKEND_CPU
    + """
import resource, sys
from sqlalchemy import event
from sqlalchemy.pool import Pool
from newsletter.cli import main

server = {}

def remember(dbapi_connection, _record):
    pid = getattr(getattr(dbapi_connection, "info", None), "backend_pid", None)
    if pid:  # PostgreSQL: read the backend's CPU each time the connection goes back to the pool
        server[pid] = max(server.get(pid, 0.0), backend_cpu(pid))

event.listen(Pool, "checkin", remember)
event.listen(Pool, "close", remember)
try:
    main(["subscribers", "import", sys.argv[1]])
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("MAXRSS", usage.ru_maxrss, file=sys.stderr)
    print("SELFCPU", usage.ru_utime + usage.ru_stime, file=sys.stderr)
    print("SERVERCPU", sum(server.values()), file=sys.stderr)
"""
)


def generate(path: Path, rows: int) -> None:
    rng = random.Random(7)
    tags = ["patients", "caregivers", "monthly", "clinicians"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("email,name,tags\n")
        for index in range(rows):
            handle.write(f"user{index}@example{index % 97}.com,Person {index},{';'.join(rng.sample(tags, 2))}\n")


class Database:
    """A fresh, initialised database per measurement."""

    def __init__(self, kind: str, workdir: Path, postgres_url: str | None):
        self.kind = kind
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.schema: str | None = None
        self.path: Path | None = None

    def create(self, pythonpath: Path) -> str:
        if self.kind == "sqlite":
            self.path = self.workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
            url = f"sqlite:///{self.path}"
        else:
            self.schema = f"bench_{uuid.uuid4().hex[:10]}"
            self._psql(f"CREATE SCHEMA {self.schema}")
            url = f"{self.postgres_url}?options=-csearch_path%3D{self.schema}"
        env = child_env(url, pythonpath)
        init = [sys.executable, "-m", "newsletter", "init"]
        subprocess.run(init, env=env, cwd=self.workdir, check=True, capture_output=True)
        return url

    def drop(self) -> None:
        if self.schema:
            self._psql(f"DROP SCHEMA {self.schema} CASCADE")
            self.schema = None
        if self.path:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.path = None

    def _psql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
            c.execute(statement)


def child_env(url: str, pythonpath: Path) -> dict[str, str]:
    return {
        **os.environ,
        "NEWSLETTER_SECRET_KEY": "bench-secret",
        "NEWSLETTER_DATABASE_URL": url,
        "PYTHONPATH": str(pythonpath),
    }


def timed(command: list[str], env: dict[str, str], cwd: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed: {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    reported = {}  # by the importing process itself
    for name in ("MAXRSS", "SELFCPU", "SERVERCPU"):
        if name in result.stderr:
            reported[name] = float(result.stderr.rsplit(name, 1)[1].split()[0])
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    return {
        "wall": wall,
        "cpu": cpu,
        "writer_cpu": reported.get("SELFCPU", cpu),
        "server_cpu": reported.get("SERVERCPU", float("nan")),
        "rss": reported["MAXRSS"] / 1024 if "MAXRSS" in reported else float("nan"),
        "summary": summary,
    }


def measure(kind: str, what: str, rows: int, csv_path: Path, db: Database, pythonpath: Path) -> dict:
    url = db.create(pythonpath)
    try:
        env = child_env(url, pythonpath)
        if what == "raw" and kind == "sqlite":
            command = [sys.executable, "-c", RAW_SQLITE, str(csv_path), str(db.path)]
        elif what == "raw":
            plain = db.postgres_url.replace("postgresql+psycopg://", "postgresql://")
            command = [sys.executable, "-c", RAW_POSTGRES, str(csv_path), plain, db.schema]
        elif what == "writes" and kind == "sqlite":
            command = [sys.executable, "-c", WRITES_SQLITE, str(csv_path), str(db.path)]
        elif what == "writes":
            plain = db.postgres_url.replace("postgresql+psycopg://", "postgresql://")
            command = [sys.executable, "-c", WRITES_POSTGRES, str(csv_path), plain, db.schema]
        else:
            command = [sys.executable, "-c", IMPORT, str(csv_path)]
        figures = timed(command, env, db.workdir)
    finally:
        db.drop()
    if what not in ("raw", "writes") and f"added {rows}," not in figures["summary"]:
        raise SystemExit(f"{what} did not add every row: {figures['summary']}")
    return {"kind": kind, "what": what, "rows": rows, **figures}


def old_package(ref: str, workdir: Path) -> Path:
    """The newsletter package as of git REF, extracted next to the benchmark's files."""
    target = workdir / f"old-{ref.replace('/', '-')}"
    target.mkdir()
    archive = subprocess.run(["git", "archive", ref, "newsletter"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL (a fresh schema per run)")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--old-importer", metavar="REF", help="also run the importer as of this git ref")
    parser.add_argument("--old-max-rows", type=int, default=100_000, help="largest size for the old importer")
    args = parser.parse_args()
    kinds = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        old = old_package(args.old_importer, workdir) if args.old_importer else None
        print(
            f"{'database':<11} {'what':<7} {'rows':>9} {'wall s':>7} {'rows/s':>8} "
            f"{'cpu s':>7} {'rows/cpu s':>10} {'writer s':>8} {'server s':>8} {'RSS MB':>7}"
        )
        results = []
        for rows in args.rows:
            csv_path = workdir / f"list-{rows}.csv"
            generate(csv_path, rows)
            for kind in kinds:
                db = Database(kind, workdir, args.postgres)
                plan = [("raw", ROOT), ("writes", ROOT), ("import", ROOT)]
                if old and rows <= args.old_max_rows:
                    plan.append(("old", old))
                for what, pythonpath in plan:
                    r = measure(kind, what, rows, csv_path, db, pythonpath)
                    results.append(r)
                    print(
                        f"{kind:<11} {what:<7} {rows:>9} {r['wall']:>7.2f} {rows / r['wall']:>8.0f} "
                        f"{r['cpu']:>7.2f} {rows / r['cpu']:>10.0f} {r['writer_cpu']:>8.2f} {r['server_cpu']:>8.2f} "
                        f"{r['rss']:>7.1f}",
                        flush=True,
                    )
            csv_path.unlink()
        for kind in kinds:
            imports = {r["rows"]: r for r in results if r["kind"] == kind and r["what"] == "import"}
            if len(imports) > 1:
                smallest, largest = min(imports), max(imports)
                ratio = imports[largest]["rss"] / imports[smallest]["rss"]
                print(f"{kind}: peak RSS at {largest:,} rows is {ratio:.2f}x that at {smallest:,}")


if __name__ == "__main__":
    main()
