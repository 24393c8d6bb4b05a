"""Prompt detection on one image: prompts -> windows -> SAM -> objects in image coordinates."""

from __future__ import annotations

import colorsys
import random
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from shapely.geometry.base import BaseGeometry

from qpsam.engines.base import Engine
from qpsam.errors import JobError
from qpsam.geometry import Region, mask_to_geometry
from qpsam.jobs.executors import EngineSpec, Executor, LocalExecutor, engine_for, engine_lock
from qpsam.jobs.sources import ImageSource
from qpsam.jobs.windows import Window, plan_windows
from qpsam.objects import ObjectType, PathClass, PathObject, walk
from qpsam.prompts import PromptSet, prompts_from_objects, select_prompt_objects
from qpsam.sam import OutputType, Prompt
from qpsam.types import Progress

__all__ = ["DetectOptions", "ImageDetection", "detect_image", "detect_window", "detection_plan", "QUALITY",
           "quality_name", "describe_prompts", "missing_prompts", "select_prompts"]

#: The measurement holding SAM's predicted quality, spelt as the QuPath extension spells it.
QUALITY = "SAM Quality"



@dataclass(frozen=True)
class DetectOptions:
    """What a detection run does with its prompts and results (the CLI's options)."""

    output: OutputType = OutputType.SINGLE
    prompts: str = "all"  # "all" or "class:NAME"
    keep_prompts: bool = False
    object_type: ObjectType = ObjectType.ANNOTATION
    path_class: str | None = None
    names: bool = False
    random_colors: bool = False
    min_area: float = 0.0
    simplify: float | None = None
    model_input: int = 1024
    downsample: float | None = None
    permit_lines: bool = True
    seed: int | None = None
    # SAM3 concept prompts (see qpsam.jobs.concept): a phrase, and/or the prompt rectangles as exemplar boxes
    text: str | None = None
    exemplars: bool = False
    confidence: float = 0.4
    backend: str = "auto"  # how the project is opened: native, paquo (QuPath) or auto
    keep_version: bool | None = None  # paquo: keep a project's QuPath version (see open_project)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", OutputType.parse(self.output))
        object.__setattr__(self, "object_type", ObjectType(self.object_type))
        if self.object_type not in (ObjectType.ANNOTATION, ObjectType.DETECTION):
            raise JobError(f"--object must be annotation or detection, got {self.object_type.value}")
        if self.prompts != "all" and not (self.prompts.startswith("class:") and len(self.prompts) > 6):
            raise JobError(f"--prompts must be 'all' or 'class:NAME', got {self.prompts!r}")
        if self.min_area < 0:
            raise JobError(f"min_area must be >= 0, got {self.min_area}")
        if self.backend not in ("auto", "native", "paquo"):
            raise JobError(f"backend must be 'auto', 'native' or 'paquo', got {self.backend!r}")
        if self.text is not None and not self.text.strip():
            raise JobError("--text must not be empty")
        if not 0.0 <= self.confidence <= 1.0:
            raise JobError(f"--confidence must be in [0, 1], got {self.confidence}")

    @property
    def concept(self) -> bool:
        """Whether this is a SAM3 concept run (a text phrase or exemplar boxes) rather than one mask per prompt."""
        return self.text is not None or self.exemplars

    def as_dict(self) -> dict[str, object]:
        """The options as plain values (for reports, history and --resume keys)."""
        return {
            "output": self.output.value, "prompts": self.prompts, "keep_prompts": self.keep_prompts,
            "object_type": self.object_type.value, "path_class": self.path_class, "names": self.names,
            "random_colors": self.random_colors, "min_area": self.min_area, "simplify": self.simplify,
            "model_input": self.model_input, "downsample": self.downsample, "permit_lines": self.permit_lines,
            # only in concept runs, so that the --resume keys of prompt runs stay as they were
            **({"text": self.text, "exemplars": self.exemplars, "confidence": self.confidence} if self.concept else {}),
        }


@dataclass(frozen=True)
class ImageDetection:
    """The outcome of detection on one image: objects to add, prompt objects to remove, windows read, and the
    prompt objects it found (selected once, for the results, the replay specs and the previews)."""

    added: tuple[PathObject, ...]
    removed: tuple[uuid.UUID, ...]
    windows: tuple[Window, ...]
    prompts_used: int
    prompts: PromptSet = PromptSet((), ())


def quality_name(score: float) -> str:
    """The name the QuPath extension gives a result (three decimals at most, always a dot)."""
    text = f"{score:.3f}".rstrip("0").rstrip(".")
    return f"SAM (Quality={text})"


def _random_color(rng: random.Random) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), 0.5 + 0.5 * rng.random(), 0.5 + 0.5 * rng.random())
    return int(r * 255), int(g * 255), int(b * 255)


def select_prompts(objects: Iterable[PathObject], options: DetectOptions) -> PromptSet:
    """The prompt objects of ``objects`` (foreground of ``options.prompts``, and background) a detection uses."""
    # a flat list that holds children beside their parents gives each object once
    unique = {id(o): o for o in walk(objects)}.values()
    found = select_prompt_objects(unique, permit_lines=options.permit_lines)
    if options.prompts.startswith("class:"):
        wanted = options.prompts[len("class:"):]
        found = PromptSet(tuple(o for o in found.foreground if o.class_name == wanted), found.background)
    return found


