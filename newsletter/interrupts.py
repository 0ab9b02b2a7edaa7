"""Ctrl-C while a campaign sends: never between a server's answer and its record.

The first Ctrl-C (or SIGTERM) asks the sender to stop after the messages in flight. The
second stops at once (`stop_now`): it raises KeyboardInterrupt, so a wait for a slow
server ends, and the adapter records what the server may hold as `unknown`. But an answer
already received and not yet recorded (`hold` .. `release`: the database may be slow or
locked) would be lost, and its message sent again on resume; so while one is held the
interrupt waits until it is recorded. Once stopping, more presses change nothing: the
records that stopping makes finish first (a third Ctrl-C 10 ms after the second used to
cut them short, leaving delivered messages queued).

Signal handlers run in the main thread, where the sending and recording happen, so plain
module state is enough.
"""

from __future__ import annotations

_held = 0  # answers received and not yet recorded
_pending = False  # a stop-now that waits for them
_stopping = False  # KeyboardInterrupt raised: stopping now


def reset() -> None:
    """A new send: nothing held, not stopping."""
    global _held, _pending, _stopping
    _held, _pending, _stopping = 0, False, False


def hold() -> None:
    """An answer arrived: until `release`, a stop-now waits for its record."""
    global _held
    _held += 1


def release() -> None:
    """The answer is recorded; a stop-now that waited for it happens now."""
    global _held, _pending, _stopping
    _held = max(0, _held - 1)
    if not _held and _pending and not _stopping:
        _pending, _stopping = False, True
        raise KeyboardInterrupt


def stop_now() -> str:
    """From the signal handler: raise KeyboardInterrupt now, or once the answers held are
    recorded. Returns what happened when it does not raise ("waiting" or "stopping")."""
    global _pending, _stopping
    if _stopping:
        return "stopping"
    if _held:
        _pending = True
        return "waiting"
    _stopping = True
    raise KeyboardInterrupt
