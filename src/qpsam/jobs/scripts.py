"""The Groovy side of the jobs: the replay specs of a run, its script text, and ``--groovy`` files.

Each detection window becomes one :class:`~qpsam.groovy.DetectionSpec` (the same region, prompts, model and output
type), and each automask area one :class:`~qpsam.groovy.AutomaskSpec`: qupath-extension-sam segments a region in one
request, so the replay of a tiled qpsam automask is one request over the area at the run's downsample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from qpsam.engines.base import LocalWeights, NamedModel
from qpsam.geometry import Region
from qpsam.groovy import DEFAULT_SERVER_URL, AutomaskSpec, DetectionSpec, Spec, script_for, write_script
from qpsam.jobs.automask import AutomaskOptions
from qpsam.jobs.detect import DetectOptions, ImageDetection
from qpsam.jobs.executors import EngineSpec
from qpsam.jobs.report import RunReport
from qpsam.objects import ImagePlane, PathObject, walk
from qpsam.prompts import select_prompt_objects

__all__ = ["automask_specs", "combined_script", "detection_specs", "sequence_specs", "write_scripts"]


def _connection(engine: Any) -> dict[str, Any]:
    from qpsam.weights import MODELS, weights_source

    server = engine.server if isinstance(engine, EngineSpec) and engine.server else DEFAULT_SERVER_URL
    model = engine.model_type if isinstance(engine, (EngineSpec, NamedModel)) else "vit_t"
    if isinstance(engine, EngineSpec):
        weights = engine.weights
    else:  # an engine object: the file it loaded (the default weights when it names none)
        weights = (str(engine.weights_path or "") or None) if isinstance(engine, LocalWeights) else None
    source = weights_source(model, weights) if model in MODELS else None
    return {"server_url": server, "model": model, "weights_url": source.url if source else None,
            "weights_note": source.note if source else None}


def _whole(region: Region) -> Region:
    # QuPath's RegionRequest takes whole pixels.
    x0, y0 = int(region.x), int(region.y)
    x1, y1 = int(round(region.x + region.width)), int(round(region.y + region.height))
    return Region(x0, y0, x1 - x0, y1 - y0, region.downsample, region.plane)


def detection_specs(engine: Any, options: DetectOptions, result: ImageDetection,
                    objects: Sequence[PathObject]) -> list[DetectionSpec]:
    """One replay spec per window of a detection on one image."""
    background = select_prompt_objects(walk(objects), options.permit_lines).background
    specs = []
    for window in result.windows:
        plane = window.region.plane
        bg = tuple(o for o in background if o.plane.z == plane.z and o.plane.t == plane.t)
        specs.append(DetectionSpec(region=_whole(window.region), prompts=window.prompts, background=bg,
                                   output=options.output, set_name=options.names,
                                   random_color=options.random_colors, **_connection(engine)))
    return specs


def automask_specs(engine: Any, options: AutomaskOptions, width: int, height: int,
                   bounds: Sequence[tuple[float, float, float, float] | None], plane: ImagePlane) -> list[AutomaskSpec]:
    """One replay spec per automask area (the whole image when an area is None)."""
    specs = []
    for b in bounds:
        x0, y0, x1, y1 = b or (0, 0, width, height)
        x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(width, int(round(x1))), min(height, int(round(y1)))
        region = Region(x0, y0, x1 - x0, y1 - y0, options.downsample, plane)
        specs.append(AutomaskSpec(region=region, params=options.params, set_name=False, random_color=False,
                                  **_connection(engine)))
    return specs


def combined_script(specs: Sequence[Spec]) -> str | None:
    """The script of one spec, or of several run one after the other (each in its own closure)."""
    if not specs:
        return None
    if len(specs) == 1:
        return script_for(specs[0])
    lines = [f"// {len(specs)} qpsam runs on this image, replayed one after the other"]
    for n, spec in enumerate(specs, 1):
        lines += ["", f"var run{n} = {{ ->"]
        lines += [("    " + line) if line else "" for line in script_for(spec).rstrip("\n").splitlines()]
        lines += ["}", f"run{n}()"]
    return "\n".join(lines) + "\n"


def write_scripts(path: str | os.PathLike[str], report: RunReport) -> list[Path]:
    """Write the run's scripts: to ``path`` for one image, else one file per image named after it."""
    path = Path(path)
    done = [r for r in report.images if r.groovy]
    written = []
    for r in done:
        target = path
        if len(done) > 1:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in r.image)
            target = path.with_name(f"{path.stem}-{safe}{path.suffix or '.groovy'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_script(target, r.groovy))
    return written


def sequence_specs(engine: Any, plan: Any, axis: str) -> list[Any]:
    """The replay spec of a tracking run (SAM2 video over z or t) from its :class:`~qpsam.jobs.tracking.TrackPlan`."""
    from qpsam.engines.base import Prompt
    from qpsam.groovy import SequenceSpec, VideoPrompt
    from qpsam.jobs.tracking import track_key

    prompts = []
    classes: dict[int, str] = {}
    for frame, objects in sorted(plan.prompts.items()):
        value = getattr(plan.planes[frame], axis)
        for obj in objects:
            track = plan.tracks[track_key(obj)]
            if obj.class_name:
                classes.setdefault(track, obj.class_name)
            if obj.roi_kind == "rectangle":
                prompt = Prompt(box=obj.geometry.bounds)
            else:
                from qpsam.prompts import vertices

                points = vertices(obj.geometry)
                prompt = Prompt(points=points, labels=[1] * len(points))
            prompts.append(VideoPrompt(obj_id=track, frame=value, prompt=prompt))
    values = [getattr(p, axis) for p in plan.planes]
    return [SequenceSpec(region=_whole(plan.region), axis=axis, start=min(values), end=max(values),
                         prompts=tuple(prompts), classes=classes, set_name=False, random_color=False,
                         **_connection(engine))]
