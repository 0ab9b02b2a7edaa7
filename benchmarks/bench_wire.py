"""Sending at the speed of the wire: every sending path against Postfix's smtp-sink, one run.

    pip install -e '.[bench]'                      # mailmerge, aiosmtpd, psycopg
    apt-get install -y postfix                     # provides /usr/sbin/smtp-sink
    python benchmarks/bench_wire.py --recipients 5000 \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

smtp-sink is a small C server that accepts and discards mail, so the server is not the
bottleneck: the raw rows below are the ceiling of Python's smtplib on this machine, and
every other row is measured against them in the same run (absolute figures on a shared
machine are noisy: each row is compared with a raw run made just before it). Each row is a whole command's wall
clock (process start-up, lint, render and enqueue included) for the same sample issue to
the same recipients:

- raw: the pre-built bytes of one of our messages over 1 smtplib connection, and the same
  on 4 connections (threads, 1/4 of the messages each), and on 4 connections driven by
  one thread with the envelope pipelined, as `send` drives a pool (the pool's ceiling);
- mailmerge 2.3 CLI, given the issue already inlined (one Jinja variable per slot);
- `newsletter send` with smtp_pool = 1 and = 4 (SQLite);
- 1 and 4 `newsletter worker --exit-when-idle` processes on PostgreSQL (with --postgres).

A second table repeats the raw and `send` rows against the aiosmtpd sink of bench_send.py,
whose Python DATA handling caps everything near 300-400 messages/s.
"""

from __future__ import annotations

import argparse
import atexit
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _sink import __file__ as AIOSMTPD_SINK  # noqa: E402
from bench_scale import fresh_postgres  # noqa: E402
from bench_vs_mailmerge import mailmerge_files  # noqa: E402

ISSUE = HERE.parent / "issues" / "2026-12-understanding-anxiety.md"
ENV = {
    "NEWSLETTER_SECRET_KEY": "bench-secret-key-0123",
    "NEWSLETTER_POSTAL_ADDRESS": "1 Main St, Springfield",
    "NEWSLETTER_BASE_URL": "https://news.example.com",
}
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SENDER = "newsletter@calmharbor.example"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port}")


def start_smtp_sink() -> tuple[subprocess.Popen, int]:
    if not os.path.exists(SMTP_SINK):
        raise SystemExit(
            "smtp-sink not found: it ships with Postfix. Install it with\n"
            "    apt-get install -y postfix      (Debian/Ubuntu; choose 'No configuration')\n"
            "    dnf install -y postfix          (Fedora/RHEL)\n"
            "    brew install postfix            (macOS, or use the system's /usr/sbin/smtp-sink)"
        )
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    # backlog 1000; no -c/-v: counting or logging would slow the sink down
    sink = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{port}", "1000"], stderr=subprocess.DEVNULL)
    wait_for_port(port, sink, "smtp-sink")
    return sink, port


def start_aiosmtpd_sink() -> tuple[subprocess.Popen, int]:
    sink = subprocess.Popen([sys.executable, AIOSMTPD_SINK], stdout=subprocess.PIPE, text=True)
    return sink, int(sink.stdout.readline())


def compile_package() -> None:
    """Write the package's bytecode, as `pip install` does: where PYTHONDONTWRITEBYTECODE is
    set (as on the development machine), every command would otherwise compile the modules
    it imports from source, about a tenth of a worker's start-up."""
    import compileall

    import newsletter

    compileall.compile_dir(Path(newsletter.__file__).parent, quiet=1)


def one_message() -> bytes:
    """The bytes `send` produces for one reader of the sample issue."""
    from newsletter.campaigns import Composer
    from newsletter.config import load_settings
    from newsletter.content import load_issue
    from newsletter.render import Recipient, Renderer

    settings = load_settings(environ=ENV)
    rendered = Renderer(settings).render(load_issue(ISSUE))
    return Composer(settings).compose(rendered, Recipient(1, "p1@example.com", "Reader 1", {}), 1, 1).as_bytes()


