"""``qpsam demo``: the main job end to end on the bundled nuclei image, scored against its ground truth.

It builds a QuPath project from the image, adds one box prompt per ground-truth nucleus, runs prompt detection and
automatic masks with the real MobileSAM weights, writes the objects into the project, a preview PNG and the Groovy
scripts, and reports the mean IoU of the detections against the ground truth.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qpsam.errors import JobError
from qpsam.geometry import mask_to_geometry
from qpsam.jobs.automask import AutomaskOptions
from qpsam.jobs.detect import QUALITY, DetectOptions
from qpsam.jobs.executors import EngineSpec
from qpsam.objects import ObjectType, PathClass, PathObject
from qpsam.sam import DEFAULT_MODEL, AutomaskParams

__all__ = ["DemoResult", "sample_paths", "run_demo", "score"]

PROMPT = PathClass("Nucleus", (230, 60, 60))
AUTOMASK = PathClass("Automask", (60, 160, 230))


@dataclass(frozen=True)
class DemoResult:
    project: Path
    prompts: int
    detected: int
    mean_iou: float
    box_iou: float
    automask_objects: int | None
    automask_precision: float | None
    automask_recall: float | None
    preview: Path | None
    groovy: Path
    seconds_detect: float
    seconds_automask: float | None


def sample_paths() -> tuple[Path, Path]:
    """The bundled sample (``examples/data`` of a source checkout, else the stardist wheel's copy)."""
    here = Path(__file__).resolve().parents[3] / "examples" / "data"
    if (here / "nuclei.tif").is_file() and (here / "nuclei_mask.tif").is_file():
        return here / "nuclei.tif", here / "nuclei_mask.tif"
    spec = importlib.util.find_spec("stardist")
    if spec and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
        if (data / "img2d.tif").is_file():
            return data / "img2d.tif", data / "mask2d.tif"
    raise JobError("the demo image was not found: run from a qpsam source checkout, or pip install --no-deps stardist==0.9.2")


def _iou(a: Any, b: Any) -> float:
    inter = a.intersection(b).area
    return inter / (a.area + b.area - inter) if inter else 0.0


def score(objects: list[PathObject], truths: list[Any]) -> tuple[float, float, float]:
    """(mean IoU of each object with its best ground truth, precision and recall at IoU 0.5)."""
    from shapely import STRtree

    if not objects:
        return 0.0, 0.0, 0.0
    tree = STRtree(truths)
    best = []
    matched: set[int] = set()
    for obj in objects:
        hits = tree.query(obj.geometry, predicate="intersects")
        ious = [(_iou(obj.geometry, truths[i]), int(i)) for i in hits]
        value, index = max(ious, default=(0.0, -1))
        best.append(value)
        if value >= 0.5:
            matched.add(index)
    precision = sum(v >= 0.5 for v in best) / len(best)
    return float(np.mean(best)), precision, len(matched) / len(truths)


def run_demo(out: str | Path = "qpsam-demo", *, engine: EngineSpec = EngineSpec(DEFAULT_MODEL), automask: bool = True,
             points_per_side: int = 16, force: bool = False,
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo into folder ``out`` (a project, previews, scripts, reports) and return its scores."""
    import time

    import tifffile

    from qpsam.jobs.run import automask as run_automask
    from qpsam.jobs.run import detect as run_detect
    from qpsam.project import open_project

    say = progress or (lambda message: None)
    out = Path(out)
    if out.exists():
        if not force:
            raise JobError(f"{out} exists: pass --force to replace it, or choose another --out")
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    image_path, labels_path = sample_paths()
    image = out / "images" / "nuclei.tif"
    shutil.copyfile(image_path, image)
    labels = tifffile.imread(labels_path)
    truths = [g for v in np.unique(labels)[1:] if (g := mask_to_geometry(labels == v)) is not None]

    say(f"building a QuPath project in {out / 'project'} with {len(truths)} box prompts from the ground truth")
    prompts = []
    with open_project(out / "project", "x", backend="native") as project:
        entry = project.add_image(image)
        for t in truths:
            x0, y0, x1, y1 = t.bounds
            from shapely.geometry import box

            prompts.append(PathObject(box(x0, y0, x1, y1), path_class=PROMPT))
        entry.add_objects(prompts)
        project.path_classes = [PROMPT, AUTOMASK]
        project.save()
    box_iou = float(np.mean([_iou(p.geometry, t) for p, t in zip(prompts, truths)]))

    say(f"detect: {engine.model_type} on {len(prompts)} prompts")
    t0 = time.perf_counter()
    report = run_detect(out / "project", engine=engine, options=DetectOptions(names=True),
                        groovy=out / "detect.groovy", preview=out / "preview", report=out / "detect-report.json")
    seconds_detect = time.perf_counter() - t0
    if not report.ok:
        raise JobError(f"detect failed: {report.failed[0].error}")
    with open_project(out / "project", "r", backend="native") as project:
        found = [o for o in project.images[0].objects if QUALITY in o.measurements]
    mean_iou, _, _ = score(found, truths)

    am = None
    seconds_am = None
    if automask:
        say(f"automask: {points_per_side} points per side")
        t0 = time.perf_counter()
        options = AutomaskOptions(AutomaskParams(points_per_side=points_per_side), path_class=AUTOMASK.name,
                                  object_type=ObjectType.DETECTION)
        report = run_automask(out / "project", engine=engine, options=options, groovy=out / "automask.groovy",
                              report=out / "automask-report.json")
        seconds_am = time.perf_counter() - t0
        if not report.ok:
            raise JobError(f"automask failed: {report.failed[0].error}")
        with open_project(out / "project", "r", backend="native") as project:
            masks = [o for o in project.images[0].objects if o.class_name == AUTOMASK.name]
        am = (len(masks),) + score(masks, truths)[1:]
    previews = sorted((out / "preview").glob("*.png"))
    return DemoResult(out / "project", len(prompts), len(found), mean_iou, box_iou,
                      am[0] if am else None, am[1] if am else None, am[2] if am else None,
                      previews[0] if previews else None, out / "detect.groovy", seconds_detect, seconds_am)
