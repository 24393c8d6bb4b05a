"""Detection and automatic masks on project images: the entry points and their per-image functions."""

from __future__ import annotations

import os
from typing import Any, Sequence

from qpsam.engines.base import Engine
from qpsam.errors import JobError
from qpsam.jobs.automask import AutomaskOptions, automask_region, plan_tiles
from qpsam.jobs.batch import Change, Target, View
from qpsam.jobs.channels import parse_channels
from qpsam.jobs.concept import check_concept_engine, concept_image
from qpsam.jobs.detect import DetectOptions, describe_prompts, detect_image, missing_prompts, select_prompts
from qpsam.jobs.executors import EngineSpec, Executor
from qpsam.jobs.report import RunReport
from qpsam.jobs.runner import channel_params, engine_and_executor, run_job, spec_params, steps
from qpsam.jobs.scripts import automask_specs, detection_specs
from qpsam.objects import DEFAULT_PLANE, ImagePlane, ObjectType, PathObject, walk
from qpsam.project import ProjectRef
from qpsam.types import ImageProgress, Progress, StepProgress

__all__ = ["automask", "automask_areas", "automask_target", "detect", "detect_target"]

Region4 = tuple[float, float, float, float]


def detect(
    project: ProjectRef,
    images: Sequence[str] | None = None,
    *,
    engine: Engine | EngineSpec = EngineSpec(),
    options: DetectOptions = DetectOptions(),
    executor: Any = "local",
    resume: bool = False,
    groovy: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    preview: str | os.PathLike[str] | None = None,
    progress: ImageProgress | None = None,
    debug: bool = False,
    step_progress: StepProgress | None = None,
    channels: str | Sequence[Any] | None = None,
) -> RunReport:
    """Prompt detection on project images (all by default); results are written into the project.

    With ``options.text`` or ``options.exemplars`` it is a SAM3 concept run (:mod:`qpsam.jobs.concept`): every
    object like the phrase or the exemplar boxes is found.

    ``channels`` (e.g. ``"DAPI:white"``, see :mod:`qpsam.jobs.channels`) renders only those channels for SAM.
    ``progress(image, done, total)`` is called after each image, ``step_progress(image, "window", done, total)``
    after each window of an image.
    """
    chosen = parse_channels(channels)
    if options.concept:  # before a model is loaded: SAM3 or nothing
        check_concept_engine(engine)
    model, ex = engine_and_executor(engine, executor)
    params = {**spec_params(engine), **options.as_dict(), **channel_params(chosen)}

    def work(target: Target) -> Change:
        return detect_target(model, engine, target, options, executor=ex,
                             progress=steps(step_progress, target.name, "tile" if options.concept else "window"))

    return run_job("detect", params, project, images, work, channels=chosen, backend=options.backend,
                   keep_version=options.keep_version, inputs=lambda objects: describe_prompts(objects, options),
                   resume=resume, progress=progress, debug=debug, groovy=groovy, report=report, preview=preview)


def detect_target(model: Any, engine: Engine | EngineSpec, target: Target, options: DetectOptions, *,
                  executor: Executor | None = None, progress: Progress | None = None) -> Change:
    """Prompt detection (or a SAM3 concept run) on one image: what it changes, with its replay specs and views.

    ``model`` does the work; ``engine`` is what the run was given (for the replay scripts' connection).
    """
    found = select_prompts(target.objects(), options)
    if options.text is None and not found.foreground:  # a text phrase (SAM3) needs no prompt objects
        return Change(skipped=missing_prompts(target.objects(), options))
    source = target.source()
    if options.concept:
        result, specs = concept_image(model, engine, source, target.objects(), options, progress=progress)
    else:
        result = detect_image(model, source, target.objects(), options, executor=executor, progress=progress,
                              found=found)
        specs = detection_specs(engine, options, result)
    views = tuple(View(w.region, result.added, result.prompts.foreground, result.prompts.background)
                  for w in result.windows)
    return Change(result.added, result.removed, len(result.windows), tuple(specs), views=views)


