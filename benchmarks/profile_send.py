"""Where `newsletter send` spends its time, per stage, sampled with py-spy against smtp-sink.

    pip install py-spy
    python benchmarks/profile_send.py --recipients 5000 --pool 1
    python benchmarks/profile_send.py --recipients 5000 --workers-postgres postgresql+psycopg://postgres@127.0.0.1/test

py-spy samples every thread of the process (the SMTP pool threads included) and of its
Python children (the compose process `send` forks for SMTP) without slowing them much.
Each sample is charged to the innermost stage found in its stack:

- socket: smtplib and the socket calls under it (sending the bytes, waiting for replies);
- database: SQLAlchemy, the DB driver and store.py (claims, the per-message commit);
- serialise: building the MIME bytes (header encoding, quoted-printable, DKIM);
- compose: personalising (slot values, escaping, signed links, the Message object);
- threads: handing work between threads (queues, futures, locks) and between the
  processes (the compose process's pipe: pickling, reading, writing);
- start-up: imports, lint, render + CSS inlining once per issue, enqueue.

Samples are of threads that are not idle: running Python or C code, or waiting for the
GIL (py-spy cannot tell those two apart), so a stage's seconds are the time it kept a
thread busy. Waiting in a socket or database call that released the GIL counts as idle,
except where py-spy's heuristics see the call as active (some sends and reads do show).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import fresh_postgres  # noqa: E402
from bench_wire import ISSUE, newsletter, seeded_sqlite, smtp_env, start_smtp_sink  # noqa: E402

# Innermost match wins; each rule is (stage, substrings of a "function (file:line)" frame).
RULES = [
    ("socket", ("smtplib.py", "socket.py", "ssl.py")),
    ("database", ("sqlalchemy/", "sqlite3/", "psycopg/", "newsletter/store.py", "newsletter/db.py")),
    ("serialise", ("_serialise", "_quoted_printable", "_header_value", "as_bytes", "dkim/", "email/")),
    (
        "compose",
        (
            "newsletter/render.py",
            "newsletter/tokens.py",
            "itsdangerous/",
            "newsletter/message.py",
            "compose (newsletter/campaigns.py",
            "build (newsletter/campaigns.py",
        ),
    ),
    ("threads", ("threading.py", "queue.py", "concurrent/futures", "multiprocessing/connection.py")),
]
SENDING = ("Sender.run", "run (newsletter/campaigns.py", "_loop (newsletter/worker.py")


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, needles in RULES:
            if any(needle in frame for needle in needles):
                return stage
    return "other"


def parse(path: Path) -> Counter:
    """Busy samples per stage, from py-spy's raw (collapsed) output."""
    busy: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        in_campaign = any(marker in stack for marker in SENDING) or "compose" in stack or "smtp_" in stack
        busy[stage_of(frames) if in_campaign else "start-up"] += int(count)
    return busy


def report(title: str, busy: Counter, rate: int, count: int) -> None:
    print(f"\n{title}\n")
    print("| stage | busy thread-seconds | per message (us) |")
    print("|---|---:|---:|")
    for stage in ("compose", "serialise", "database", "socket", "threads", "other", "start-up"):
        print(f"| {stage} | {busy[stage] / rate:.2f} | {busy[stage] / rate / count * 1e6:.0f} |")
    total = sum(busy.values())
    print(f"| total | {total / rate:.2f} | {total / rate / count * 1e6:.0f} |")


def profile(command: list[str], env: dict[str, str], cwd: Path, rate: int, out: Path) -> None:
    subprocess.run(
        ["py-spy", "record", "--threads", "--subprocesses", "--format", "raw", "--rate", str(rate), "-o", str(out)]
        + ["--"]
        + command,
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--pool", type=int, default=1, help="smtp_pool for `send`")
    parser.add_argument("--workers-postgres", help="profile one `newsletter worker` on this PostgreSQL instead")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--keep", help="copy py-spy's raw output here")
    args = parser.parse_args()
    if not shutil.which("py-spy"):
        raise SystemExit("py-spy not found: pip install py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "people.csv").write_text(
            "email,name,tags\n" + "".join(f"p{i}@example.com,Reader {i},monthly\n" for i in range(args.recipients))
        )
        sink, port = start_smtp_sink()
        out = workdir / "profile.txt"
        try:
            if args.workers_postgres:
                url, drop = fresh_postgres(args.workers_postgres, "profile")
                try:
                    env = smtp_env(port, url)
                    newsletter(["init"], env, workdir)
                    newsletter(["subscribers", "import", "people.csv"], env, workdir)
                    seeded_sqlite(args.recipients, workdir)  # copies and signs off the issue
                    newsletter(["send", str(workdir / ISSUE.name), "--yes", "--queue"], env, workdir)
                    command = [sys.executable, "-m", "newsletter", "worker", "--exit-when-idle"]
                    profile(command, env, workdir, args.rate, out)
                finally:
                    drop()
                title = f"1 `newsletter worker` on PostgreSQL, {args.recipients:,} recipients, smtp-sink"
            else:
                database = seeded_sqlite(args.recipients, workdir)
                env = smtp_env(port, f"sqlite:///{database}", smtp_pool=args.pool)
                issue = str(workdir / ISSUE.name)
                profile([sys.executable, "-m", "newsletter", "send", issue, "--yes"], env, workdir, args.rate, out)
                title = f"`newsletter send`, smtp_pool = {args.pool}, {args.recipients:,} recipients, smtp-sink"
        finally:
            sink.kill()
            sink.wait()
        if args.keep:
            shutil.copy(out, args.keep)
        report(title, parse(out), args.rate, args.recipients)


if __name__ == "__main__":
    main()
