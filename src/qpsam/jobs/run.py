"""The job entry points over projects: :func:`detect`, :func:`automask`, :func:`track`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from qpsam.engines.base import Engine, LocalWeights, NamedModel
from qpsam.errors import JobError
from qpsam.jobs.automask import AutomaskOptions, automask_region, plan_tiles
from qpsam.jobs.batch import Change, ImageProgress, Target, run_batch
from qpsam.jobs.channels import parse_channels
from qpsam.jobs.detect import DetectOptions, _select, describe_prompts, detect_image, missing_prompts
from qpsam.jobs.executors import EngineSpec, LocalExecutor, engine_for, make_executor
from qpsam.jobs.report import RunReport
from qpsam.objects import DEFAULT_PLANE, ImagePlane, ObjectType, PathObject, walk

__all__ = ["detect", "automask", "track"]

Region4 = tuple[float, float, float, float]
StepProgress = Callable[[str, str, int, int], None]  # (image name, unit, units done, units total)


def _steps(step_progress: StepProgress | None, name: str, unit: str) -> Callable[[int, int], None] | None:
    """The per-unit progress of one image, for ``step_progress`` (None when nobody listens)."""
    if step_progress is None:
        return None
    return lambda done, total: step_progress(name, unit, done, total)


def _engine_and_executor(engine: Engine | EngineSpec, executor: Any) -> tuple[Any, Any]:
    ex = make_executor(executor)
    if isinstance(ex, LocalExecutor) and isinstance(engine, EngineSpec):
        return engine_for(engine), ex  # load once, in this process
    if not isinstance(ex, LocalExecutor) and not isinstance(engine, EngineSpec):
        raise JobError("a distributed executor needs an EngineSpec (workers build their own model), not an engine")
    return engine, ex


def _spec_params(engine: Engine | EngineSpec) -> dict[str, Any]:
    if isinstance(engine, EngineSpec):
        precision = {} if engine.precision == "auto" else {"precision": engine.precision}  # old --resume keys hold
        return {"model": engine.model_type, "weights": engine.weights, "server": engine.server, **precision}
    return {"model": engine.model_type if isinstance(engine, NamedModel) else type(engine).__name__,
            "weights": str(engine.weights_path) if isinstance(engine, LocalWeights) else ""}


def _channel_params(chosen: Sequence[Any] | None) -> dict[str, Any]:
    # only present when given, so that runs without --channels keep their --resume keys
    return {"channels": [str(c) for c in chosen]} if chosen else {}


def _finish(report: RunReport, report_path: str | os.PathLike[str] | None, groovy: str | os.PathLike[str] | None) -> RunReport:
    if report_path:
        report.write(report_path)
    if groovy:
        from qpsam.jobs.scripts import write_scripts

        write_scripts(groovy, report)
    return report


def detect(
    project: Any,
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
    from qpsam.jobs.scripts import detection_specs
    from qpsam.jobs.targets import project_targets

    chosen = parse_channels(channels)
    if options.concept:  # before a model is loaded: SAM3 or nothing
        from qpsam.jobs.concept import check_concept_engine, concept_image, exemplars

        check_concept_engine(engine)
    model, ex = _engine_and_executor(engine, executor)
    params = {**_spec_params(engine), **options.as_dict(), **_channel_params(chosen)}

    def work(target: Target) -> Change:
        # A text phrase (SAM3) needs no prompt objects; everything else does.
        if options.text is None and not describe_prompts(list(walk(target.objects())), options)[0]:
            return Change(skipped=missing_prompts(target.objects(), options))
        source = target.source()
        if options.concept:
            result, concept_specs = concept_image(model, engine, source, target.objects(), options,
                                                  progress=_steps(step_progress, target.name, "tile"))
            if preview:
                positive, negative = exemplars(target.objects(), options)
                _previews(preview, target, source, [w.region for w in result.windows], result.added,
                          positive, negative)
            return Change(result.added, result.removed, len(result.windows), tuple(concept_specs))
        result = detect_image(model, source, target.objects(), options, executor=ex,
                              progress=_steps(step_progress, target.name, "window"))
        if preview:
            shown = _select(target.objects(), options)  # the prompts this run used (still in the hierarchy)
            _previews(preview, target, source, [w.region for w in result.windows], result.added,
                      shown.foreground, shown.background)
        specs = detection_specs(engine, options, result, target.objects())
        return Change(result.added, result.removed, len(result.windows), tuple(specs))

    with project_targets(project, images, chosen, backend=options.backend,
                         keep_version=options.keep_version) as targets:
        out = run_batch("detect", params, targets, work, resume=resume, progress=progress, debug=debug,
                        inputs=lambda objects: describe_prompts(objects, options))
    return _finish(out, report, groovy)


def automask(
    project: Any,
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
    from qpsam.jobs.scripts import automask_specs
    from qpsam.jobs.targets import project_targets

    chosen = parse_channels(channels)
    model, ex = _engine_and_executor(engine, executor)
    params = {**_spec_params(engine), **options.as_dict(), "region": region, "plane": [plane.c, plane.z, plane.t],
              **_channel_params(chosen)}

    def work(target: Target) -> Change:
        source = target.source()
        areas = automask_areas(target, region, plane)
        added: list[PathObject] = []
        steps = _steps(step_progress, target.name, "tile")
        counts = [len(plan_tiles(_clip(bounds, source), options.tile_size, options.overlap, options.downsample))
                  for bounds, _, _ in areas] if steps else []
        for k, (bounds, within, area_plane) in enumerate(areas):
            offset = sum(counts[:k])
            tiles = (lambda done, _t, o=offset: steps(o + done, sum(counts))) if steps else None
            added += automask_region(model, source, bounds, options, area_plane, within, executor=ex,
                                     progress=tiles)
        if preview:
            shapes = [w if w is not None else _box(*_clip(b, source)) for b, w, _ in areas]
            _previews(preview, target, source, [_preview_region(source, b, p) for b, _, p in areas], added,
                      areas=shapes)
        specs = [spec for b, _, p in areas
                 for spec in automask_specs(engine, options, source.width, source.height, [b], p)]
        return Change(tuple(added), (), len(areas), tuple(specs))

    with project_targets(project, images, chosen, backend=options.backend,
                         keep_version=options.keep_version) as targets:
        out = run_batch("automask", params, targets, work, resume=resume, progress=progress, debug=debug,
                        inputs=lambda objects: _area_inputs(objects, region))
    return _finish(out, report, groovy)


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


def _area_inputs(objects: Sequence[PathObject], region: Region4 | str | None) -> list[object]:
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


def _previews(folder: str | os.PathLike[str], target: Target, source: Any, regions: Sequence[Any],
              objects: Sequence[PathObject], foreground: Sequence[PathObject] = (),
              background: Sequence[PathObject] = (), areas: Sequence[Any] = ()) -> None:
    from shapely.geometry import box

    from qpsam.jobs.preview import write_preview

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in target.name)

    def near(items: Sequence[Any], frame: Any) -> list[Any]:
        return [o for o in items if getattr(o, "geometry", o).intersects(frame)]

    for i, region in enumerate(regions):
        frame = box(*region.bounds)
        write_preview(Path(folder) / f"{safe}-{i}.png", source.read_region(region), region, near(objects, frame),
                      near(foreground, frame), near(background, frame), near(areas, frame))


def track(project: Any, *args: Any, **kwargs: Any) -> RunReport:
    """Propagate prompts through z or t with a video predictor (SAM2/SAM3)."""
    from qpsam.jobs.tracking import track as _track

    return _track(project, *args, **kwargs)