def automask(
    project: ProjectRef,
    images: Sequence[str] | None = None,
    *,
    engine: Engine | EngineSpec = EngineSpec(),
    options: AutomaskOptions = AutomaskOptions(),
    region: Region4 | str | None = None,
    plane: ImagePlane = DEFAULT_PLANE,
    executor: Any = "local",
    resume: bool = False,
    groovy: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    preview: str | os.PathLike[str] | None = None,
    progress: ImageProgress | None = None,
    debug: bool = False,
    step_progress: StepProgress | None = None,
    channels: str | Sequence[Any] | None = None,
) -> RunReport:
    """Automatic masks on project images: ``region`` is None (whole image), (x0, y0, x1, y1) or ``annotation:CLASS``.

    ``channels`` (e.g. ``"DAPI:white"``, see :mod:`qpsam.jobs.channels`) renders only those channels for SAM.
    ``progress(image, done, total)`` is called after each image, ``step_progress(image, "tile", done, total)``
    after each tile (counted over all the image's regions).
    """
    chosen = parse_channels(channels)
    model, ex = engine_and_executor(engine, executor)
    params = {**spec_params(engine), **options.as_dict(), "region": region, "plane": [plane.c, plane.z, plane.t],
              **channel_params(chosen)}

    def work(target: Target) -> Change:
        return automask_target(model, engine, target, options, region, plane, executor=ex,
                               progress=steps(step_progress, target.name, "tile"))

    return run_job("automask", params, project, images, work, channels=chosen, backend=options.backend,
                   keep_version=options.keep_version, inputs=lambda objects: _area_inputs(objects, region),
                   resume=resume, progress=progress, debug=debug, groovy=groovy, report=report, preview=preview)


def automask_target(model: Any, engine: Engine | EngineSpec, target: Target, options: AutomaskOptions,
                    region: Region4 | str | None = None, plane: ImagePlane = DEFAULT_PLANE, *,
                    executor: Executor | None = None, progress: Progress | None = None) -> Change:
    """Automatic masks on one image (see :func:`automask_areas`): what it changes, with its replay specs and views.

    ``progress(done, total)`` counts the tiles of all the image's areas.
    """
    source = target.source()
    areas = automask_areas(target, region, plane)
    added: list[PathObject] = []
    counts = [len(plan_tiles(_clip(bounds, source), options.tile_size, options.overlap, options.downsample))
              for bounds, _, _ in areas] if progress else []

    def tiles(offset: int) -> Progress | None:
        # the tiles of one area, counted on from those of the areas before it
        if progress is None:
            return None
        report, total = progress, sum(counts)
        return lambda done, _total: report(offset + done, total)

    for k, (bounds, within, area_plane) in enumerate(areas):
        added += automask_region(model, source, bounds, options, area_plane, within, executor=executor,
                                 progress=tiles(sum(counts[:k])))
    shapes = tuple(w if w is not None else _box(*_clip(b, source)) for b, w, _ in areas)
    views = tuple(View(_preview_region(source, b, p), tuple(added), areas=shapes) for b, _, p in areas)
    specs = [spec for b, _, p in areas
             for spec in automask_specs(engine, options, source.width, source.height, [b], p)]
    return Change(tuple(added), (), len(areas), tuple(specs), views=views)


def _clip(bounds: Region4 | None, source: Any) -> Region4:
    x0, y0, x1, y1 = bounds or (0, 0, source.width, source.height)
    return (max(0.0, x0), max(0.0, y0), min(float(source.width), x1), min(float(source.height), y1))


Area = tuple["Region4 | None", Any, ImagePlane]


def automask_areas(target: Target, region: Region4 | str | None, plane: ImagePlane) -> list[Area]:
    """The areas an automask covers on one image: (bounds, shape to clip to or None, plane).

    ``annotation:CLASS`` gives one area per area annotation of that class, on the annotation's own z and t;
    otherwise the one area lies on ``plane``.
    """
    if not isinstance(region, str):
        return [(region, None, plane)]
    if not region.startswith("annotation:"):
        raise JobError(f"region must be full, annotation:CLASS or x0,y0,x1,y1, got {region!r}")
    name = region[len("annotation:"):]
    found = [o for o in walk(target.objects()) if o.object_type is ObjectType.ANNOTATION
             and o.class_name == name and o.geometry.area > 0]
    if not found:
        raise JobError(f"image {target.name!r}: no area annotation of class {name!r} to restrict automask to")
    return [(o.geometry.bounds, o.geometry, ImagePlane(plane.c, o.plane.z, o.plane.t)) for o in found]


def _area_inputs(objects: Sequence[PathObject], region: Region4 | str | None) -> list[Any]:
    # what an automask reads from an image's objects: the annotations it is restricted to, if any
    if not (isinstance(region, str) and region.startswith("annotation:")):
        return []
    name = region[len("annotation:"):]
    return sorted([[o.plane.z, o.plane.t, o.geometry.wkt] for o in objects
                   if o.object_type is ObjectType.ANNOTATION and o.class_name == name])


def _preview_region(source: Any, bounds: Region4 | None, plane: ImagePlane) -> Any:
    from qpsam.geometry import Region

    x0, y0, x1, y1 = bounds or (0, 0, source.width, source.height)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(source.width, x1), min(source.height, y1)
    side = max(x1 - x0, y1 - y0)
    downsample = max(1.0, side / 2048)  # a preview is for eyes: at most 2048 pixels a side
    return Region(x0, y0, x1 - x0, y1 - y0, downsample, plane)


def _box(x0: float, y0: float, x1: float, y1: float) -> Any:
    from shapely.geometry import box

    return box(x0, y0, x1, y1)