def raw(port: int, data: bytes, count: int, connections: int = 1) -> float:
    """Seconds to push `count` copies of `data` over `connections` smtplib connections."""

    def push(share: range) -> None:
        client = smtplib.SMTP("127.0.0.1", port)
        client.ehlo()
        for index in share:
            client.sendmail(SENDER, [f"p{index}@example.com"], data)
        client.quit()

    shares = [range(n, count, connections) for n in range(connections)]
    threads = [threading.Thread(target=push, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def raw_one_thread(port: int, data: bytes, count: int, connections: int) -> float:
    """Seconds to push `count` copies of `data` over `connections` connections driven by one
    thread, as `send` drives a pool: MAIL, RCPT and DATA in one write (RFC 2920), each
    connection's next step taken in turn while the others' messages are on their way."""
    quoted = smtplib._quote_periods(data)  # the dot-stuffing smtplib.data() applies
    body = (quoted if quoted.endswith(b"\r\n") else quoted + b"\r\n") + b".\r\n"
    clients = [smtplib.SMTP("127.0.0.1", port) for _ in range(connections)]
    for client in clients:
        client.ehlo()
    started = time.perf_counter()
    steps = [""] * connections  # what each connection waits for: "envelope", "final" or nothing
    taken = done = 0
    turn = 0
    while done < count:
        client = clients[turn]
        if steps[turn] == "envelope":
            replies = [client.getreply()[0] for _ in range(3)]
            assert replies == [250, 250, 354], replies
            client.send(body)
            steps[turn] = "final"
        else:
            if steps[turn] == "final":
                assert client.getreply()[0] == 250
                done += 1
            steps[turn] = ""
            if taken < count:
                client.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<p{taken}@example.com>\r\nDATA\r\n")
                steps[turn] = "envelope"
                taken += 1
        turn = (turn + 1) % connections
    elapsed = time.perf_counter() - started
    for client in clients:
        client.quit()
    return elapsed


def newsletter(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"newsletter {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


CACHE = Path(tempfile.mkdtemp(prefix="bench-wire-cache-"))  # contrast measurements: this run's own
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)


def smtp_env(port: int, database_url: str, **settings: object) -> dict[str, str]:
    env = {
        **os.environ,
        **ENV,
        "XDG_CACHE_HOME": str(CACHE),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_ADAPTER": "smtp",
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
    }
    env.update({f"NEWSLETTER_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def seeded_sqlite(count: int, workdir: Path) -> Path:
    """A SQLite database with `count` subscribers, built once and copied for every run; and
    the sample issue copied next to it with a clinical sign-off (a real send needs one)."""
    database = workdir / "seed.db"
    env = smtp_env(1, f"sqlite:///{database}")
    newsletter(["init"], env, workdir)
    newsletter(["subscribers", "import", "people.csv"], env, workdir)
    shutil.copy(ISSUE, workdir / ISSUE.name)
    # The author's steps before a send: lint with the contrast check (its measurement is
    # remembered in the cache folder, as on the author's machine), then the sign-off.
    newsletter(["lint", str(workdir / ISSUE.name), "--contrast"], env, workdir)
    try:
        newsletter(["issues", "approve", str(workdir / ISSUE.name), "--by", "Benchmark"], env, workdir)
    except SystemExit:
        pass  # a version without sign-offs
    return database


def send(port: int, count: int, pool: int, seed: Path, workdir: Path, label: str, cold: bool = False) -> float:
    """`newsletter send`, whole command; `cold`: with no remembered contrast measurement,
    as for the first send of an issue nobody linted with --contrast on this machine."""
    database = workdir / f"{label}.db"
    shutil.copy(seed, database)
    if cold:
        shutil.rmtree(CACHE / "newsletter", ignore_errors=True)
    env = smtp_env(port, f"sqlite:///{database}", smtp_pool=pool)
    started = time.perf_counter()
    result = newsletter(["send", str(workdir / ISSUE.name), "--yes"], env, workdir)
    elapsed = time.perf_counter() - started
    if f"sent {count}," not in result.stdout:
        raise SystemExit(f"send (pool {pool}) did not send {count}:\n{result.stdout}{result.stderr}")
    return elapsed


def mailmerge(port: int, count: int, workdir: Path) -> float:
    folder = workdir / "mailmerge"
    folder.mkdir(exist_ok=True)
    mailmerge_files(port, count, folder)
    started = time.perf_counter()
    subprocess.run(
        # The venv's script, whether or not the venv is on PATH.
        [shutil.which("mailmerge") or str(Path(sys.executable).with_name("mailmerge")), "--no-dry-run", "--no-limit"]
        + ["--output-format", "raw"],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - started


def workers(
    port: int, count: int, processes: int, base_url: str, workdir: Path, durable: bool = False, forked: bool = False
) -> float:
    """`processes` workers started as separate commands, or (forked) as one
    `newsletter worker --processes N` that forks them after its start-up."""
    url, drop = fresh_postgres(base_url, f"wire{processes}")
    env = smtp_env(port, url, **({"synchronous_commit": "true"} if durable else {}))
    try:
        newsletter(["init"], env, workdir)
        newsletter(["subscribers", "import", "people.csv"], env, workdir)
        newsletter(["send", str(workdir / ISSUE.name), "--yes", "--queue"], env, workdir)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        command = [sys.executable, "-m", "newsletter", "worker", "--exit-when-idle"]
        if forked:
            command += ["--processes", str(processes)]
        running = [
            subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(1 if forked else processes)
        ]
        for process in running:
            process.wait()
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        WORKER_CPU.append((processes, durable, forked, cpu))
        shown = newsletter(["campaigns", "show", "1"], env, workdir).stdout
        if f"sent {count}," not in shown:
            raise SystemExit(f"{processes} worker(s) did not send {count}:\n{shown}")
        return elapsed
    finally:
        drop()


WORKER_CPU: list[tuple[int, bool, bool, float]] = []  # (processes, synchronous_commit, forked, CPU s of the workers)


def worker_cpu(count: int) -> None:
    """The worker rows' own CPU (user + system of the worker processes, start-up included):
    on a shared machine a steadier figure than their wall clock."""
    for processes, durable, forked, cpu in WORKER_CPU:
        durability = ", synchronous_commit = on" if durable else ""
        how = f" (one `worker --processes {processes}`)" if forked else ""
        print(
            f"- {processes} worker process(es){how}{durability}: {cpu:.2f} CPU s in all, "
            f"{cpu / count * 1e6:,.0f} us per message"
        )


def table(title: str, rows: list[tuple[str, float, float]], count: int) -> None:
    """Each row with the raw one-connection figure measured just before it: on a shared
    machine the load moves within a run, so a row is compared with its own neighbour."""
    print(f"\n{title}\n")
    print("| pipeline | wall s | messages/s | raw 1 conn. just before, messages/s | x raw 1 conn. |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, raw_seconds in rows:
        rate, ceiling = count / seconds, count / raw_seconds
        print(f"| {name} | {seconds:.2f} | {rate:,.0f} | {ceiling:,.0f} | {rate / ceiling:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--postgres", help="PostgreSQL base URL for the worker rows (skipped without it)")
    parser.add_argument(
        "--synchronous-commit", action="store_true", help="also run the worker rows with synchronous_commit = on"
    )
    parser.add_argument(
        "--cold-contrast", action="store_true", help="add a send row that measures the contrast afresh (Chromium)"
    )
    parser.add_argument("--no-mailmerge", action="store_true", help="skip the mailmerge row")
    parser.add_argument("--no-aiosmtpd", action="store_true", help="skip the second (aiosmtpd) table")
    parser.add_argument("--only", nargs="*", default=None, help="run only these rows: raw mailmerge send workers")
    args = parser.parse_args()
    count = args.recipients
    only = set(args.only or ("raw", "mailmerge", "send", "workers"))
    compile_package()
    data = one_message()
    print(f"{count:,} recipients, sample issue ({len(data) / 1024:.1f} KB per message), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "people.csv").write_text(
            "email,name,tags\n" + "".join(f"p{i}@example.com,Reader {i},monthly\n" for i in range(count))
        )
        seed = seeded_sqlite(count, workdir)
        rows: list[tuple[str, float, float]] = []
        sink, port = start_smtp_sink()

        def row(name: str, measure) -> None:
            ceiling = raw(port, data, count)
            rows.append((name, measure(), ceiling))

        try:
            row("raw: pre-built bytes, 1 smtplib connection", lambda: raw(port, data, count))
            if "raw" in only:
                row("raw: the same on 4 connections (threads)", lambda: raw(port, data, count, 4))
                row(
                    "raw: 4 connections driven by one thread, envelope pipelined (as a pool)",
                    lambda: raw_one_thread(port, data, count, 4),
                )
            if "mailmerge" in only and not args.no_mailmerge:
                row(
                    "mailmerge 2.3 CLI (pre-inlined HTML), new connection per message",
                    lambda: mailmerge(port, count, workdir),
                )
            if "send" in only:
                row("`newsletter send`, smtp_pool = 1 (SQLite)", lambda: send(port, count, 1, seed, workdir, "p1"))
                row("`newsletter send`, smtp_pool = 4 (SQLite)", lambda: send(port, count, 4, seed, workdir, "p4"))
                if args.cold_contrast:
                    row(
                        "`newsletter send`, smtp_pool = 1, contrast measured afresh (Chromium launched)",
                        lambda: send(port, count, 1, seed, workdir, "c1", cold=True),
                    )
            if "workers" in only and args.postgres:
                for processes in (1, 4):
                    name = f"{processes} `newsletter worker` process{'es' if processes > 1 else ''}, PostgreSQL"
                    row(name, lambda processes=processes: workers(port, count, processes, args.postgres, workdir))
                row(
                    "4 worker processes forked by one `newsletter worker --processes 4`, PostgreSQL",
                    lambda: workers(port, count, 4, args.postgres, workdir, forked=True),
                )
                if args.synchronous_commit:
                    for processes in (1, 4):
                        name = f"{processes} worker(s), PostgreSQL, synchronous_commit = on"
                        row(
                            name,
                            lambda processes=processes: workers(
                                port, count, processes, args.postgres, workdir, durable=True
                            ),
                        )
        finally:
            sink.kill()
            sink.wait()
        table("smtp-sink (Postfix, C)", rows, count)
        if WORKER_CPU:
            print("\nCPU of the worker processes (start-up included; the database server's and the sink's not):\n")
            worker_cpu(count)
        if args.no_aiosmtpd:
            return
        sink, port = start_aiosmtpd_sink()
        slow: list[tuple[str, float, float]] = []
        try:
            ceiling = raw(port, data, count)
            slow.append(("raw: pre-built bytes, 1 smtplib connection", ceiling, ceiling))
            slow.append(
                ("`newsletter send`, smtp_pool = 1 (SQLite)", send(port, count, 1, seed, workdir, "a1"), ceiling)
            )
        finally:
            sink.kill()
            sink.wait()
        table("aiosmtpd sink (Python, its own process; bench_send.py's server)", slow, count)


if __name__ == "__main__":
    main()
