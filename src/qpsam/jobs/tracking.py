"""Tracking and 3-D: prompts propagated through z-slices or time points with a video predictor (SAM2).

Prompt objects on planes ``start..stop`` of the chosen axis give the tracks: prompts that share a name form one
track across planes, others are a track each. The frames are read from one region around all prompts (at a
downsample that fits the model input) and held in memory; the engine propagates forward and backward from the
prompted frames. Each track's masks become objects on their own plane, with the track's class and name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

from qpsam.engines.base import Engine, NamedModel, VideoEngine
from qpsam.errors import JobError
from qpsam.geometry import Region, mask_to_geometry
from qpsam.groovy import SequenceSpec, VideoPrompt
from qpsam.jobs.batch import Change, Target, View
from qpsam.jobs.detect import QUALITY, DetectOptions, describe_prompts
from qpsam.jobs.executors import EngineSpec, engine_for
from qpsam.jobs.report import RunReport
from qpsam.jobs.runner import run_job, spec_params
from qpsam.jobs.scripts import connection, whole_region
from qpsam.objects import ImagePlane, ObjectType, PathObject, walk
from qpsam.project import ProjectRef
from qpsam.prompts import PromptSet, prompts_from_objects, select_prompt_objects, vertices
from qpsam.sam import DEFAULT_TRACK_MODEL, SAM2_TYPES, Prompt, check_model_type
from qpsam.types import ImageProgress

__all__ = ["TrackOptions", "TrackPlan", "check_tracking", "plan_track", "sequence_specs", "track", "track_image",
           "track_target"]

# Smallest first, as users pick from the list.
_SAM2_CHOICES = ", ".join(reversed(SAM2_TYPES))


@dataclass(frozen=True)
class TrackOptions:
    """What a tracking run propagates (``axis`` z or t, planes ``start..stop`` inclusive) and what it makes."""

    axis: str = "z"
    start: int = 0
    stop: int = 0
    object_type: ObjectType = ObjectType.ANNOTATION
    keep_prompts: bool = False
    backend: str = "auto"  # how the project is opened: native, paquo (QuPath) or auto
    keep_version: bool | None = None  # paquo: keep a project's QuPath version (see open_project)

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_type", ObjectType(self.object_type))
        if self.backend not in ("auto", "native", "paquo"):
            raise JobError(f"backend must be 'auto', 'native' or 'paquo', got {self.backend!r}")

    def as_dict(self) -> dict[str, object]:
        """The options as plain values (for reports, history and --resume keys)."""
        return {"axis": self.axis, "from": self.start, "to": self.stop, "object_type": self.object_type.value,
                "keep_prompts": self.keep_prompts}


@dataclass(frozen=True)
class TrackPlan:
    """The region read on every plane, the planes, and the prompt objects of each frame."""

    region: Region
    planes: tuple[ImagePlane, ...]
    prompts: dict[int, tuple[PathObject, ...]]  # frame index -> prompt objects
    background: dict[int, tuple[PathObject, ...]]
    tracks: dict[Any, int]  # track key -> object id (0, 1, ...)


def track_key(obj: PathObject) -> Any:
    """Prompts with the same name are one track; unnamed prompts are a track each."""
    return ("name", obj.name) if obj.name else ("id", obj.id)


def plan_track(objects: Sequence[PathObject], width: int, height: int, axis: str, start: int, stop: int,
               model_input: int = 1024, margin: float = 0.25) -> TrackPlan:
    """Plan a propagation through ``axis`` (z or t) from ``start`` to ``stop`` (inclusive) for an image's objects."""
    if axis not in ("z", "t"):
        raise JobError(f"axis must be z or t, got {axis!r}")
    if stop < start:
        raise JobError(f"--to ({stop}) must not be before --from ({start})")
    found = select_prompt_objects(walk(objects))
    on_axis = [o for o in found.foreground if start <= getattr(o.plane, axis) <= stop]
    if not on_axis:
        raise JobError(f"no prompt objects on {axis} = {start}..{stop}")
    other = "t" if axis == "z" else "z"
    fixed = {getattr(o.plane, other) for o in on_axis}
    if len(fixed) > 1:
        raise JobError(f"prompts lie on several {other} values {sorted(fixed)}; tracking over {axis} needs one")
    fixed_value = fixed.pop()
    minx = min(o.geometry.bounds[0] for o in on_axis)
    miny = min(o.geometry.bounds[1] for o in on_axis)
    maxx = max(o.geometry.bounds[2] for o in on_axis)
    maxy = max(o.geometry.bounds[3] for o in on_axis)
    pad = max(32.0, margin * max(maxx - minx, maxy - miny))
    x0, y0 = max(0.0, math.floor(minx - pad)), max(0.0, math.floor(miny - pad))
    x1, y1 = min(float(width), math.ceil(maxx + pad)), min(float(height), math.ceil(maxy + pad))
    if x1 <= x0 or y1 <= y0:
        raise JobError(f"the prompts lie outside the image ({width} x {height})")
    side = max(x1 - x0, y1 - y0)
    downsample = 1.0 if side <= model_input else float(2 ** math.ceil(math.log2(side / model_input)))
    planes = tuple(ImagePlane(-1, v, fixed_value) if axis == "z" else ImagePlane(-1, fixed_value, v)
                   for v in range(start, stop + 1))
    prompts: dict[int, tuple[PathObject, ...]] = {}
    background: dict[int, tuple[PathObject, ...]] = {}
    for i, plane in enumerate(planes):
        here = tuple(o for o in on_axis if o.plane.z == plane.z and o.plane.t == plane.t)
        if here:
            prompts[i] = here
            background[i] = tuple(o for o in found.background if o.plane.z == plane.z and o.plane.t == plane.t)
    tracks: dict[Any, int] = {}
    for i in sorted(prompts):
        for obj in prompts[i]:
            tracks.setdefault(track_key(obj), len(tracks))
    return TrackPlan(Region(x0, y0, x1 - x0, y1 - y0, downsample, planes[0]), planes, prompts, background, tracks)


