"""Writes each message as an .eml file: the default, so a first run sends for real without an account.

A campaign message is named after its delivery row, so delivering it twice (after a crash
between writing and recording) rewrites the same file instead of adding a second one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..message import Message
from .base import Adapter, Result, accepted


class OutboxAdapter(Adapter):
    name = "outbox"
    max_batch = 500
    repeats_are_harmless = True  # a file per delivery: writing it again replaces it

    def __init__(self, directory: str | Path, folder: str = "messages"):
        self.directory = Path(directory) / folder

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, message: Message) -> Path:
        if message.delivery_id is not None:
            return self.directory / f"{message.delivery_id:09d}.eml"
        return self.directory / f"{message.message_id.strip('<>').replace('/', '_')}.eml"

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        for message in messages:
            path = self.path_for(message)
            temporary = path.with_suffix(".tmp")
            with open(temporary, "wb") as handle:
                handle.write(message.as_bytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            yield accepted(message, provider_id=path.name)
