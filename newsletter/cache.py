"""The user's cache folder: results that cost time to compute and are always the same for
the same input (the issue's CSS inlined, a contrast measurement), kept between runs so
that `send` after `lint` does not compute them again.

$XDG_CACHE_HOME/newsletter/<kind> (the XDG base directory convention; ~/.cache by
default). Entries are named by a hash of everything that decides them, so a changed input
is simply a miss. Safe to delete at any time: reading and writing are best effort, and a
cache that cannot be read or written only costs the next run the work.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("newsletter.cache")


def cache_dir(kind: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "newsletter" / kind


def read_entry(kind: str, name: str) -> str | None:
    path = cache_dir(kind) / name
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:  # a damaged entry is computed again
        log.debug("cache entry %s unreadable (%s)", path, exc)
        return None


def write_entry(kind: str, name: str, text: str, keep: int) -> None:
    """Write whole or not at all (whoever else writes the same entry), then keep only the
    `keep` newest entries of this kind."""
    path = cache_dir(kind) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
        kept = sorted(
            (entry for entry in path.parent.iterdir() if not entry.name.endswith(".tmp")),
            key=lambda entry: entry.stat().st_mtime,
        )
        for old in kept[:-keep]:
            old.unlink(missing_ok=True)
    except (OSError, UnicodeError) as exc:
        log.debug("cache entry %s not written (%s)", path, exc)
