"""Batch runs over images: progress, per-image errors, results written image by image, ``--resume``.

A run goes over :class:`Target` values (an image with its objects, pixels and a way to commit changes); the project
adapter (:mod:`qpsam.jobs.targets`) makes them from project entries, and Python users can make their own. Each image
is committed before the next starts, so an interrupted run loses at most the image in progress.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from qpsam.errors import QpsamError
from qpsam.jobs.report import ImageReport, RunReport
from qpsam.jobs.sources import ImageSource
from qpsam.objects import PathObject

__all__ = ["Target", "Change", "run_key", "run_batch"]


@dataclass(frozen=True)
class Change:
    """What a job does to one image's hierarchy."""

    added: tuple[PathObject, ...] = ()
    removed: tuple[Any, ...] = ()  # ids of objects to remove
    windows: int = 0
    specs: tuple[Any, ...] = ()  # qpsam.groovy specs that replay the change in QuPath


@dataclass
class Target:
    """One image to work on: its objects, its pixels, how to commit a change, and what was done before."""

    key: str
    name: str
    objects: Callable[[], Sequence[PathObject]]
    source: Callable[[], ImageSource]
    commit: Callable[[Change, str, dict[str, Any]], None]
    done_before: Callable[[str], bool] = lambda run_key: False


def run_key(job: str, params: dict[str, Any]) -> str:
    """A stable key for a job with its parameters: ``--resume`` skips images already done with the same key."""
    text = json.dumps({"job": job, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


ImageProgress = Callable[[str, int, int], None]  # (image name, images done, images total)


def run_batch(
    job: str,
    params: dict[str, Any],
    targets: Iterable[Target],
    work: Callable[[Target], Change],
    resume: bool = False,
    progress: ImageProgress | None = None,
    debug: bool = False,
) -> RunReport:
    """Run ``work`` on each target, commit its change, and report; a failing image is reported and skipped."""
    targets = list(targets)
    key = run_key(job, params)
    report = RunReport(job, dict(params, run_key=key))
    t_run = time.perf_counter()
    for i, target in enumerate(targets):
        t0 = time.perf_counter()
        entry = ImageReport(target.name)
        try:
            if resume and target.done_before(key):
                entry.status = "skipped"
            else:
                change = work(target)
                target.commit(change, key, params)
                entry.added, entry.removed, entry.windows = len(change.added), len(change.removed), change.windows
                if change.specs:
                    from qpsam.jobs.scripts import combined_script

                    entry.groovy = combined_script(change.specs)
        except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the run
            if debug:
                raise
            entry.status = "failed"
            entry.error = str(exc) if isinstance(exc, QpsamError) else f"{type(exc).__name__}: {exc}"
        entry.seconds = round(time.perf_counter() - t0, 3)
        report.images.append(entry)
        if progress:
            progress(target.name, i + 1, len(targets))
    report.seconds = round(time.perf_counter() - t_run, 3)
    return report
