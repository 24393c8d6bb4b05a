"""The command history of a project: what qpsam ran on which image, replayable as one Groovy script.

Every project run appends one JSON line to ``<project folder>/qpsam/history.jsonl``: the job kind, its
parameters, the image, the time, the qpsam version and the Groovy script of the run. Appends are atomic (one
``write`` on a file opened for appending, under an exclusive lock where the platform has one), so concurrent
jobs never interleave records. :func:`history_script` joins the steps of one image into one script, like
QuPath's "Create command history script".
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from ._version import __version__
from .errors import ProjectError

__all__ = [
    "HISTORY_DIR",
    "HISTORY_FILE",
    "HistoryRecord",
    "history_path",
    "make_record",
    "append",
    "read",
    "images",
    "history_script",
]

HISTORY_DIR = "qpsam"
HISTORY_FILE = "history.jsonl"
FORMAT = 1


@dataclass(frozen=True)
class HistoryRecord:
    """One run: ``kind`` is detect, automask or track; ``params`` is :func:`qpsam.groovy.describe` of its spec."""

    kind: str
    image_id: str
    time: str
    qpsam_version: str
    params: dict = field(default_factory=dict)
    groovy: str | None = None
    image_name: str | None = None
    run_key: str | None = None  # the job's parameters hashed: ``--resume`` skips images done with the same key

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "kind": self.kind,
            "image_id": self.image_id,
            "image_name": self.image_name,
            "time": self.time,
            "qpsam_version": self.qpsam_version,
            "params": self.params,
            "groovy": self.groovy,
            "run_key": self.run_key,
        }
        return json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "HistoryRecord":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in ("kind", "image_id", "time", "qpsam_version") if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(
            kind=str(data["kind"]),
            image_id=str(data["image_id"]),
            image_name=data.get("image_name"),
            time=str(data["time"]),
            qpsam_version=str(data["qpsam_version"]),
            params=dict(data.get("params") or {}),
            groovy=data.get("groovy"),
            run_key=data.get("run_key"),
        )


def project_folder(project: str | Path) -> Path:
    """The folder of a project given as its folder or its ``.qpproj`` file."""
    path = Path(project)
    if path.suffix.lower() == ".qpproj":
        if not path.is_file():
            raise ProjectError(f"no project file {path}")
        return path.parent
    if not path.is_dir():
        raise ProjectError(f"no project folder {path}")
    return path


def history_path(project: str | Path) -> Path:
    """``<project folder>/qpsam/history.jsonl``."""
    return project_folder(project) / HISTORY_DIR / HISTORY_FILE


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: O_APPEND alone still keeps each single write whole
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _append_line(path: Path, line: str) -> None:
    data = (line + "\n").encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o644)
    try:
        _lock(fd)
        size = os.fstat(fd).st_size
        if size:
            # A record torn by a crash stays where it is; the new one starts on a line of its own.
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":
                data = b"\n" + data
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def _now(time: datetime | None = None) -> str:
    when = (time or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def make_record(
    kind: str,
    image_id: str | int,
    *,
    params: dict | None = None,
    script: str | None = None,
    image_name: str | None = None,
    time: datetime | None = None,
    run_key: str | None = None,
) -> HistoryRecord:
    """The record of a run on image ``image_id``, not yet appended (see :func:`append`).

    ``params`` describes the run (:func:`qpsam.groovy.describe` of its spec) and ``script`` replays it; a run with
    nothing to replay (no prompts on the image, say) has neither, and is recorded so that ``--resume`` knows it is
    done (``kind`` is then ``qpsam``).
    """
    return HistoryRecord(
        kind=kind,
        image_id=str(image_id),
        image_name=image_name,
        time=_now(time),
        qpsam_version=__version__,
        params=dict(params or {}),
        groovy=script,
        run_key=run_key,
    )


def append(project: str | Path, entry: HistoryRecord) -> HistoryRecord:
    """Append one record to the project's history (atomically) and return it."""
    path = history_path(project)
    try:
        _append_line(path, entry.to_json())
    except OSError as exc:
        raise ProjectError(f"cannot append to history {path}: {exc}") from exc
    return entry