def track_image(engine: Any, source: Any, objects: Sequence[PathObject], axis: str, start: int, stop: int,
                object_type: ObjectType = ObjectType.ANNOTATION, keep_prompts: bool = False,
                progress: Any = None) -> tuple[TrackPlan, tuple[PathObject, ...], tuple[Any, ...]]:
    """Propagate the prompts of one image; returns the plan, the new objects and the ids of prompts to remove."""
    if not isinstance(engine, VideoEngine):
        raise JobError(f"model {engine.model_type if isinstance(engine, NamedModel) else engine!r} cannot track: "
                       f"use a SAM2 model ({_SAM2_CHOICES})")
    plan = plan_track(objects, source.width, source.height, axis, start, stop)
    regions = [Region(plan.region.x, plan.region.y, plan.region.width, plan.region.height, plan.region.downsample, p)
               for p in plan.planes]
    frames = [source.read_region(r) for r in regions]
    frame_prompts = {}
    for i, objs in plan.prompts.items():
        prompts = prompts_from_objects(PromptSet(objs, plan.background[i]), regions[i], match_plane=False)
        frame_prompts[i] = [p.__class__(box=p.box, points=p.points, labels=p.labels,
                                        key=plan.tracks[track_key(_by_id(objs, p.key))]) for p in prompts]
    masks = engine.propagate(frames, frame_prompts, reverse=True, progress=progress)
    first: dict[int, PathObject] = {}
    for i in sorted(plan.prompts):
        for obj in plan.prompts[i]:
            first.setdefault(plan.tracks[track_key(obj)], obj)
    added = []
    for frame, by_track in sorted(masks.items()):
        for track_id, mask in sorted(by_track.items()):
            geometry = mask_to_geometry(mask.mask, regions[frame])
            if geometry is None:
                continue
            prompt = first[track_id]
            added.append(PathObject(geometry, object_type, path_class=prompt.path_class,
                                    name=prompt.name or f"Track {track_id}",
                                    measurements={QUALITY: float(mask.score), "SAM track": float(track_id)},
                                    plane=plan.planes[frame]))
    removed = () if keep_prompts else tuple(o.id for objs in plan.prompts.values() for o in objs)
    return plan, tuple(added), removed


def _by_id(objects: Sequence[PathObject], key: Any) -> PathObject:
    return next(o for o in objects if o.id == key)


