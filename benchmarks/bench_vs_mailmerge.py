"""The same issue to the same 1,000 recipients: `newsletter send` vs mailmerge, same SMTP sink,
same run; then `newsletter worker` throughput with 1, 2 and 4 workers on PostgreSQL.

    pip install -e '.[bench]'       # mailmerge
    python benchmarks/bench_vs_mailmerge.py --recipients 1000 --postgres postgresql+psycopg://postgres@127.0.0.1/test

mailmerge gets the issue already inlined (our output, one Jinja variable per personal
field) and the per-recipient values in its CSV, so it does strictly less work than we do;
it opens a new SMTP connection per message, as it always does.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _sink import __file__ as SINK  # noqa: E402
from bench_scale import fresh_postgres  # noqa: E402

ISSUE = HERE.parent / "issues" / "2026-12-understanding-anxiety.md"
ENV = {"NEWSLETTER_SECRET_KEY": "bench-secret-key-0123", "NEWSLETTER_POSTAL_ADDRESS": "1 Main St, Springfield"}


def start_sink() -> tuple[subprocess.Popen, int]:
    sink = subprocess.Popen([sys.executable, SINK], stdout=subprocess.PIPE, text=True)
    return sink, int(sink.stdout.readline())


def people(count: int) -> list[tuple[str, str]]:
    return [(f"p{i}@example.com", f"Reader {i}") for i in range(count)]


def run_newsletter(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args], env=env, cwd=cwd, check=True, capture_output=True, text=True
    )


def signed_issue(env: dict[str, str], workdir: Path) -> str:
    """A copy of the sample issue with a clinical sign-off: a real send needs one."""
    issue = shutil.copy(ISSUE, workdir / ISSUE.name)
    run_newsletter(["issues", "approve", str(issue), "--by", "Benchmark"], env, workdir)
    return str(issue)


def newsletter_send(port: int, count: int, workdir: Path) -> float:
    env = {
        **os.environ,
        **ENV,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{workdir / 'nl.db'}",
        "NEWSLETTER_ADAPTER": "smtp",
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
    }
    (workdir / "people.csv").write_text("email,name,tags\n" + "".join(f"{e},{n},monthly\n" for e, n in people(count)))
    run_newsletter(["init"], env, workdir)
    run_newsletter(["subscribers", "import", "people.csv"], env, workdir)
    issue = signed_issue(env, workdir)
    started = time.perf_counter()
    result = run_newsletter(["send", issue, "--yes"], env, workdir)
    elapsed = time.perf_counter() - started
    assert f"sent {count}," in result.stdout, result.stdout
    return elapsed


def mailmerge_files(port: int, count: int, workdir: Path) -> None:
    from newsletter.campaigns import Composer
    from newsletter.config import load_settings
    from newsletter.content import load_issue
    from newsletter.render import Recipient, Renderer

    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(ISSUE))
    names = {marker: f"s{index}" for index, marker in enumerate(rendered.slots)}
    html = "".join("{{" + names[p] + "}}" if p in names else p for p in rendered.html_parts)
    text = "".join("{{" + names[p] + "}}" if p in names else p for p in rendered.text_parts)
    boundary = "mailmerge-bench-boundary"
    (workdir / "mailmerge_template.txt").write_text(
        f"TO: {{{{email}}}}\nSUBJECT: {rendered.subject}\nFROM: {settings.from_address}\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{text}\n"
        f"--{boundary}\nContent-Type: text/html; charset=utf-8\n\n{html}\n--{boundary}--\n",
        encoding="utf-8",
    )
    composer = Composer(settings)
    with open(workdir / "mailmerge_database.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", *names.values()])
        for index, (email, name) in enumerate(people(count)):
            reader = Recipient(index + 1, email, name, {})
            fields = composer.renderer.personal_fields(reader, 1, composer.tokens)
            values = rendered.values_for(reader, fields)
            writer.writerow([email, *(values[marker] for marker in names)])
    (workdir / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nsecurity = Never\nratelimit = 0\n"
    )


def mailmerge_send(port: int, count: int, workdir: Path) -> float:
    mailmerge_files(port, count, workdir)
    started = time.perf_counter()
    subprocess.run(
        ["mailmerge", "--no-dry-run", "--no-limit", "--output-format", "raw"],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - started


def workers_send(port: int, count: int, workers: int, base_url: str, workdir: Path) -> float:
    url, drop = fresh_postgres(base_url, f"w{workers}")
    env = {
        **os.environ,
        **ENV,
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_ADAPTER": "smtp",
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
    }
    try:
        run_newsletter(["init"], env, workdir)
        run_newsletter(["subscribers", "import", "people.csv"], env, workdir)
        run_newsletter(["send", signed_issue(env, workdir), "--yes", "--queue"], env, workdir)
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "newsletter", "worker", "--exit-when-idle"],
                env=env,
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        for process in processes:
            process.wait()
        elapsed = time.perf_counter() - started
        shown = run_newsletter(["campaigns", "show", "1"], env, workdir).stdout
        assert f"sent {count}," in shown, shown
        return elapsed
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--postgres", help="PostgreSQL URL for the worker runs (skipped without it)")
    args = parser.parse_args()
    count = args.recipients
    sink, port = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours = newsletter_send(port, count, Path(tmp))
            theirs = mailmerge_send(port, count, Path(tmp))
            print(f"{count} recipients, same issue, same aiosmtpd sink (own process)")
            print(f"newsletter send (SQLite) : {ours:7.1f} s  {count / ours:7.0f} messages/s")
            print(f"mailmerge 2.3.0          : {theirs:7.1f} s  {count / theirs:7.0f} messages/s")
            print(f"ratio                    : newsletter is {theirs / ours:.1f}x faster")
            if args.postgres:
                for workers in (1, 2, 4):
                    elapsed = workers_send(port, count, workers, args.postgres, Path(tmp))
                    print(f"{workers} worker(s), PostgreSQL : {elapsed:7.1f} s  {count / elapsed:7.0f} messages/s")
    finally:
        sink.kill()


if __name__ == "__main__":
    main()
