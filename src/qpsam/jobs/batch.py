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
from qpsam.geometry import Region
from qpsam.groovy import Spec, script_for
from qpsam.jobs.report import ImageReport, RunReport
from qpsam.jobs.scripts import combine_scripts
from qpsam.jobs.sources import ImageSource
from qpsam.objects import PathObject, walk
from qpsam.types import ImageProgress

__all__ = ["Target", "Change", "View", "Inputs", "image_key", "run_key", "run_batch"]


@dataclass(frozen=True)
class View:
    """One preview picture of a change (``--preview``): a region, what the run read there and what it made.

    ``label`` is added to the image's name in the file name (a track's plane, say).
    """

    region: Region
    objects: tuple[PathObject, ...] = ()
    foreground: tuple[PathObject, ...] = ()
    background: tuple[PathObject, ...] = ()
    areas: tuple[Any, ...] = ()  # shapely geometries of the areas a run was restricted to
    label: str = ""


@dataclass(frozen=True)
class Change:
    """What a job does to one image's hierarchy."""

    added: tuple[PathObject, ...] = ()
    removed: tuple[Any, ...] = ()  # ids of objects to remove
    windows: int = 0
    specs: tuple[Spec, ...] = ()  # qpsam.groovy specs that replay the change in QuPath
    skipped: str | None = None  # why nothing ran on this image (nothing is committed or recorded then)
    views: tuple[View, ...] = ()  # what --preview draws (no pixels are read unless it is asked for)


#: Commits a change with its run key and the replay script of each of its specs.
Commit = Callable[[Change, str, Sequence[str]], None]


@dataclass
class Target:
    """One image to work on: its objects, its pixels, how to commit a change, and what was done before."""

    key: str
    name: str
    objects: Callable[[], Sequence[PathObject]]
    source: Callable[[], ImageSource]
    commit: Commit
    done_before: Callable[[str], bool] = lambda run_key: False


def run_key(job: str, params: dict[str, Any]) -> str:
    """A stable key for a job with its parameters: ``--resume`` skips images already done with the same key."""
    text = json.dumps({"job": job, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_key(key: str, inputs: Any) -> str:
    """The run key of one image: the run's key with what the job reads from that image (its prompts, say)."""
    text = json.dumps({"run": key, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: What a job reads from an image's objects (all of them, flat), as plain JSON values: part of the resume key.
Inputs = Callable[[Sequence[PathObject]], Any]



def run_batch(
    job: str,
    params: dict[str, Any],
    targets: Iterable[Target],
    work: Callable[[Target], Change],
    resume: bool = False,
    progress: ImageProgress | None = None,
    debug: bool = False,
    inputs: Inputs | None = None,
) -> RunReport:
    """Run ``work`` on each target, commit its change, and report; a failing image is reported and skipped.

    With ``inputs``, an image's key includes what the job reads from its objects as the run leaves them (prompts
    removed or kept, results added): ``--resume`` then runs an image again when its prompts changed since.
    """
    targets = list(targets)
    key = run_key(job, params)
    report = RunReport(job, dict(params, run_key=key))
    t_run = time.perf_counter()
    ran = 0  # images done, failed or done before: anything but "nothing to run on"
    for i, target in enumerate(targets):
        t0 = time.perf_counter()
        entry = ImageReport(target.name)
        try:
            objects = list(walk(target.objects())) if inputs else []
            if resume and target.done_before(image_key(key, inputs(objects)) if inputs else key):
                entry.status, entry.reason = "skipped", "done before with the same parameters" + (
                    " and inputs" if inputs else "")
                ran += 1
            elif (change := work(target)).skipped:
                entry.status, entry.reason = "skipped", change.skipped
            else:
                ran += 1
                commit_key = key
                if inputs:
                    gone = {str(getattr(r, "id", r)) for r in change.removed}
                    after = [o for o in objects if str(o.id) not in gone] + list(walk(change.added))
                    commit_key = image_key(key, inputs(after))
                scripts = [script_for(spec) for spec in change.specs]  # once: for the history and --groovy
                target.commit(change, commit_key, scripts)
                entry.added, entry.removed, entry.windows = len(change.added), len(change.removed), change.windows
                for note in {spec.weights_note for spec in change.specs if spec.weights_note is not None}:
                    if note not in report.warnings:
                        report.warnings.append(note)
                entry.groovy = combine_scripts(scripts)
        except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the run
            if debug:
                raise
            ran += 1
            entry.status = "failed"
            entry.error = str(exc) if isinstance(exc, QpsamError) else f"{type(exc).__name__}: {exc}"
        entry.seconds = round(time.perf_counter() - t0, 3)
        report.images.append(entry)
        if progress:
            progress(target.name, i + 1, len(targets))
    if targets and not ran:
        report.error = f"nothing ran: none of the {len(targets)} image(s) had anything for {job} to work on"
    report.seconds = round(time.perf_counter() - t_run, 3)
    return report