def check_tracking(engine: Any, axis: str, start: int, stop: int) -> None:
    """Refuse, before any weights are downloaded or loaded, a model that cannot track and a bad axis or range."""
    if axis not in ("z", "t"):
        raise JobError(f"axis must be z or t, got {axis!r}")
    if start < 0 or stop < start:
        raise JobError(f"--from {start} --to {stop}: planes must satisfy 0 <= from <= to")
    if isinstance(engine, EngineSpec):
        if not check_model_type(engine.model_type).video:
            raise JobError(f"model {engine.model_type!r} cannot track: use a SAM2 model ({_SAM2_CHOICES}) or sam3")
    elif not isinstance(engine, VideoEngine):
        raise JobError(f"model {engine.model_type if isinstance(engine, NamedModel) else engine!r} cannot track: "
                       f"use a SAM2 model ({_SAM2_CHOICES})")


def _check_planes(target: Target, axis: str, stop: int) -> None:
    sizes = getattr(target.source(), "sizes", None)
    if sizes is None:
        return
    n = sizes[1] if axis == "z" else sizes[0]
    if stop >= n:
        what = "z-slices" if axis == "z" else "time points"
        raise JobError(f"image {target.name!r} has {n} {what} ({axis} = 0..{n - 1}); --to {stop} is outside it")


def sequence_specs(engine: Any, plan: TrackPlan, axis: str) -> list[SequenceSpec]:
    """The replay spec of a tracking run (SAM2 video over z or t) from its :class:`TrackPlan`."""

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
                points = vertices(obj.geometry)
                prompt = Prompt(points=tuple(points), labels=(1,) * len(points))
            prompts.append(VideoPrompt(obj_id=track, frame=value, prompt=prompt))
    values = [getattr(p, axis) for p in plan.planes]
    return [SequenceSpec(region=whole_region(plan.region), axis=axis, start=min(values), end=max(values),
                         prompts=tuple(prompts), classes=classes, set_name=False, random_color=False,
                         **connection(engine))]


def track_target(model: Any, engine: Any, target: Target, options: TrackOptions) -> Change:
    """Propagate the prompts of one image (see :func:`track_image`): what it changes, with its replay spec and one
    view per plane. ``model`` does the work; ``engine`` is what the run was given (for the replay's connection)."""
    axis = options.axis
    plan, added, removed = track_image(model, target.source(), target.objects(), axis, options.start, options.stop,
                                       options.object_type, options.keep_prompts)
    views = tuple(View(Region(plan.region.x, plan.region.y, plan.region.width, plan.region.height,
                              plan.region.downsample, plane),
                       tuple(o for o in added if o.plane == plane), label=f"-{axis}{getattr(plane, axis)}")
                  for plane in plan.planes)
    return Change(added, removed, 1, tuple(sequence_specs(engine, plan, axis)), views=views)


def track(project: ProjectRef, images: Sequence[str] | None = None, *, engine: Engine | EngineSpec = EngineSpec(DEFAULT_TRACK_MODEL),
          options: TrackOptions = TrackOptions(), executor: Any = "local", resume: bool = False,
          groovy: str | os.PathLike[str] | None = None, report: str | os.PathLike[str] | None = None,
          preview: str | os.PathLike[str] | None = None, progress: ImageProgress | None = None,
          debug: bool = False) -> RunReport:
    """Propagate prompts through z or t on project images; tracks run in this process (video state is local)."""
    if executor not in (None, "local"):
        raise JobError("tracking runs in one process: the video predictor keeps its state in memory")
    check_tracking(engine, options.axis, options.start, options.stop)
    params = {**spec_params(engine), **options.as_dict()}

    def work(target: Target) -> Change:
        # loaded on first use (once: engine_for caches it), after every image's planes are checked
        model = engine_for(engine) if isinstance(engine, EngineSpec) else engine
        return track_target(model, engine, target, options)

    return run_job("track", params, project, images, work, backend=options.backend, keep_version=options.keep_version,
                   check=lambda target: _check_planes(target, options.axis, options.stop),
                   inputs=lambda objects: describe_prompts(objects, DetectOptions()), resume=resume,
                   progress=progress, debug=debug, groovy=groovy, report=report, preview=preview)