@dataclass(frozen=True)
class _Read:
    records: list[HistoryRecord]
    skipped: list[int]  # 1-based line numbers that are not records


def _read(project: str | Path) -> _Read:
    path = history_path(project)
    if not path.is_file():
        return _Read([], [])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProjectError(f"cannot read history {path}: {exc.strerror or exc}") from exc
    records, skipped = [], []
    # Line by line, as bytes: one damaged line (torn by a crash, or not UTF-8) costs that line, not the history.
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(HistoryRecord.from_json(line.decode("utf-8")))
        except (ValueError, TypeError, RecursionError):  # UnicodeDecodeError is a ValueError
            skipped.append(number)
    return _Read(records, skipped)


def read(project: str | Path) -> list[HistoryRecord]:
    """Every record of the project's history, oldest first; lines that are not records are skipped with a warning."""
    result = _read(project)
    if result.skipped:
        warnings.warn(
            f"{history_path(project)}: skipped unreadable lines {', '.join(map(str, result.skipped))}",
            stacklevel=2,
        )
    return result.records


def images(records: Iterable[HistoryRecord]) -> dict[str, str | None]:
    """Image id -> image name, in order of first appearance."""
    out: dict[str, str | None] = {}
    for r in records:
        if r.image_id not in out or (out[r.image_id] is None and r.image_name):
            out[r.image_id] = r.image_name
    return out


def _select(records: Sequence[HistoryRecord], image: str | None, path: Path) -> tuple[str, list[HistoryRecord]]:
    known = images(records)
    if not known:
        raise ProjectError(f"no runs recorded in {path}")
    if image is None:
        if len(known) > 1:
            listed = ", ".join(f"{i} ({n})" if n else i for i, n in known.items())
            raise ProjectError(f"history {path} has runs on {len(known)} images; choose one of: {listed}")
        image = next(iter(known))
    image_id = image if image in known else next((i for i, n in known.items() if n == image), None)
    if image_id is None:
        raise ProjectError(f"no runs recorded for image {image!r} in {path}")
    return image_id, [r for r in records if r.image_id == image_id]


def _comment(text: object) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))


def history_script(project: str | Path, image: str | None = None) -> str:
    """All runs on one image (id or name; optional when the history has a single image) as one Groovy script.

    Each step runs in its own closure so that the steps' variables do not collide, and they run one after the
    other in the order they were recorded.
    """
    path = history_path(project)
    result = _read(project)
    image_id, steps = _select(result.records, image, path)
    name = images(steps).get(image_id)
    lines = [
        f"// qpsam command history of image {_comment(name) + ' ' if name else ''}(id {_comment(image_id)})",
        f"// from {_comment(path.parent.parent.name)}/{HISTORY_DIR}/{HISTORY_FILE}, written by qpsam {__version__}.",
        "// Each step replays one run with qupath-extension-sam 0.9, in the order they ran: open the image in",
        "// QuPath, start the SAM server, then run this script from Automate > Script editor.",
    ]
    if result.skipped:
        lines.append(f"// Skipped unreadable lines of the history: {', '.join(map(str, result.skipped))}")
    for n, step in enumerate(steps, start=1):
        lines.append("")
        lines.append(
            f"// Step {n} of {len(steps)}: {_comment(step.kind)} at {_comment(step.time)} "
            f"(qpsam {_comment(step.qpsam_version)})"
        )
        if not step.groovy:
            lines.append("// (no Groovy script was recorded for this step)")
            continue
        lines.append(f"var step{n} = {{ ->")
        lines += [("    " + line) if line else "" for line in step.groovy.rstrip("\n").splitlines()]
        lines.append("}")
        lines.append(f"step{n}()")
    return "\n".join(lines) + "\n"
