"""Commits survive a process killed at the worst moments: between saving data.qpdata and writing the history,
and before the save. ``--resume`` then neither loses nor duplicates an image's objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from shapely.geometry import box

from qpsam import history
from qpsam.jobs.batch import Change, run_batch
from qpsam.jobs.targets import project_targets
from qpsam.objects import PathClass, PathObject
from qpsam.project import open_project

CELL = PathClass("Cell", (0, 200, 0))


class Killed(BaseException):
    """Stands for SIGKILL at one exact line: nothing after it runs, no handler sees it."""


def make_project(folder: Path) -> Path:
    image = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251).astype(np.uint8)
    tifffile.imwrite(folder / "img.tif", image)
    with open_project(folder / "project", "x", backend="native") as project:
        entry = project.add_image(folder / "img.tif")
        entry.add_objects([PathObject(box(1, 1, 9, 9), name="prompt")])
        project.save()
    return folder / "project"


def found(project: Path) -> list[PathObject]:
    with open_project(project, "r", backend="native") as p:
        return list(p.images[0].objects)


def pending(project: Path) -> list[Path]:
    return sorted((project / history.HISTORY_DIR / "pending").glob("*"))


def run(project: Path, made: list[PathObject], calls: list[int], resume: bool):
    def work(target) -> Change:
        calls.append(1)
        return Change(added=tuple(made), windows=1)

    with project_targets(project) as targets:
        return run_batch("detect", {"model": "test"}, targets, work, resume=resume)


def test_killed_between_save_and_history_resumes_without_duplicates(tmp_path, monkeypatch) -> None:
    project = make_project(tmp_path)
    made = [PathObject(box(10 + i, 10, 20 + i, 20), path_class=CELL) for i in range(3)]
    calls: list[int] = []

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as m:
        m.setattr(history, "append", die)
        with pytest.raises(Killed):
            run(project, made, calls, resume=False)
    assert len(found(project)) == 4  # saved, but the history never heard of it
    assert history.read(project) == []
    assert len(pending(project)) == 1

    report = run(project, made, calls, resume=True)
    assert [i.status for i in report.images] == ["skipped"]
    assert len(calls) == 1  # the work was not done again
    assert len(found(project)) == 4
    assert {str(o.id) for o in made} <= {str(o.id) for o in found(project)}
    assert [r.run_key for r in history.read(project)] == [report.params["run_key"]]
    assert pending(project) == []


def killed_at_save(project: Path, made: list[PathObject], calls: list[int], monkeypatch) -> None:
    """Run the job and kill it as it starts to save the image's data.qpdata."""
    with open_project(project, "r") as p:  # the backend project_targets opens (auto)
        entry_class = type(p.images[0])

    def die(self):
        raise Killed()

    with monkeypatch.context() as m:
        m.setattr(entry_class, "save", die)
        with pytest.raises(Killed):
            run(project, made, calls, resume=False)


def test_killed_before_the_save_runs_the_image_again(tmp_path, monkeypatch) -> None:
    project = make_project(tmp_path)
    made = [PathObject(box(30, 30, 40, 40), path_class=CELL)]
    calls: list[int] = []
    killed_at_save(project, made, calls, monkeypatch)
    assert len(found(project)) == 1  # nothing reached data.qpdata
    assert len(pending(project)) == 1

    report = run(project, made, calls, resume=True)
    assert [i.status for i in report.images] == ["done"]
    assert len(calls) == 2
    assert len(found(project)) == 2
    assert len(history.read(project)) == 1
    assert pending(project) == []

    again = run(project, made, calls, resume=True)  # now the history says done
    assert [i.status for i in again.images] == ["skipped"] and len(calls) == 2


def test_a_torn_journal_counts_as_not_done(tmp_path, monkeypatch) -> None:
    project = make_project(tmp_path)
    made = [PathObject(box(30, 30, 40, 40), path_class=CELL)]
    calls: list[int] = []
    killed_at_save(project, made, calls, monkeypatch)
    [journal] = pending(project)
    journal.write_text('{"added": ["')  # killed while the journal itself was written

    report = run(project, made, calls, resume=True)
    assert [i.status for i in report.images] == ["done"] and len(calls) == 2
    assert len(found(project)) == 2
    assert pending(project) == []
