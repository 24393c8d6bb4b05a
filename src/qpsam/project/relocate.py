"""Fix stale image paths of a project: a moved folder (``--from OLD --to NEW``) or files found again by name
under a folder (``--search DIR``). Only entries whose new file exists are changed; nothing is saved when a
``--from``/``--to`` move names a file that is not there."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from qpsam.errors import ProjectError

from . import qpproj as pj

__all__ = ["Moved", "RelocateResult", "relocate_images"]


@dataclass(frozen=True)
class Moved:
    """One entry whose image path changed."""

    entry_id: Any
    name: str
    old: str
    new: str


@dataclass(frozen=True)
class RelocateResult:
    """Entries whose path changed, and entries whose image is still not found."""

    moved: tuple[Moved, ...]
    missing: tuple[str, ...]  # "[id] name: path" of images still missing


def _file(uri: str | None) -> Path | None:
    return pj.uri_to_path(uri) if uri else None


def _under(path: Path, folder: Path) -> Path | None:
    """``path`` relative to ``folder`` (compared as absolute paths), or None when it is not inside it."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
    except ValueError:
        return None


def _best_match(old: Path, candidates: Sequence[Path]) -> Path | None:
    """The candidate sharing the longest tail of folders with ``old`` (None when two tie at the top)."""
    def shared(c: Path) -> int:
        n = 0
        for a, b in zip(reversed(old.parts), reversed(c.parts)):
            if a != b:
                break
            n += 1
        return n

    ranked = sorted(candidates, key=shared, reverse=True)
    if not ranked or (len(ranked) > 1 and shared(ranked[0]) == shared(ranked[1])):
        return None
    return ranked[0]


def relocate_images(project: Any, old: str | os.PathLike[str] | None = None,
                    new: str | os.PathLike[str] | None = None,
                    search: str | os.PathLike[str] | None = None) -> RelocateResult:
    """Point the entries of an open, writable ``project`` at their moved image files (saved by the caller).

    ``old``/``new``: images under folder ``old`` are now under ``new`` (each new file must exist). ``search``:
    images whose file is missing are looked for by file name under this folder (recursively); when several files
    have the name, the one in the most similar folders wins, and a tie leaves the entry missing.
    """
    if (old is None) != (new is None):
        raise ProjectError("relocate needs both the old folder and the new folder (--from and --to)")
    if old is None and search is None:
        raise ProjectError("relocate needs --from OLD --to NEW, or --search DIR")
    if search is not None and not Path(search).is_dir():
        raise ProjectError(f"relocate: search folder {search} does not exist")
    entries = list(project.images)
    plan: dict[str, str] = {}  # old uri -> new uri
    moved: list[Moved] = []
    if old is not None and new is not None:
        for entry in entries:
            path = _file(entry.uri)
            rel = _under(path, Path(old)) if path is not None else None
            if rel is None:
                continue
            target = Path(new) / rel
            if not target.is_file():
                raise ProjectError(f"image {entry.id} ({entry.name!r}): no file at {target} (moved from {path}); "
                                   "nothing was changed")
            plan[entry.uri] = pj.path_to_uri(target)
            moved.append(Moved(entry.id, entry.name, str(path), str(target.absolute())))
    if search is not None:
        by_name: dict[str, list[Path]] = {}
        for root, _dirs, files in os.walk(search):
            for f in files:
                by_name.setdefault(f, []).append(Path(root, f).absolute())
        for entry in entries:
            path = _file(entry.uri)
            if path is None or entry.uri in plan or path.exists():
                continue
            found = _best_match(path, by_name.get(path.name, []))
            if found is not None:
                plan[entry.uri] = pj.path_to_uri(found)
                moved.append(Moved(entry.id, entry.name, str(path), str(found)))
    if plan:
        project.relocate(lambda uri: plan.get(uri))
    missing = []
    for entry in entries:
        uri = plan.get(entry.uri, entry.uri) if entry.uri else None
        path = _file(uri)
        if path is not None and not path.exists():
            missing.append(f"[{entry.id}] {entry.name}: {path}")
    return RelocateResult(tuple(moved), tuple(missing))
