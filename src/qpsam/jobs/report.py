"""What a batch run did, image by image: objects written, time, errors. Written as JSON with ``--report``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qpsam.fileio import atomic_write

__all__ = ["ImageReport", "RunReport"]


@dataclass
class ImageReport:
    """One image of a run: ``status`` is ``done``, ``skipped`` (``reason`` says why) or ``failed``."""

    image: str
    status: str = "done"
    added: int = 0
    removed: int = 0
    seconds: float = 0.0
    error: str | None = None
    windows: int = 0
    groovy: str | None = field(default=None, repr=False)
    reason: str | None = None  # why it was skipped


@dataclass
class RunReport:
    """A whole run: the job, its parameters and one :class:`ImageReport` per image."""

    job: str
    params: dict[str, Any]
    images: list[ImageReport] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    error: str | None = None  # the run as a whole did nothing a user asked for
    warnings: list[str] = field(default_factory=list)  # e.g. replay scripts that cannot name the run's weights

    @property
    def failed(self) -> list[ImageReport]:
        return [r for r in self.images if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None

    def summary(self) -> str:
        """One line per status, for the end of a CLI run."""
        done = sum(r.status == "done" for r in self.images)
        skipped = sum(r.status == "skipped" for r in self.images)
        added = sum(r.added for r in self.images)
        text = f"{self.job}: {done} image(s) done, {skipped} skipped, {len(self.failed)} failed; {added} objects added"
        for r in self.images:
            if r.status == "skipped" and r.reason:
                text += f"\n  skipped: {r.image}: {r.reason}"
        for r in self.failed:
            text += f"\n  failed: {r.image}: {r.error}"
        for warning in self.warnings:
            text += f"\nwarning: {warning}"
        if self.error:
            text += f"\n  {self.error}"
        return text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for image in data["images"]:
            image.pop("groovy", None)
        return data

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, json.dumps(self.to_json(), indent=1))
