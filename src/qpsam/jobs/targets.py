"""Project entries as job targets: objects, rendered RGB pixels, and commits with history, image by image."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, cast

import numpy as np

from qpsam.errors import JobError, ProjectError
from qpsam.geometry import Region
from qpsam.groovy import describe, job_kind
from qpsam.history import HistoryRecord, make_record
from qpsam.jobs.batch import Change, Target
from qpsam.project import Entry, Project, ProjectRef
from qpsam.project.commit import done_before

if TYPE_CHECKING:
    from qpsam.project import Backend  # the options checked it

__all__ = ["EntrySource", "project_targets", "records", "select_entries"]


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

            project = open_project(self.project_path, "r", backend=cast("Backend", self.backend))
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


def select_entries(project: Project, images: Sequence[str] | None) -> list[Entry]:
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


def records(entry: Any, change: Change, key: str, scripts: Sequence[str]) -> list[HistoryRecord]:
    """The history records of a change on ``entry``: one per replay spec (with its script), or one that only says
    the run is done (so that ``--resume`` knows)."""
    return [make_record(job_kind(spec), entry.id, params=describe(spec), script=script, image_name=entry.name,
                        run_key=key) for spec, script in zip(change.specs, scripts, strict=True)] \
        or [make_record("qpsam", entry.id, image_name=entry.name, run_key=key)]


def _project_path(project: Any) -> str:
    path = getattr(project, "path", None) or getattr(project, "project_file", None)
    return str(path)


@contextlib.contextmanager
def project_targets(project: ProjectRef, images: Sequence[str] | None = None, channels: Sequence[Any] | None = None,
                    *, backend: str = "auto", keep_version: bool | None = None) -> Iterator[list[Target]]:
    """Targets for the chosen entries of ``project`` (a path, opened ``r+`` for the run with ``backend``, or an
    open project); ``channels`` (:class:`qpsam.jobs.channels.ChannelChoice` values) restricts what SAM sees of
    each image; ``keep_version`` as in :func:`qpsam.project.open_project`."""
    from qpsam.project import open_project

    own = isinstance(project, (str, os.PathLike))
    opened: Project = (open_project(project, "r+", backend=cast("Backend", backend), keep_version=keep_version)
                       if isinstance(project, (str, os.PathLike)) else project)
    backend = getattr(opened, "backend", backend)
    try:
        path = str(project) if own else _project_path(opened)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent

        def make(entry: Any) -> Target:
            def commit(change: Change, key: str, scripts: Sequence[str]) -> None:
                entry.commit(key, records(entry, change, key, scripts), change.added, change.removed)

            return Target(
                key=str(entry.id),
                name=entry.name,
                objects=lambda: entry.objects,
                source=lambda: EntrySource(path, entry.id, entry.name, entry.width, entry.height, entry,
                                           tuple(channels) if channels else None, backend=backend),
                commit=commit,
                done_before=lambda key: done_before(entry, folder, key),
            )

        yield [make(e) for e in select_entries(opened, images)]
    finally:
        if own:
            opened.close()
