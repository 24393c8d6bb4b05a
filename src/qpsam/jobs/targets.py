"""Project entries as job targets: objects, rendered RGB pixels, and commits with history, image by image."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from qpsam.errors import JobError, ProjectError
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

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_entry"] = None
        return state

    def _open(self) -> Any:
        if self._entry is None:
            from qpsam.project import open_project

            project = open_project(self.project_path, "r", backend="native")
            self._entry = project.entry(self.entry_id)
        return self._entry

    def read_region(self, region: Region) -> np.ndarray:
        return self._open().read_rgb(region)


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


def _project_path(project: Any) -> str:
    path = getattr(project, "path", None) or getattr(project, "project_file", None)
    return str(path)


@contextlib.contextmanager
def project_targets(project: Any, images: Sequence[str] | None = None) -> Iterator[list[Target]]:
    """Targets for the chosen entries of ``project`` (a path, opened ``r+`` for the run, or an open project)."""
    from qpsam import history
    from qpsam.project import open_project

    own = isinstance(project, (str, os.PathLike))
    opened = open_project(project, "r+") if own else project
    try:
        path = str(project) if own else _project_path(opened)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent

        def make(entry: Any) -> Target:
            def commit(change: Change, key: str, params: dict[str, Any]) -> None:
                if change.removed:
                    entry.remove_objects(change.removed, keep_children=True)
                if change.added:
                    entry.add_objects(change.added)
                entry.save()  # atomic, with data.qpdata.backup, read back and checked
                for spec in change.specs:
                    history.record(folder, spec, entry.id, image_name=entry.name, run_key=key)
                if not change.specs:
                    history.record_run(folder, key, entry.id, image_name=entry.name)

            def done_before(key: str) -> bool:
                return any(r.run_key == key and r.image_id == str(entry.id) for r in history.read(folder))

            return Target(
                key=str(entry.id),
                name=entry.name,
                objects=lambda: entry.objects,
                source=lambda: EntrySource(path, entry.id, entry.name, entry.width, entry.height, entry),
                commit=commit,
                done_before=done_before,
            )

        yield [make(e) for e in select_entries(opened, images)]
    finally:
        if own:
            opened.close()