def _describe(obj: PathObject) -> list[object]:
    plane = obj.plane
    return [obj.roi_kind, obj.class_name, [plane.c, plane.z, plane.t], obj.geometry.wkt]


def describe_prompts(objects: Sequence[PathObject], options: DetectOptions) -> list[object]:
    """The prompts a detection reads from an image's objects (flat), as plain values: its ``--resume`` inputs.

    Ids are left out: prompts read again with the same shapes are the same prompts.
    """
    found = select_prompts(objects, options)
    return [sorted(_describe(o) for o in found.foreground), sorted(_describe(o) for o in found.background)]


def missing_prompts(objects: Sequence[PathObject], options: DetectOptions) -> str:
    """Why an image has no prompt for ``options``: the prompt classes it does have, and a close match."""
    import difflib

    found = select_prompt_objects(walk(objects), permit_lines=options.permit_lines).foreground
    if not options.prompts.startswith("class:"):
        return "no prompt objects (rectangles, points or lines that are annotations) on this image"
    wanted = options.prompts[len("class:"):]
    classes = sorted({o.class_name or "Unclassified" for o in found})
    if not classes:
        return f"no prompts of class {wanted!r}: this image has no prompt objects at all"
    close = difflib.get_close_matches(wanted, classes, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no prompts of class {wanted!r} (prompt classes here: {', '.join(classes)}){hint}"


Found = list[tuple[Any, list[tuple[BaseGeometry, float]]]]  # (prompt key, [(geometry, score)])


def detect_window(engine: "Engine | EngineSpec", source: ImageSource, region: Region, prompts: Sequence[Prompt],
                  output: OutputType, min_area: float = 0.0, simplify: float | None = None) -> Found:
    """One unit of work: read ``region``, run SAM on ``prompts``; per prompt key, (geometry, score) per mask.

    Runs in any process: given an :class:`EngineSpec`, the process's own engine is used (loaded once).
    """
    model = engine_for(engine) if isinstance(engine, EngineSpec) else engine
    pixels = source.read_region(region)  # outside the lock: reading overlaps another thread's inference
    with engine_lock(model):  # no other unit may set its image between this set_image and predict
        model.set_image(pixels)
        results = model.predict(prompts, output)
    found: Found = []
    for prompt, masks in zip(prompts, results):
        shapes: list[tuple[BaseGeometry, float]] = []
        for mask in masks:
            geometry = mask_to_geometry(mask.mask, region, min_area=min_area, simplify=simplify)
            if geometry is not None:
                shapes.append((geometry, float(mask.score)))
        found.append((prompt.key, shapes))
    return found


def detection_plan(found: PromptSet, width: int, height: int,
                   options: DetectOptions = DetectOptions()) -> list[tuple[Window, list[Prompt]]]:
    """The windows a detection reads on a ``width`` x ``height`` image and the prompts each one decodes, in
    window pixels: every foreground prompt in exactly one window (see :func:`plan_windows`), with the background
    points of the window's plane."""
    windows = plan_windows(found.foreground, width, height, options.model_input, downsample=options.downsample)
    plan = []
    for window in windows:
        region = window.region
        background = tuple(o for o in found.background if o.plane.z == region.plane.z and o.plane.t == region.plane.t)
        plan.append((window, prompts_from_objects(PromptSet(window.prompts, background), region)))
    return plan


def detect_image(
    engine: "Engine | EngineSpec",
    source: ImageSource,
    objects: Sequence[PathObject],
    options: DetectOptions = DetectOptions(),
    progress: Progress | None = None,
    executor: Executor | None = None,
    found: PromptSet | None = None,
) -> ImageDetection:
    """Run prompt detection on one image whose hierarchy holds ``objects``.

    ``progress(done, total)`` is called after each window. With an ``executor`` (e.g. Dask), windows run there and
    ``engine`` must be an :class:`EngineSpec`. ``found`` is :func:`select_prompts` of ``objects`` when the caller
    has it already.
    """
    if found is None:
        found = select_prompts(objects, options)
    if not found.foreground:
        return ImageDetection((), (), (), 0, found)
    plan = detection_plan(found, source.width, source.height, options)
    windows = [window for window, _ in plan]
    jobs = [(engine, source, window.region, prompts, options.output, options.min_area, options.simplify)
            for window, prompts in plan if prompts]
    executor = executor or LocalExecutor()
    results: list[Found | None] = [None] * len(jobs)
    for done, (i, result) in enumerate(executor.run(detect_window, jobs), 1):
        if isinstance(result, Exception):
            raise result
        results[i] = result
        if progress:
            progress(done, len(jobs))

    rng = random.Random(options.seed)
    override = PathClass(options.path_class) if options.path_class else None
    by_id = {o.id: o for o in found.foreground}
    added: list[PathObject] = []
    used = 0
    for result in results:
        for key, shapes in result or []:
            used += 1
            prompt_obj = by_id[key]
            for geometry, score in shapes:
                path_class = override or prompt_obj.path_class
                color = _random_color(rng) if options.random_colors and path_class is None else None
                added.append(
                    PathObject(
                        geometry,
                        options.object_type,
                        path_class=path_class,
                        name=quality_name(score) if options.names else None,
                        color=color,
                        measurements={QUALITY: score},
                        plane=prompt_obj.plane,
                    )
                )
    removed = () if options.keep_prompts else tuple(o.id for o in found.foreground)
    return ImageDetection(tuple(added), removed, tuple(windows), used, found)
