"""SAM3 concept prompts on project images: a text phrase and/or exemplar boxes find every similar object.

As in the SAM3 mode of qupath-extension-sam, the positive exemplars are the prompt rectangles (all of them, or
those of one class with ``prompts="class:NAME"``) and the negative exemplars are rectangles of ignored classes
(``Ignore*``). The image is read in tiles of ``model_input`` pixels at ``downsample`` (one tile for an image that
fits); each tile is sent with the phrase and the exemplar boxes that lie in it, so without a phrase only tiles
holding a positive exemplar are searched. Masks under ``confidence`` are dropped, and objects found in several
tiles are merged as in tiled automask.
"""

from __future__ import annotations

from typing import Any, Sequence

from shapely.geometry import box

from qpsam.engines.base import ConceptEngine, NamedModel
from qpsam.errors import JobError
from qpsam.geometry import Region
from qpsam.jobs.automask import merge_pieces, plan_tiles, tile_pieces
from qpsam.jobs.detect import QUALITY, DetectOptions, ImageDetection, quality_name
from qpsam.jobs.executors import EngineSpec, engine_for
from qpsam.jobs.sources import ImageSource
from qpsam.jobs.windows import Window
from qpsam.objects import DEFAULT_PLANE, ObjectType, PathClass, PathObject, walk
from qpsam.prompts import PromptSet, box_in_region
from qpsam.sam import MODELS
from qpsam.types import Progress

__all__ = ["check_concept_engine", "concept_image", "exemplars"]

Box = tuple[int, int, int, int]


def check_concept_engine(engine: Any) -> None:
    """A clear error unless ``engine`` (an engine or an :class:`EngineSpec`) does SAM3 concept segmentation."""
    model = engine.model_type if isinstance(engine, (EngineSpec, NamedModel)) else "?"
    if isinstance(engine, (EngineSpec, ConceptEngine)):
        info = MODELS.get(str(model))
        if info is not None and info.text:
            return
    raise JobError(f"text and exemplar prompts need SAM3 (--model sam3); model {model} segments one object per "
                   "prompt")


def exemplars(objects: Sequence[PathObject], options: DetectOptions) -> tuple[list[PathObject], list[PathObject]]:
    """(positive, negative) exemplar rectangles among ``objects`` (none unless ``options.exemplars``)."""
    if not options.exemplars:
        return [], []
    wanted = options.prompts[len("class:"):] if options.prompts.startswith("class:") else None
    positive, negative = [], []
    for obj in walk(objects):
        if obj.object_type is not ObjectType.ANNOTATION or obj.roi_kind != "rectangle":
            continue
        if obj.path_class is not None and obj.path_class.is_ignored:
            negative.append(obj)
        elif wanted is None or obj.class_name == wanted:
            positive.append(obj)
    return positive, negative


def _boxes(objects: Sequence[PathObject], tile: Region) -> tuple[list[PathObject], list[Box]]:
    """The objects whose rectangle lies (partly) in ``tile``, and their boxes in tile pixels, clipped to it."""
    rows, cols = tile.shape
    kept, boxes = [], []
    frame = box(*tile.bounds)
    for obj in objects:
        if obj.plane.z != tile.plane.z or obj.plane.t != tile.plane.t or not obj.geometry.intersects(frame):
            continue
        x1, y1, x2, y2 = box_in_region(obj.geometry, tile)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(cols, x2), min(rows, y2)
        if x2 > x1 and y2 > y1:
            kept.append(obj)
            boxes.append((x1, y1, x2, y2))
    return kept, boxes


def concept_image(engine: Any, spec: Any, source: ImageSource, objects: Sequence[PathObject],
                  options: DetectOptions, progress: Progress | None = None) -> tuple[ImageDetection, list[Any]]:
    """Find every instance of the concept in one image: the detection and its Groovy replay specs.

    ``engine`` does the work (an engine with ``segment``, or an :class:`EngineSpec` loaded in this process);
    ``spec`` is what the run was given (for the Groovy script's connection).
    """
    from qpsam.groovy import DetectionSpec
    from qpsam.jobs.scripts import connection, whole_region

    model = engine_for(engine) if isinstance(engine, EngineSpec) else engine
    check_concept_engine(model)
    positive, negative = exemplars(objects, options)
    found = PromptSet(tuple(positive), tuple(negative))
    if options.text is None and not positive:
        return ImageDetection((), (), (), 0, found), []
    plane = positive[0].plane if positive else DEFAULT_PLANE
    bounds = (0.0, 0.0, float(source.width), float(source.height))
    size = int(options.model_input)
    tiles = plan_tiles(bounds, size, size // 8, options.downsample or 1.0, plane)
    work = []
    for tile in tiles:
        pos, pos_boxes = _boxes(positive, tile)
        neg, neg_boxes = _boxes(negative, tile)
        if options.text is not None or pos_boxes:
            work.append((tile, pos, pos_boxes, neg, neg_boxes))
    pieces = []
    windows, specs = [], []
    for done, (tile, pos, pos_boxes, neg, neg_boxes) in enumerate(work, 1):
        model.set_image(source.read_region(tile))
        masks = [m for m in model.segment(options.text, pos_boxes, neg_boxes) if m.score >= options.confidence]
        pieces += tile_pieces(masks, tile, bounds, options.min_area, options.simplify)
        windows.append(Window(tile, tuple(pos)))
        specs.append(DetectionSpec(region=whole_region(tile), prompts=tuple(pos), background=tuple(neg), text=options.text,
                                   reset_prompts=True, confidence_threshold=options.confidence,
                                   set_name=options.names, random_color=options.random_colors, **connection(spec)))
        if progress:
            progress(done, len(work))
    classes = {o.path_class for o in positive}
    path_class = PathClass(options.path_class) if options.path_class else (classes.pop() if len(classes) == 1 else None)
    added = tuple(PathObject(p.geometry, options.object_type, path_class=path_class,
                             name=quality_name(p.score) if options.names else None,
                             measurements={QUALITY: p.score}, plane=plane)
                  for p in merge_pieces(pieces))
    removed = () if options.keep_prompts else tuple(o.id for o in positive)
    return ImageDetection(added, removed, tuple(windows), len(positive), found), specs
