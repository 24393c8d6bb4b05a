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
from qpsam.fileio import safe_name
from qpsam.geometry import Region
from qpsam.groovy import DEFAULT_SERVER_URL, AutomaskSpec, DetectionSpec, write_script
from qpsam.jobs.automask import AutomaskOptions
from qpsam.jobs.detect import DetectOptions, ImageDetection
from qpsam.jobs.executors import EngineSpec
from qpsam.jobs.report import RunReport
from qpsam.objects import ImagePlane
from qpsam.sam import DEFAULT_MODEL, MODELS

__all__ = ["automask_specs", "combine_scripts", "connection", "detection_specs", "whole_region", "write_scripts"]


def connection(engine: Any) -> dict[str, Any]:
    """The spec fields that name where a run ran: server, model, and its weights' URL (or why there is none)."""
    from qpsam.engines.weights import weights_source

    server = engine.server if isinstance(engine, EngineSpec) and engine.server else DEFAULT_SERVER_URL
    model = engine.model_type if isinstance(engine, (EngineSpec, NamedModel)) else DEFAULT_MODEL
    if isinstance(engine, EngineSpec):
        weights = engine.weights
    else:  # an engine object: the file it loaded (the default weights when it names none)
        weights = (str(engine.weights_path or "") or None) if isinstance(engine, LocalWeights) else None
    source = weights_source(model, weights) if model in MODELS else None
    return {"server_url": server, "model": model, "weights_url": source.url if source else None,
            "weights_note": source.note if source else None}


def whole_region(region: Region) -> Region:
    """``region`` on whole pixels, as QuPath's RegionRequest takes it."""
    x0, y0 = int(region.x), int(region.y)
    x1, y1 = int(round(region.x + region.width)), int(round(region.y + region.height))
    return Region(x0, y0, x1 - x0, y1 - y0, region.downsample, region.plane)


def detection_specs(engine: Any, options: DetectOptions, result: ImageDetection) -> list[DetectionSpec]:
    """One replay spec per window of a detection on one image (with the background prompts it used)."""
    specs = []
    for window in result.windows:
        plane = window.region.plane
        bg = tuple(o for o in result.prompts.background if o.plane.z == plane.z and o.plane.t == plane.t)
        specs.append(DetectionSpec(region=whole_region(window.region), prompts=window.prompts, background=bg,
                                   output=options.output, set_name=options.names,
                                   random_color=options.random_colors, **connection(engine)))
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
                                  **connection(engine)))
    return specs


def combine_scripts(scripts: Sequence[str]) -> str | None:
    """One script, or several run one after the other (each in its own closure) as one."""
    if not scripts:
        return None
    if len(scripts) == 1:
        return scripts[0]
    lines = [f"// {len(scripts)} qpsam runs on this image, replayed one after the other"]
    for n, script in enumerate(scripts, 1):
        lines += ["", f"var run{n} = {{ ->"]
        lines += [("    " + line) if line else "" for line in script.rstrip("\n").splitlines()]
        lines += ["}", f"run{n}()"]
    return "\n".join(lines) + "\n"


def write_scripts(path: str | os.PathLike[str], report: RunReport) -> list[Path]:
    """Write the run's scripts: to ``path`` for one image, else one file per image named after it."""
    path = Path(path)
    done = [(r.image, r.groovy) for r in report.images if r.groovy]
    written = []
    for image, script in done:
        target = path
        if len(done) > 1:
            target = path.with_name(f"{path.stem}-{safe_name(image)}{path.suffix or '.groovy'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_script(target, script))
    return written
