"""Safe file replacement: the one place where qpsam writes a file that must never be left half-written.

:func:`atomic_write` writes a temporary file in the target's folder (so the final rename never crosses a
filesystem), fsyncs it, gives it the mode and group of the file it replaces (a new file follows the umask and the
folder's default ACL, because the temporary file is created with mode 0666 like any ``open``), checks it, and only
then moves the previous version to the backup and the new one into place. A full disk, a read-only folder or a
kill at any point leaves the previous file *and* the previous backup as they were, plus at worst a stray
``.<name>.*.tmp`` that :func:`remove_leftovers` cleans up later.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import FileWriteError

__all__ = [
    "StagedFile", "atomic_write", "backup_path", "commit_all", "remove_leftovers", "safe_name", "stage", "TMP_SUFFIX",
]

TMP_SUFFIX = ".tmp"
Verify = Callable[[Path], None]


def safe_name(text: object, keep: str = "-_.") -> str:
    """``text`` as a file name: letters and digits kept, as are the characters of ``keep``; the rest become ``_``."""
    return "".join(ch if ch.isalnum() or ch in keep else "_" for ch in str(text))


def backup_path(path: Path) -> Path:
    """``<name>.backup`` next to ``path`` (QuPath's own naming for ``data.qpdata.backup``)."""
    return path.with_name(path.name + ".backup")


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def _create(tmp: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # 0666 & ~umask, exactly as a plain open() would create the file
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_mode(tmp: Path, old: os.stat_result | None) -> None:
    if old is None:
        return
    os.chmod(tmp, stat.S_IMODE(old.st_mode))
    if hasattr(os, "chown") and os.stat(tmp).st_gid != old.st_gid:
        try:
            os.chown(tmp, -1, old.st_gid)
        except OSError:  # not a member of that group: the mode is kept, the group cannot be
            pass


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stage_backup(path: Path, bak: Path) -> Path:
    """A temporary copy of the current file, ready to be renamed over ``bak``: a hard link where the filesystem
    has them (no space needed, so a full disk cannot spoil it), else a byte copy."""
    staged = _temp_name(bak)
    try:
        os.link(path, staged)
        return staged
    except OSError:
        staged.unlink(missing_ok=True)
    try:
        _create(staged, path.read_bytes())
        _keep_mode(staged, os.stat(path))
    except OSError:
        staged.unlink(missing_ok=True)
        raise
    return staged


@dataclass
class StagedFile:
    """A new version of ``path`` complete on disk as a temporary file, not yet in place (see :func:`stage`)."""

    path: Path
    tmp: Path
    payload: bytes
    backup: Path | None
    verify: bool

    def commit(self) -> Path:
        """Keep the current file as the backup (if asked), move the new one into place, re-read it."""
        path, staged = self.path, None
        try:
            if self.backup is not None and path.exists():
                staged = _stage_backup(path, self.backup)
                os.replace(staged, self.backup)
                staged = None
            os.replace(self.tmp, path)
        except OSError as exc:
            self.discard()
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise FileWriteError(f"{path}: cannot write ({exc.strerror or exc}); the previous file is unchanged") \
                from exc
        _fsync_dir(path.parent)
        if self.verify:
            try:
                same = path.read_bytes() == self.payload
            except OSError as exc:
                raise FileWriteError(f"{path}: written but cannot be read back ({exc.strerror or exc})") from exc
            if not same:
                raise FileWriteError(f"{path}: the file on disk is not what was written")
        return path

    def discard(self) -> None:
        """Remove the temporary file (the target stays as it was)."""
        self.tmp.unlink(missing_ok=True)


def stage(path: str | os.PathLike[str], data: bytes | str, *, backup: bool | str | os.PathLike[str] = False,
          verify: bool | Verify = True) -> StagedFile:
    """Write ``data`` beside ``path`` as a complete, fsynced temporary file with the target's mode and group (or
    the umask's), checked (``verify``: True re-reads it, a callable gets its path and raises to refuse it).
    Nothing is replaced until :meth:`StagedFile.commit`; so several files can be staged, then committed together
    once all fit on the disk. Raises :class:`~qpsam.errors.FileWriteError` naming the file."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileWriteError(f"{path}: cannot write, folder {folder} does not exist")
    try:
        old: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise FileWriteError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    bak = None if backup is False else (backup_path(path) if backup is True else Path(backup))
    tmp = _temp_name(path)
    try:
        try:
            _create(tmp, payload)
            _keep_mode(tmp, old)
            if verify and tmp.read_bytes() != payload:
                raise FileWriteError(f"{path}: the temporary file {tmp.name} does not read back as written")
        except OSError as exc:
            if isinstance(exc, FileWriteError):
                raise
            raise FileWriteError(f"{path}: cannot write ({exc.strerror or exc}); the previous file is unchanged") \
                from exc
        if callable(verify):
            verify(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return StagedFile(path, tmp, payload, bak, bool(verify))


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, backup: bool | str | os.PathLike[str] = False,
                 verify: bool | Verify = True) -> Path:
    """Replace ``path`` with ``data`` so that no reader ever sees a partial file; return ``path``.

    ``backup``: True keeps the replaced file as ``<name>.backup`` (or give the backup's path); the backup is
    replaced only once the new file is complete on disk. ``verify``: True re-reads the written bytes; a callable
    gets the temporary file's path and raises to refuse it (nothing is replaced then). Raises
    :class:`~qpsam.errors.FileWriteError` naming the file; the previous file and backup are then unchanged.
    """
    return stage(path, data, backup=backup, verify=verify).commit()


def commit_all(staged: Sequence[StagedFile]) -> None:
    """Commit files staged together, in order; if one cannot be committed, the ones not yet committed are
    discarded (their targets unchanged)."""
    for i, item in enumerate(staged):
        try:
            item.commit()
        except BaseException:
            for rest in staged[i + 1:]:
                rest.discard()
            raise


def remove_leftovers(folders: Iterable[Path], older_than: float | None = None) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) an interrupted :func:`atomic_write` left in ``folders``
    when they were last modified before ``older_than`` (a ``time.time()``; default now). Returns what went."""
    limit = time.time() if older_than is None else older_than
    removed = []
    for folder in folders:
        try:
            candidates = list(os.scandir(folder))
        except OSError:
            continue
        for item in candidates:
            if not (item.name.startswith(".") and item.name.endswith(TMP_SUFFIX)):
                continue
            try:
                if not item.is_file(follow_symlinks=False) or item.stat(follow_symlinks=False).st_mtime >= limit:
                    continue
                os.unlink(item.path)
            except OSError:
                continue
            removed.append(Path(item.path))
    return removed
