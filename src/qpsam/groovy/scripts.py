"""Replay scripts: a run spec as the Groovy script that drives qupath-extension-sam 0.9's task builders.

:func:`script_for` gives the script of any spec: the same server, model, weights, region, prompts and parameters,
every value written by :mod:`.literals`. The task runs in the script's own thread and its objects are added to the
current image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import FileWriteError, ScriptError
from ..fileio import atomic_write
from ..geometry import Region
from ..objects import ImagePlane, PathClass, PathObject
from ..prompts import vertices
from .literals import boolean, comment, integer, number, string
from .specs import AutomaskSpec, DetectionSpec, RunSpec, SequenceSpec, Spec, VideoPrompt, object_label

__all__ = ["automask_script", "detection_script", "script_for", "sequence_script", "write_script"]

_EXT = "org.elephant.sam"
_INDENT = "    "


# ---------------------------------------------------------------------------------------------------------------
# Script pieces


def _plane(plane: ImagePlane) -> str:
    z, t = integer(plane.z, "plane z"), integer(plane.t, "plane t")
    if plane.c == -1:
        return f"ImagePlane.getPlane({z}, {t})"
    return f"ImagePlane.getPlaneWithChannel({integer(plane.c, 'plane c')}, {z}, {t})"


def _path_class(path_class: PathClass | str | None) -> str:
    if path_class is None:
        return "null"
    name = path_class.name if isinstance(path_class, PathClass) else path_class
    return f"PathClass.fromString({string(name, 'class name')})"


def _vertices(obj: PathObject) -> list[tuple[float, float]]:
    if obj.roi_kind not in ("points", "line", "polyline"):
        raise ScriptError(f"{object_label(obj)} has a {obj.roi_kind} ROI, not points or a line")
    return vertices(obj.geometry)


def _roi_lines(obj: PathObject) -> list[str]:
    """A QuPath ROI for a prompt object (rectangles stay rectangles; points and lines become points)."""
    plane = _plane(obj.plane)
    if obj.roi_kind == "rectangle":
        minx, miny, maxx, maxy = obj.geometry.bounds
        values = ", ".join(
            number(v, f"rectangle of {object_label(obj)}") for v in (minx, miny, maxx - minx, maxy - miny)
        )
        return ["ROIs.createRectangleROI(", f"{_INDENT}{values},", f"{_INDENT}{plane}", ")"]
    points = [
        f"new qupath.lib.geom.Point2({number(x, f'point of {object_label(obj)}')}, {number(y, f'point of {object_label(obj)}')})"
        for x, y in _vertices(obj)
    ]
    lines = ["ROIs.createPointsROI(", f"{_INDENT}["]
    lines += [f"{_INDENT * 2}{p}{',' if i < len(points) - 1 else ''}" for i, p in enumerate(points)]
    lines += [f"{_INDENT}],", f"{_INDENT}{plane}", ")"]
    return lines


def _annotation_lines(obj: PathObject) -> list[str]:
    lines = ["PathObjects.createAnnotationObject("]
    roi = _roi_lines(obj)
    roi[-1] += ","
    lines += [_INDENT + line for line in roi]
    lines += [_INDENT + _path_class(obj.path_class), ")"]
    return lines


def _object_list(name: str, objects: Sequence[PathObject]) -> list[str]:
    if not objects:
        return [f"var {name} = []"]
    lines = [f"var {name} = ["]
    for i, obj in enumerate(objects):
        body = _annotation_lines(obj)
        if i < len(objects) - 1:
            body[-1] += ","
        lines += [_INDENT + line for line in body]
    lines.append("]")
    return lines


def _region(region: Region, z: str | None = None, t: str | None = None) -> str:
    values = [
        number(region.downsample, "region downsample"),
        integer(region.x, "region x"),
        integer(region.y, "region y"),
        integer(region.width, "region width"),
        integer(region.height, "region height"),
        z if z is not None else integer(region.plane.z, "region z"),
        t if t is not None else integer(region.plane.t, "region t"),
    ]
    return f"RegionRequest.createInstance(getCurrentServer().getPath(), {', '.join(values)})"


def _connection(spec: RunSpec) -> list[str]:
    return [
        f".serverURL({string(spec.server_url, 'server URL')})",
        f".verifySSL({boolean(spec.verify_ssl)})",
        f".model({_EXT}.entities.SAMType.{spec.model.upper()})",
    ]


def _weights_comment(spec: RunSpec) -> list[str]:
    if not spec.weights_note:
        return []
    return ["//", f"// WARNING: the run used its own weights, which this script does not pass on: {comment(spec.weights_note)}"]


def _weights(spec: RunSpec) -> list[str]:
    # Without a weights URL the builder's default (null) lets the server use its default weights.
    return [] if spec.weights_url is None else [f".checkpointUrl({string(spec.weights_url, 'weights URL')})"]


def _builder(task: str, methods: Iterable[str], variable: str = "task") -> list[str]:
    lines = [f"var {variable} = {_EXT}.tasks.{task}.builder(getCurrentViewer())"]
    lines += [f"{_INDENT}.server({_EXT}.Utils.createRenderedServer(getCurrentViewer()))"]
    lines += [_INDENT + m for m in methods]
    lines.append(f"{_INDENT}.build()")
    return lines


def _run_and_add(before_add: Sequence[str] = ()) -> list[str]:
    """Run the task in the script's own thread and add what it returns to the current image.

    The extension's own scripts hand the task to the JavaFX thread (``Platform.runLater``), which freezes the
    viewer during the request and lets later steps of a history script start before earlier ones end.
    """
    lines = [
        "task.run()",
        "var detected = task.get()",
        "if (detected) {",
        f"{_INDENT}var hierarchy = getCurrentHierarchy()",
    ]
    lines += [_INDENT + line for line in before_add]
    lines += [
        f"{_INDENT}hierarchy.addObjects(detected)",
        f"{_INDENT}hierarchy.getSelectionModel().clearSelection()",
        f"{_INDENT}fireHierarchyUpdate()",
        f"{_INDENT}println \"qpsam: added ${{detected.size()}} objects\"",
        "} else {",
        f"{_INDENT}println 'qpsam: no objects detected'",
        "}",
    ]
    return lines


def _header(title: str) -> list[str]:
    return [
        f"// {title}",
        "// Replays a qpsam run with qupath-extension-sam 0.9: open the image in QuPath, start the SAM server,",
        "// then run this script from Automate > Script editor.",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Generators


def detection_script(spec: DetectionSpec) -> str:
    """The Groovy script replaying a prompt detection (SAMDetectionTask, or SAM3DetectionTask for SAM3)."""
    if not isinstance(spec, DetectionSpec):
        raise ScriptError(f"detection_script needs a DetectionSpec, got {type(spec).__name__}")
    common = [
        f".regionRequest({_region(spec.region)})",
        *_connection(spec),
        f".outputType({_EXT}.entities.SAMOutput.{spec.output.extension_name})",
        f".setName({boolean(spec.set_name)})",
        f".setRandomColor({boolean(spec.random_color)})",
        *_weights(spec),
    ]
    if spec.is_sam3:
        lines = _header(f"qpsam detection: SAM3, {len(spec.prompts)} positive and {len(spec.background)} negative boxes")
        lines += _weights_comment(spec)
        lines += _object_list("positiveBboxes", spec.prompts)
        lines += _object_list("negativeBboxes", spec.background)
        # The server needs text_prompt even for boxes only: an empty text is what the extension's window sends.
        methods = common + [
            f".textPrompt({string(spec.text or '', 'text prompt')})",
            ".addPositiveBboxes(positiveBboxes)",
            ".addNegativeBboxes(negativeBboxes)",
            f".resetPrompts({boolean(spec.reset_prompts)})",
            f".confidenceThresh({number(spec.confidence_threshold, 'confidence threshold')})",
        ]
        lines += _builder("SAM3DetectionTask", methods)
    else:
        lines = _header(f"qpsam detection: {spec.model}, {len(spec.prompts)} prompts")
        lines += _weights_comment(spec)
        lines += _object_list("foregroundObjects", spec.prompts)
        lines += _object_list("backgroundObjects", spec.background)
        methods = common + [
            ".addForegroundPrompts(foregroundObjects)",
            ".addBackgroundPrompts(backgroundObjects)",
        ]
        lines += _builder("SAMDetectionTask", methods)
    lines += _run_and_add()
    return "\n".join(lines) + "\n"


def automask_script(spec: AutomaskSpec) -> str:
    """The Groovy script replaying an automatic mask generation (SAMAutoMaskTask) with every parameter."""
    if not isinstance(spec, AutomaskSpec):
        raise ScriptError(f"automask_script needs an AutomaskSpec, got {type(spec).__name__}")
    p = spec.params
    lines = _header(f"qpsam automask: {spec.model}")
    lines += _weights_comment(spec)
    lines.append(f"var clearCurrentObjects = {boolean(spec.clear_current_objects)}")
    methods = [
        f".regionRequest({_region(spec.region)})",
        *_connection(spec),
        f".outputType({_EXT}.entities.SAMOutput.{p.output.extension_name})",
        f".setName({boolean(spec.set_name)})",
        ".clearCurrentObjects(clearCurrentObjects)",
        f".setRandomColor({boolean(spec.random_color)})",
        f".pointsPerSide({integer(p.points_per_side, 'points_per_side')})",
        f".pointsPerBatch({integer(p.points_per_batch, 'points_per_batch')})",
        f".predIoUThresh({number(p.pred_iou_thresh, 'pred_iou_thresh')})",
        f".stabilityScoreThresh({number(p.stability_score_thresh, 'stability_score_thresh')})",
        f".stabilityScoreOffset({number(p.stability_score_offset, 'stability_score_offset')})",
        f".boxNmsThresh({number(p.box_nms_thresh, 'box_nms_thresh')})",
        f".cropNLayers({integer(p.crop_n_layers, 'crop_n_layers')})",
        f".cropNmsThresh({number(p.crop_nms_thresh, 'crop_nms_thresh')})",
        f".cropOverlapRatio({number(p.crop_overlap_ratio, 'crop_overlap_ratio')})",
        f".cropNPointsDownscaleFactor({integer(p.crop_n_points_downscale_factor, 'crop_n_points_downscale_factor')})",
        f".minMaskRegionArea({integer(p.min_mask_region_area, 'min_mask_region_area')})",
        f".includeImageEdge({boolean(p.include_image_edge)})",
        *_weights(spec),
    ]
    lines += _builder("SAMAutoMaskTask", methods)
    lines += _run_and_add(["if (clearCurrentObjects) {", f"{_INDENT}hierarchy.clearAll()", "}"])
    return "\n".join(lines) + "\n"


def _floor(v: float) -> int:
    return math.floor(v)


def _java_round(v: float) -> int:
    """Java's Math.round: halves go up (Python's round() goes to even)."""
    return math.floor(v + 0.5)


def _video_box_xyxy(box: tuple[float, float, float, float], region: Region) -> tuple[int, int, int, int]:
    """A SAM2 video box in region pixels, as the extension computes it from a rectangle ROI."""
    d = region.downsample
    minx, miny = math.floor(box[0]), math.floor(box[1])
    maxx, maxy = math.ceil(box[2]), math.ceil(box[3])
    return (
        math.trunc((minx - region.x) / d),
        math.trunc((miny - region.y) / d),
        _java_round((maxx - region.x) / d),
        _java_round((maxy - region.y) / d),
    )


def _video_point(point: tuple[float, float], region: Region) -> tuple[int, int]:
    d = region.downsample
    return _floor((point[0] - region.x) / d), _floor((point[1] - region.y) / d)


def _coordinates(points: Sequence[tuple[int, int]]) -> str:
    # JTS Coordinates, not the closures ({x: .., y: ..}) the extension writes, which cannot be replayed.
    items = ", ".join(
        f"new org.locationtech.jts.geom.Coordinate({number(x, 'point x')}, {number(y, 'point y')})" for x, y in points
    )
    return f"[{items}]"


def _sam2_video_object(obj_id: int, prompts: Sequence[VideoPrompt], region: Region) -> str:
    parts = [f"{_EXT}.parameters.SAM2VideoPromptObject.builder({integer(obj_id, 'object id')})"]
    boxes = [p.prompt.box for p in prompts if p.prompt.box is not None]
    if len(boxes) > 1:
        raise ScriptError(f"object {obj_id} has {len(boxes)} boxes on one frame; SAM2 takes one box per object")
    if boxes:
        parts.append(".bbox({})".format(", ".join(str(v) for v in _video_box_xyxy(boxes[0], region))))
    fg = [_video_point(pt, region) for p in prompts for pt, lab in zip(p.prompt.points, p.prompt.labels) if lab == 1]
    bg = [_video_point(pt, region) for p in prompts for pt, lab in zip(p.prompt.points, p.prompt.labels) if lab == 0]
    if fg:
        parts.append(f".addToForeground({_coordinates(fg)})")
    if bg:
        parts.append(f".addToBackground({_coordinates(bg)})")
    return "".join(parts) + ".build()"


def _sam3_video_object(obj_id: int, prompts: Sequence[VideoPrompt], region: Region, text: str | None) -> str:
    d = region.downsample
    parts = [f"{_EXT}.parameters.SAM3VideoPromptObject.builder({integer(obj_id, 'object id')})"]
    if text is not None:
        parts.append(f".text({string(text, 'text prompt')})")
    for p in prompts:
        x1, y1, x2, y2 = p.prompt.box  # type: ignore[misc]
        xywh = ((x1 - region.x) / d, (y1 - region.y) / d, (x2 - x1) / d, (y2 - y1) / d)
        method = "addNegativeBbox" if p.negative else "addPositiveBbox"
        parts.append(f".{method}({', '.join(number(v, 'SAM3 box') for v in xywh)})")
    return "".join(parts) + ".build()"


def sequence_script(spec: SequenceSpec) -> str:
    """The Groovy script replaying SAM2/SAM3 tracking over z or t (SAMSequenceTask)."""
    if not isinstance(spec, SequenceSpec):
        raise ScriptError(f"sequence_script needs a SequenceSpec, got {type(spec).__name__}")
    region = spec.region
    by_frame: dict[int, dict[int, list[VideoPrompt]]] = {}
    for p in spec.prompts:
        by_frame.setdefault(p.frame - spec.start, {}).setdefault(p.obj_id, []).append(p)
    lines = _header(f"qpsam tracking: {spec.model} over {spec.axis} = {spec.start}..{spec.end}")
    lines += _weights_comment(spec)
    lines += [f"var fromIndex = {integer(spec.start, 'start')}", f"var toIndex = {integer(spec.end, 'end')}"]
    lines.append("var objs = [")
    frames = sorted(by_frame)
    for i, key in enumerate(frames):
        built = []
        for obj_id in sorted(by_frame[key]):
            if spec.is_sam3:
                built.append(_sam3_video_object(obj_id, by_frame[key][obj_id], region, spec.text))
            else:
                built.append(_sam2_video_object(obj_id, by_frame[key][obj_id], region))
        lines.append(f"{_INDENT}{integer(key, 'frame')}: [")
        lines += [f"{_INDENT * 2}{b}{',' if j < len(built) - 1 else ''}" for j, b in enumerate(built)]
        lines.append(f"{_INDENT}]{',' if i < len(frames) - 1 else ''}")
    lines.append("]")
    ids = sorted({p.obj_id for p in spec.prompts})
    lines.append("var indexToPathClass = [")
    lines += [
        f"{_INDENT}{integer(obj_id, 'object id')}: {_path_class(spec.class_name(obj_id))}"
        f"{',' if j < len(ids) - 1 else ''}"
        for j, obj_id in enumerate(ids)
    ]
    lines.append("]")
    if spec.axis == "t":
        request = _region(region, t="it")
        plane_position = integer(region.plane.z, "region z")
    else:
        request = _region(region, z="it")
        plane_position = integer(region.plane.t, "region t")
    lines.append(f"var regionRequests = (fromIndex..toIndex).collect {{ {request} }}")
    methods = [
        ".regionRequests(regionRequests)",
        f".serverURL({string(spec.server_url, 'server URL')})",
        f".endpointName({string('sam3video' if spec.is_sam3 else 'video')})",
        f".verifySSL({boolean(spec.verify_ssl)})",
        f".model({_EXT}.entities.SAMType.{spec.model.upper()})",
        f".promptMode({_EXT}.entities.SAMPromptMode.{spec.mode})",
        ".objs(objs)",
        f".setName({boolean(spec.set_name)})",
        f".setRandomColor({boolean(spec.random_color)})",
        *_weights(spec),
        ".indexOffset(fromIndex)",
        ".indexToPathClass(indexToPathClass)",
        f".planePosition({plane_position})",
    ]
    lines += _builder("SAMSequenceTask", methods)
    register_classes = [
        "// Offer the tracked objects' classes in QuPath's class list (on the JavaFX thread, which owns it).",
        "var qupath = getQuPath()",
        "if (qupath != null) {",
        f"{_INDENT}javafx.application.Platform.runLater {{",
        f"{_INDENT * 2}var available = qupath.getAvailablePathClasses()",
        f"{_INDENT * 2}indexToPathClass.values().findAll {{ !available.contains(it) }}.each {{ available.add(it) }}",
        f"{_INDENT}}}",
        "}",
    ]
    lines += _run_and_add(register_classes)
    return "\n".join(lines) + "\n"


def script_for(spec: Spec) -> str:
    """The replay script of any spec."""
    if isinstance(spec, DetectionSpec):
        return detection_script(spec)
    if isinstance(spec, AutomaskSpec):
        return automask_script(spec)
    if isinstance(spec, SequenceSpec):
        return sequence_script(spec)
    raise ScriptError(f"no Groovy script for {type(spec).__name__}")


def write_script(path: str | Path, text: str) -> Path:
    """Write a script atomically (a temporary file beside it, then a rename) and check what landed."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ScriptError(f"cannot write Groovy script {target}: no folder {folder}")
    try:
        atomic_write(target, text)
    except FileWriteError as exc:
        raise ScriptError(f"cannot write Groovy script {target}: {exc}") from exc
    return target
