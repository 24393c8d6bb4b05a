"""Project entries as job targets: objects, rendered RGB pixels, and commits with history, image by image."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from qpsam.errors import JobError, ProjectError
from qpsam.fileio import atomic_write
from qpsam.geometry import Region
from qpsam.jobs.batch import Change, Target

__all__ = ["EntrySource", "project_targets", "select_entries"]


@dataclass
class EntrySource:
    """The rendered RGB pixels of a project entry (what SAM sees, as the extension's rendered server).

    It pickles as the project path and entry id, so a Dask worker opens the project read-only itself.
    """

    project_path: str
    entry_id: Any
    name: str
    width: int
    height: int
    _entry: Any = field(default=None, repr=False, compare=False)
    channels: tuple[Any, ...] | None = None  # ChannelChoice values (``--channels``): render only these
    _displays: Any = field(default=None, repr=False, compare=False)
    backend: str = "auto"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_entry"] = None
        # The process that unpickles this (a Dask worker) may run in another folder than the one that named it.
        state["project_path"] = os.path.abspath(self.project_path)
        return state

    def _open(self) -> Any:
        if self._entry is None:
            from qpsam.project import open_project

            project = open_project(self.project_path, "r", backend=self.backend)
            self._entry = project.entry(self.entry_id)
        return self._entry

    def read_region(self, region: Region) -> np.ndarray:
        if self.channels and self._displays is None:
            from qpsam.jobs.channels import channel_displays

            self._displays = channel_displays(self._open(), self.channels)
        return self._open().read_rgb(region, self._displays)

    @property
    def sizes(self) -> tuple[int, int]:
        """(time points, z-slices), from the project's image metadata (no pixels are read)."""
        entry = self._open()
        return int(entry.size_t), int(entry.size_z)


def select_entries(project: Any, images: Sequence[str] | None) -> list[Any]:
    """The entries named by id or name (all when ``images`` is empty), in the order given."""
    entries = list(project.images)
    if not images:
        return entries
    out = []
    for key in images:
        try:
            out.append(project.entry(int(key) if str(key).isdigit() else key))
        except (ProjectError, KeyError) as exc:
            names = ", ".join(f"{e.id}: {e.name}" for e in entries[:10])
            raise JobError(f"no image {key!r} in the project (images: {names}{', ...' if len(entries) > 10 else ''})") from exc
    return out


class _Journal:
    """What one image's commit is about to do, written before data.qpdata is saved and removed once the history
    records it. A run killed between the save and the history then still resumes correctly: the objects the
    journal names are found in the saved hierarchy, so the image counts as done and its records are appended."""

    def __init__(self, folder: Path, key: str, entry_id: Any) -> None:
        from qpsam import history

        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(entry_id))
        self.path = folder / history.HISTORY_DIR / "pending" / f"{key}-{safe}.json"

    def write(self, change: Change, records: list[Any]) -> None:
        from qpsam.objects import walk

        data = {
            "added": [str(o.id) for o in walk(change.added)],
            "removed": [str(getattr(o, "id", o)) for o in change.removed],  # ids (objects accepted too)
            "records": [r.to_json() for r in records],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data))

    def recover(self, folder: Path, objects: Any) -> bool:
        """True (and the history completed) if the journalled save reached data.qpdata; the journal is removed."""
        from qpsam import history
        from qpsam.objects import walk

        if not self.path.is_file():
            return False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = [history.HistoryRecord.from_json(r) for r in data["records"]]
            added, removed = set(data["added"]), set(data["removed"])
        except (OSError, ValueError, KeyError, TypeError):
            self.path.unlink(missing_ok=True)  # torn before the save: nothing was written
            return False
        present = {str(o.id) for o in walk(objects)}
        saved = added <= present and not (removed & present)
        if saved:
            for r in records:
                history.append(folder, r)
        self.path.unlink(missing_ok=True)
        return saved

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _project_path(project: Any) -> str:
    path = getattr(project, "path", None) or getattr(project, "project_file", None)
    return str(path)


@contextlib.contextmanager
def project_targets(project: Any, images: Sequence[str] | None = None, channels: Sequence[Any] | None = None,
                    *, backend: str = "auto", keep_version: bool | None = None) -> Iterator[list[Target]]:
    """Targets for the chosen entries of ``project`` (a path, opened ``r+`` for the run with ``backend``, or an
    open project); ``channels`` (:class:`qpsam.jobs.channels.ChannelChoice` values) restricts what SAM sees of
    each image; ``keep_version`` as in :func:`qpsam.project.open_project`."""
    from qpsam import history
    from qpsam.project import open_project

    own = isinstance(project, (str, os.PathLike))
    opened = open_project(project, "r+", backend=backend, keep_version=keep_version) if own else project
    backend = getattr(opened, "backend", backend)
    try:
        path = str(project) if own else _project_path(opened)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent

        def make(entry: Any) -> Target:
            def commit(change: Change, key: str, params: dict[str, Any]) -> None:
                records = [
                    history.make_record(spec, entry.id, image_name=entry.name, run_key=key) for spec in change.specs
                ] or [history.make_run_record(key, entry.id, image_name=entry.name)]
                journal = _Journal(folder, key, entry.id)
                journal.write(change, records)
                if change.removed:
                    entry.remove_objects(change.removed, keep_children=True)
                if change.added:
                    entry.add_objects(change.added)
                entry.save()  # atomic, with data.qpdata.backup, read back and checked
                for r in records:
                    history.append(folder, r)
                journal.remove()

            def done_before(key: str) -> bool:
                if any(r.run_key == key and r.image_id == str(entry.id) for r in history.read(folder)):
                    return True
                return _Journal(folder, key, entry.id).recover(folder, entry.objects)

            return Target(
                key=str(entry.id),
                name=entry.name,
                objects=lambda: entry.objects,
                source=lambda: EntrySource(path, entry.id, entry.name, entry.width, entry.height, entry,
                                           tuple(channels) if channels else None, backend=backend),
                commit=commit,
                done_before=done_before,
            )

        yield [make(e) for e in select_entries(opened, images)]
    finally:
        if own:
            opened.close()
