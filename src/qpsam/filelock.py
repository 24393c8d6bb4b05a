"""Writer locks that a crash cannot leave behind: an OS advisory lock held for the life of the writer.

The lock is ``fcntl.flock`` on the lock file (``msvcrt.locking`` on Windows). The kernel drops it when the
holding process ends, however it ends, so a lock file left by ``kill -9`` or by a full disk (even an empty one)
never blocks anyone, and two processes that find such a file at the same moment cannot both take it: taking it
over is the same atomic kernel call as taking a fresh one. The file's content (pid, host, time) only serves the
message of whoever is refused. A lock file written by an older qpsam (no OS lock, content only) still counts while
the process it names runs on this host.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from .errors import FileLockedError, ProjectError

__all__ = ["FileLock"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:
        if fcntl is not None and exc.errno in (getattr(os, "EAGAIN", 11), getattr(os, "EACCES", 13)):
            return False
        raise
    return True


def _alive_here(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume it runs
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class FileLock:
    """An exclusive writer lock on ``path``; ``describe(holder, path)`` words the refusal."""

    def __init__(self, path: str | os.PathLike[str], describe: Callable[[dict[str, Any] | None, Path], str]
                 | None = None) -> None:
        self.path = Path(path)
        self._describe = describe
        self._fd: int | None = None
        self.acquired_at: float | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says about its holder (None when empty, unreadable or absent)."""
        try:
            data = json.loads(self.path.read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self, timeout: float = 0.0, poll: float = 0.05) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for a live holder; raises
        :class:`~qpsam.errors.FileLockedError` when it stays held, ``ProjectError`` when it cannot be created."""
        if self._fd is not None:
            return
        deadline = time.monotonic() + timeout
        while True:
            fd = self._open()
            if _try_lock(fd):
                if self._still_ours(fd):
                    legacy = self._legacy_holder()
                    if legacy is None:
                        self._fd = fd
                        self.acquired_at = time.time()
                        self._stamp(fd)
                        return
                    os.close(fd)
                    self._refuse(legacy)
                os.close(fd)  # the file was removed or replaced between open and lock: try the new one
                continue
            os.close(fd)
            if time.monotonic() >= deadline:
                self._refuse(self.holder())
            time.sleep(poll)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as exc:
            raise ProjectError(f"{self.path}: cannot create the lock file ({exc.strerror or exc}); "
                               "is the folder read-only or the disk full?") from exc

    def _still_ours(self, fd: int) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _legacy_holder(self) -> dict[str, Any] | None:
        """The holder named by a lock file of an older qpsam (no OS lock) whose process still runs here."""
        holder = self.holder()
        if holder is None or holder.get("flock") or holder.get("pid") == os.getpid():
            return None
        if holder.get("host") == socket.gethostname() and _alive_here(holder):
            return holder
        return None

    def _stamp(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "time": _dt.datetime.now().isoformat(),
                "flock": True}
        data = json.dumps(info).encode("utf-8")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0) if hasattr(os, "pwrite") else os.write(fd, data)
        except OSError:
            pass  # a full disk: the OS lock holds all the same, only the refusal message is vaguer

    def _refuse(self, holder: dict[str, Any] | None) -> None:
        if self._describe is not None:
            raise FileLockedError(self._describe(holder, self.path))
        who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
        raise FileLockedError(f"{self.path}: locked by {who}")

    def release(self) -> None:
        """Drop the lock and remove its file (removed first, while still held, so no one locks a dead file)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.name != "nt":
            self._unlink_if_ours(fd)
            os.close(fd)
        else:  # pragma: no cover - Windows cannot remove an open file
            os.close(fd)
            self.path.unlink(missing_ok=True)
        self.acquired_at = None

    def _unlink_if_ours(self, fd: int) -> None:
        try:
            if self._still_ours(fd):
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
