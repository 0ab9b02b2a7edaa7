"""Sending N personalised messages to a local SMTP sink, against two baselines, same run.

    python benchmarks/bench_send.py --messages 10000 --naive 300

- raw ceiling: pre-built message bytes pushed through one smtplib connection;
- newsletter: `newsletter send` end to end (SQLite, campaign bookkeeping, one commit per
  accepted message, personalisation, MIME) through the smtp adapter;
- naive: what a hand-written script does per message: Jinja render + premailer + MIME via
  email.message.EmailMessage + a new SMTP connection (measured on --naive messages).
The sink is aiosmtpd in a separate process; it is the same for all three.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
ISSUE = HERE.parent / "issues" / "2026-12-understanding-anxiety.md"
ENV = {"NEWSLETTER_SECRET_KEY": "bench-secret-key-0123", "NEWSLETTER_POSTAL_ADDRESS": "1 Main St, Springfield"}


def start_sink() -> tuple[subprocess.Popen, int]:
    sink = subprocess.Popen([sys.executable, str(HERE / "_sink.py")], stdout=subprocess.PIPE, text=True)
    return sink, int(sink.stdout.readline())


def raw_ceiling(port: int, data: bytes, count: int) -> float:
    client = smtplib.SMTP("127.0.0.1", port)
    client.ehlo()
    started = time.perf_counter()
    for index in range(count):
        client.sendmail("newsletter@calmharbor.example", [f"p{index}@example.com"], data)
    elapsed = time.perf_counter() - started
    client.quit()
    return count / elapsed


def naive(port: int, count: int) -> float:
    from newsletter.config import load_settings
    from newsletter.content import load_issue
    from newsletter.render import Recipient, Renderer
    from newsletter.tokens import Tokens

    settings = load_settings(environ=ENV)
    renderer = Renderer(settings)
    tokens = Tokens(settings.secret_key)
    started = time.perf_counter()
    for index in range(count):
        issue = load_issue(ISSUE)
        rendered = renderer.render(issue)
        reader = Recipient(index, f"p{index}@example.com", f"Reader {index}", {})
        fields = renderer.personal_fields(reader, 1, tokens)
        html = renderer.render_reference(issue, rendered, reader, fields)
        text = rendered.personalise(reader, fields)[1]
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = settings.from_address, reader.email, issue.subject
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.send_message(message)
    return count / (time.perf_counter() - started)


def newsletter_send(port: int, count: int, workdir: Path) -> tuple[float, float]:
    env = {
        **os.environ,
        **ENV,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "NEWSLETTER_ADAPTER": "smtp",
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "newsletter", *args]
        return subprocess.run(command, env=env, cwd=workdir, check=True, capture_output=True, text=True)

    csv_file = workdir / "people.csv"
    csv_file.write_text("email,name,tags\n" + "".join(f"p{i}@example.com,Reader {i},monthly\n" for i in range(count)))
    run("init")
    run("subscribers", "import", str(csv_file))
    started = time.perf_counter()
    result = run("send", str(ISSUE), "--yes")
    wall = time.perf_counter() - started
    if f"sent {count}," not in result.stdout:
        raise SystemExit(result.stdout + result.stderr)
    return count / wall, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=300, help="messages for the naive baseline")
    args = parser.parse_args()
    sink, port = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            ours, wall = newsletter_send(port, args.messages, workdir)
            sample = next((workdir / "outbox").glob("**/*.eml"), None) if (workdir / "outbox").exists() else None
            data = sample.read_bytes() if sample else _one_message()
            ceiling = raw_ceiling(port, data, args.messages)
            slow = naive(port, args.naive)
    finally:
        sink.kill()
    print(f"messages: {args.messages} (naive baseline: {args.naive}), message size {len(data) / 1024:.1f} KB")
    print(f"raw ceiling (pre-built bytes, one connection): {ceiling:8.0f} messages/s")
    print(
        f"newsletter send (end to end, {wall:.1f} s wall): {ours:8.0f} messages/s "
        f"= {ours / ceiling:.0%} of the raw ceiling"
    )
    print(
        f"naive pipeline (render+premailer+new conn.)  : {slow:8.0f} messages/s "
        f"= newsletter is {ours / slow:.1f}x faster"
    )


def _one_message() -> bytes:
    from newsletter.campaigns import Composer
    from newsletter.config import load_settings
    from newsletter.content import load_issue
    from newsletter.render import Recipient, Renderer

    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(ISSUE))
    return Composer(settings).compose(rendered, Recipient(1, "p1@example.com", "Reader 1", {}), 1, 1).as_bytes()


if __name__ == "__main__":
    main()
