"""Import a generated CSV and report rows/s and peak RSS of the importing process.

    python benchmarks/bench_import.py                 # 1,000,000 rows on SQLite
    python benchmarks/bench_import.py --rows 100000 --database-url postgresql+psycopg://...

Each size runs `newsletter subscribers import` in a fresh child process against a fresh
database, so peak RSS is the importer's own.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(path: Path, rows: int) -> None:
    rng = random.Random(7)
    tags = ["patients", "caregivers", "monthly", "clinicians"]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("email,name,tags,city\n")
        for index in range(rows):
            handle.write(
                f"user{index}@example{index % 97}.com,Person {index},"
                f"{';'.join(rng.sample(tags, 2))},City {index % 500}\n"
            )


def run(rows: int, database_url: str | None, workdir: Path) -> dict:
    csv_path = workdir / f"list-{rows}.csv"
    generate(csv_path, rows)
    db_url = database_url or f"sqlite:///{workdir / f'bench-{rows}.db'}"
    env = {**os.environ, "NEWSLETTER_SECRET_KEY": "bench-secret", "NEWSLETTER_DATABASE_URL": db_url}
    subprocess.run([sys.executable, "-m", "newsletter", "init"], env=env, cwd=workdir, check=True, capture_output=True)
    command = [
        sys.executable,
        "-c",
        "import resource, sys\n"
        "from newsletter.cli import main\n"
        "try:\n main(['subscribers', 'import', sys.argv[1]])\n"
        "finally:\n"
        " print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)",
        str(csv_path),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"import failed: {result.stderr[-2000:]}")
    rss_kb = int(result.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    return {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "peak_rss_mb": rss_kb / 1024,
        "summary": result.stdout.strip().splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--database-url", help="default: a fresh SQLite file per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'rows':>10} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12}")
        for rows in args.rows:
            r = run(rows, args.database_url, Path(tmp))
            print(
                f"{r['rows']:>10} {r['seconds']:>8.1f} {r['rows_per_s']:>9.0f} {r['peak_rss_mb']:>12.1f}"
                f"   ({r['summary']})",
                flush=True,
            )


if __name__ == "__main__":
    main()
