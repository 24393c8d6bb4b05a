"""Writers racing for a project's lock, round after round: shared by ``tests/test_locks.py`` and the race campaign
of ``benchmarks/fault_campaign.py``. A round is a read-modify-write of a ledger under the lock, as a save is, so a
second holder would lose an entry; the shared counters say whether two writers ever held the lock at once."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from qpsam.errors import ProjectError
from qpsam.fileio import atomic_write

__all__ = ["Holders", "Lock", "acquire", "append_entry"]


class Lock(Protocol):
    """A project's writer lock: ``acquire`` raises :class:`ProjectError` while another live writer holds it."""

    def acquire(self) -> Any: ...

    def release(self) -> Any: ...


@dataclass
class Holders:
    """Counters shared by the racing processes (``multiprocessing`` values), changed under ``guard``."""

    now: Any  # writers holding the lock now
    doubles: Any  # times a writer held it while another did
    taken: Any  # times it was taken
    guard: Any

    @classmethod
    def shared(cls, ctx: Any) -> "Holders":
        """Counters for processes of the ``multiprocessing`` context ``ctx`` (pass them when they start)."""
        return cls(ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0), ctx.Lock())

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Count this process as a holder while the block runs."""
        with self.guard:
            self.now.value += 1
            self.doubles.value += self.now.value > 1
            self.taken.value += 1
        yield
        with self.guard:
            self.now.value -= 1


def acquire(lock: Lock, timeout_s: float) -> None:
    """Take ``lock``, retrying until ``timeout_s`` has passed, as a job would."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lock.acquire()
            return
        except ProjectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def append_entry(lock: Lock, ledger: Path, entry: str, holders: Holders, timeout_s: float) -> None:
    """One round: take ``lock``, add ``entry`` to the JSON list in ``ledger`` (read, pause, write), release it."""
    acquire(lock, timeout_s)
    with holders.holding():
        entries = json.loads(ledger.read_text())
        time.sleep(0.002)
        atomic_write(ledger, json.dumps(entries + [entry]))
    lock.release()
