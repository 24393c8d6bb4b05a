"""One image's change written to its project: journal, edit, verified save, history, in that order.

The journal names what a commit is about to do before ``data.qpdata`` is saved, and is removed once the history
records it. A run killed between the save and the history then still resumes correctly: the objects the journal
names are found in the saved hierarchy, so :func:`done_before` counts the image as done and appends its records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from qpsam import history
from qpsam.fileio import atomic_write, safe_name
from qpsam.objects import PathObject, walk

__all__ = ["commit", "done_before", "journal_path"]


def journal_path(folder: Path, run_key: str, entry_id: Any) -> Path:
    """Where the journal of one image's commit in run ``run_key`` lies, in project folder ``folder``."""
    return folder / history.HISTORY_DIR / "pending" / f"{run_key}-{safe_name(entry_id, keep='-_')}.json"


def _ids(objects: Sequence[Any]) -> list[str]:
    # removed objects are given as ids; objects are accepted too
    return [str(getattr(o, "id", o)) for o in objects]


def commit(entry: Any, folder: Path, run_key: str, records: Sequence[history.HistoryRecord],
           added: Sequence[PathObject] = (), removed: Sequence[Any] = ()) -> None:
    """Add ``added`` to ``entry`` and remove the objects (or ids) ``removed``, save it, and append ``records`` to
    the history of the project in ``folder``; a journal covers the time between the save and the history."""
    path = journal_path(folder, run_key, entry.id)
    data = {"added": _ids(list(walk(added))), "removed": _ids(removed), "records": [r.to_json() for r in records]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data))
    if removed:
        entry.remove_objects(removed, keep_children=True)
    if added:
        entry.add_objects(added)
    entry.save()  # atomic, with data.qpdata.backup, read back and checked
    for r in records:
        history.append(folder, r)
    path.unlink(missing_ok=True)


def _recover(entry: Any, folder: Path, run_key: str) -> bool:
    """True (and the history completed) if a journalled save reached data.qpdata; the journal is removed."""
    path = journal_path(folder, run_key, entry.id)
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        records = [history.HistoryRecord.from_json(r) for r in data["records"]]
        added, removed = set(data["added"]), set(data["removed"])
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # torn before the save: nothing was written
        return False
    present = {str(o.id) for o in walk(entry.objects)}
    saved = added <= present and not (removed & present)
    if saved:
        for r in records:
            history.append(folder, r)
    path.unlink(missing_ok=True)
    return saved


def done_before(entry: Any, folder: Path, run_key: str) -> bool:
    """Whether run ``run_key`` was committed on ``entry`` before: recorded in the history, or saved under a journal
    that a crash left behind (its records are then appended)."""
    if any(r.run_key == run_key and r.image_id == str(entry.id) for r in history.read(folder)):
        return True
    return _recover(entry, folder, run_key)
