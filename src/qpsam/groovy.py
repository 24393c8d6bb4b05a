"""Groovy scripts that replay qpsam runs in QuPath.

A run is described by a frozen spec (:class:`DetectionSpec`, :class:`AutomaskSpec`, :class:`SequenceSpec`) and
turned into a script that drives qupath-extension-sam 0.9's task builders with the same server, model, weights,
region, prompts and parameters. The standalone import scripts (GeoJSON into an image, or into every image of a
project) live as files in the top-level ``groovy/`` folder; :func:`import_script` and
:func:`project_import_script` fill in their marked values.

Every value is written as a Groovy literal by :func:`number`, :func:`integer`, :func:`string` and
:func:`boolean`: numbers always carry a dot whatever the locale (``repr`` and ``Decimal`` formatting never
consult it), strings are single-quoted (no ``$`` interpolation) with every special and non-ASCII character
escaped, so a script is plain ASCII.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

from shapely.geometry import LineString, MultiPoint, Point
from shapely.geometry import box as shapely_box

from .errors import FileWriteError, ScriptError
from .fileio import atomic_write
from .geometry import Region
from .objects import ImagePlane, PathClass, PathObject
from .sam import MODEL_TYPES, VIDEO_TYPES, AutomaskParams, OutputType, Prompt

__all__ = [
    "DEFAULT_SERVER_URL",
    "DetectionSpec",
    "AutomaskSpec",
    "SequenceSpec",
    "VideoPrompt",
    "Spec",
    "detection_script",
    "automask_script",
    "sequence_script",
    "script_for",
    "describe",
    "import_script",
    "project_import_script",
    "fill_template",
    "write_script",
    "template_text",
    "template_path",
    "TEMPLATES",
    "number",
    "integer",
    "string",
    "boolean",
]

DEFAULT_SERVER_URL = "http://localhost:8000/sam/"

_EXT = "org.elephant.sam"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_INDENT = "    "


# ---------------------------------------------------------------------------------------------------------------
# Literals


def number(value: float, what: str = "value") -> str:
    """A Groovy decimal literal for ``value``: shortest exact digits, always with a dot, never an exponent."""
    if isinstance(value, bool):
        raise ScriptError(f"{what} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ScriptError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ScriptError(f"{what} must be finite, got {v!r}")
    text = repr(v)  # shortest round-trip digits; repr never uses the locale
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")  # 'f' formatting of a Decimal is locale-free as well
    if "." not in text:
        text += ".0"
    return "0.0" if text == "-0.0" else text


def integer(value: float, what: str = "value") -> str:
    """A Groovy int literal; ``value`` must be integral and fit a Java int."""
    if isinstance(value, bool):
        raise ScriptError(f"{what} must be an integer, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ScriptError(f"{what} must be an integer, got {value!r}") from None
    if not (math.isfinite(v) and v.is_integer()):
        raise ScriptError(f"{what} must be an integer, got {value!r}")
    n = int(value) if isinstance(value, int) else int(v)
    if not _INT_MIN <= n <= _INT_MAX:
        raise ScriptError(f"{what} {n} does not fit a Java int")
    return str(n)


_SIMPLE_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def string(value: str, what: str = "value") -> str:
    """A single-quoted Groovy string (no interpolation); special and non-ASCII characters as escapes."""
    if not isinstance(value, str):
        raise ScriptError(f"{what} must be a string, got {value!r}")
    out = ["'"]
    for ch in value:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            code = ord(ch)
            if code > 0xFFFF:  # Java strings are UTF-16: write the surrogate pair
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
    out.append("'")
    return "".join(out)


def boolean(value: bool) -> str:
    return "true" if value else "false"


def _comment(text: str) -> str:
    """Text safe inside a ``//`` comment: one line, printable ASCII."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))


# ---------------------------------------------------------------------------------------------------------------
# Specs


def _check_model(model: str) -> str:
    name = str(model).lower()
    if name not in MODEL_TYPES:
        choices = ", ".join(MODEL_TYPES)
        raise ScriptError(f"model {model!r} has no SAMType in qupath-extension-sam; choose one of {choices}")
    return name


@dataclass(frozen=True, kw_only=True)
class _RunSpec:
    """What every replayed run shares: where the server is, which model and weights, which region."""

    region: Region
    model: str
    server_url: str = DEFAULT_SERVER_URL
    weights_url: str | None = None
    weights_note: str | None = None  # why the script names no weights although the run used its own
    verify_ssl: bool = False
    set_name: bool = True
    random_color: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _check_model(self.model))
        if not isinstance(self.region, Region):
            raise ScriptError(f"region must be a qpsam.geometry.Region, got {type(self.region).__name__}")
        if not self.server_url or not isinstance(self.server_url, str):
            raise ScriptError(f"server_url must be a non-empty string, got {self.server_url!r}")
        for name in ("x", "y", "width", "height"):
            value = getattr(self.region, name)
            if not float(value).is_integer():
                raise ScriptError(f"region {name} must be a whole number of pixels (QuPath's RegionRequest), got {value}")
            integer(value, f"region {name}")

    @property
    def is_sam3(self) -> bool:
        return self.model == "sam3"


@dataclass(frozen=True, kw_only=True)
class DetectionSpec(_RunSpec):
    """A prompt detection: SAM1 family and SAM2 (boxes and points), or SAM3 (text and boxes).

    ``prompts`` are the foreground prompt objects in full-resolution image coordinates: rectangles and points
    (lines count as their vertices), each one request. ``background`` holds background points sent with every
    request. For SAM3, ``prompts`` are the positive boxes and ``background`` the negative boxes.
    """

    prompts: tuple[PathObject, ...] = ()
    background: tuple[PathObject, ...] = ()
    output: OutputType = OutputType.SINGLE
    text: str | None = None
    reset_prompts: bool = False
    confidence_threshold: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "background", tuple(self.background))
        object.__setattr__(self, "output", OutputType.parse(self.output))
        if self.is_sam3:
            for role, objects in (("positive", self.prompts), ("negative", self.background)):
                for i, obj in enumerate(objects):
                    if obj.roi_kind != "rectangle":
                        raise ScriptError(
                            f"SAM3 {role} box {i} ({_label(obj)}) has a {obj.roi_kind} ROI; SAM3 takes rectangles"
                        )
            if not self.prompts and not (self.text and self.text.strip()):
                raise ScriptError("a SAM3 detection needs a text prompt or at least one positive box")
            if not 0.0 <= float(self.confidence_threshold) <= 1.0:
                raise ScriptError(f"confidence_threshold must be in [0, 1], got {self.confidence_threshold}")
        else:
            if self.text is not None:
                raise ScriptError(f"text prompts need model sam3, not {self.model}")
            if not self.prompts:
                raise ScriptError("a detection needs at least one foreground prompt object")
            for role, objects in (("foreground", self.prompts), ("background", self.background)):
                for i, obj in enumerate(objects):
                    kinds = ("rectangle", "points", "line", "polyline") if role == "foreground" else (
                        "points", "line", "polyline")
                    if obj.roi_kind not in kinds:
                        raise ScriptError(
                            f"{role} prompt {i} ({_label(obj)}) has a {obj.roi_kind} ROI; "
                            f"{role} prompts are {', '.join(kinds)}"
                        )

    @classmethod
    def from_prompts(cls, prompts: Sequence[Prompt], *, region: Region, model: str, **options: object) -> "DetectionSpec":
        """A spec from engine prompts in full-resolution image coordinates (see :func:`objects_from_prompts`)."""
        foreground, background = objects_from_prompts(prompts, region.plane)
        return cls(region=region, model=model, prompts=foreground, background=background, **options)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class AutomaskSpec(_RunSpec):
    """An automatic mask generation ("segment everything") over the region.

    ``clear_current_objects`` removes every object of the image before adding the masks, as the extension's
    checkbox does; qpsam leaves it off so that replaying never deletes work.
    """

    params: AutomaskParams = field(default_factory=AutomaskParams)
    clear_current_objects: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.is_sam3:
            raise ScriptError("automask is not available for SAM3 in qupath-extension-sam")
        if not isinstance(self.params, AutomaskParams):
            raise ScriptError(f"params must be AutomaskParams, got {type(self.params).__name__}")


@dataclass(frozen=True)
class VideoPrompt:
    """One prompt of a tracked object on one frame, in full-resolution image coordinates.

    ``frame`` is the absolute z-slice or time point. ``negative`` marks a SAM3 box that excludes.
    """

    obj_id: int
    frame: int
    prompt: Prompt
    negative: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.obj_id, bool) or not isinstance(self.obj_id, int) or self.obj_id < 0:
            raise ScriptError(f"video prompt obj_id must be an integer >= 0, got {self.obj_id!r}")
        if isinstance(self.frame, bool) or not isinstance(self.frame, int) or self.frame < 0:
            raise ScriptError(f"video prompt frame must be an integer >= 0, got {self.frame!r}")


@dataclass(frozen=True, kw_only=True)
class SequenceSpec(_RunSpec):
    """Tracking with SAM2 or SAM3 video over z-slices or time points ``start..end`` (both included).

    The region gives x, y, width, height, downsample and the fixed plane coordinate (``region.plane.z`` when
    tracking over t, ``region.plane.t`` when tracking over z). ``classes`` names the class of each object id
    (default ``SAM<id>``); ``text`` is the SAM3 text prompt sent with every object.
    """

    axis: str
    start: int
    end: int
    prompts: tuple[VideoPrompt, ...] = ()
    classes: Mapping[int, str] = field(default_factory=dict)
    text: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model not in VIDEO_TYPES:
            raise ScriptError(f"sequences need a SAM2 model or sam3, not {self.model}")
        axis = str(self.axis).lower()
        if axis not in ("z", "t"):
            raise ScriptError(f"sequence axis must be 'z' or 't', got {self.axis!r}")
        object.__setattr__(self, "axis", axis)
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ScriptError(f"sequence {name} must be an integer >= 0, got {value!r}")
        if self.end < self.start:
            raise ScriptError(f"sequence end {self.end} is before start {self.start}")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if not self.prompts:
            raise ScriptError("a sequence needs at least one prompt")
        for p in self.prompts:
            if not self.start <= p.frame <= self.end:
                raise ScriptError(
                    f"prompt of object {p.obj_id} is on {axis}={p.frame}, outside {self.start}..{self.end}"
                )
            if self.is_sam3:
                if p.prompt.box is None or p.prompt.points:
                    raise ScriptError(f"SAM3 video prompts are boxes only (object {p.obj_id}, {axis}={p.frame})")
            elif p.negative:
                raise ScriptError(f"negative boxes need sam3 (object {p.obj_id}, {axis}={p.frame})")
        if self.text is not None and not self.is_sam3:
            raise ScriptError(f"text prompts need model sam3, not {self.model}")
        classes = {}
        for key, name in dict(self.classes).items():
            classes[int(key)] = name.name if isinstance(name, PathClass) else str(name)
        object.__setattr__(self, "classes", classes)

    @property
    def mode(self) -> str:
        """The extension's ``SAMPromptMode``: XYZ or XYT."""
        return "XYZ" if self.axis == "z" else "XYT"

    def class_name(self, obj_id: int) -> str:
        return self.classes.get(obj_id, f"SAM{obj_id}")


Spec = Union[DetectionSpec, AutomaskSpec, SequenceSpec]


def _label(obj: PathObject) -> str:
    return f"object {obj.name!r} id {obj.id}" if obj.name else f"object id {obj.id}"


def objects_from_prompts(
    prompts: Sequence[Prompt], plane: ImagePlane = ImagePlane()
) -> tuple[tuple[PathObject, ...], tuple[PathObject, ...]]:
    """Engine prompts (full-resolution image coordinates) as the extension's prompt objects.

    A box becomes a rectangle, foreground points a points object, and the background points, which the
    extension sends with every request, one points object in class ``Ignore*``. The extension cannot send a box
    and points in one request, nor different background points per request: such prompts raise
    :class:`~qpsam.errors.ScriptError`.
    """
    foreground: list[PathObject] = []
    background: tuple[tuple[float, float], ...] | None = None
    for i, prompt in enumerate(prompts):
        fg = tuple(p for p, label in zip(prompt.points, prompt.labels) if label == 1)
        bg = tuple(p for p, label in zip(prompt.points, prompt.labels) if label == 0)
        if background is None:
            background = bg
        elif sorted(set(bg)) != sorted(set(background)):
            raise ScriptError(
                f"prompt {i} has other background points than prompt 0; qupath-extension-sam sends the same "
                "background points with every prompt"
            )
        if prompt.box is not None:
            if fg:
                raise ScriptError(
                    f"prompt {i} has a box and foreground points; qupath-extension-sam sends a rectangle prompt "
                    "as a box only"
                )
            foreground.append(PathObject(shapely_box(*prompt.box), plane=plane))
        elif fg:
            foreground.append(PathObject(MultiPoint(fg) if len(fg) > 1 else Point(fg[0]), plane=plane))
    bg_objects: tuple[PathObject, ...] = ()
    if background:
        geometry = MultiPoint(background) if len(background) > 1 else Point(background[0])
        bg_objects = (PathObject(geometry, path_class=PathClass("Ignore*"), plane=plane),)
    return tuple(foreground), bg_objects


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
    geometry = obj.geometry
    if isinstance(geometry, Point):
        return [(geometry.x, geometry.y)]
    if isinstance(geometry, MultiPoint):
        return [(p.x, p.y) for p in geometry.geoms]
    if isinstance(geometry, LineString):
        return [(x, y) for x, y in geometry.coords]
    raise ScriptError(f"{_label(obj)} has a {obj.roi_kind} ROI, not points or a line")


def _roi_lines(obj: PathObject) -> list[str]:
    """A QuPath ROI for a prompt object (rectangles stay rectangles; points and lines become points)."""
    plane = _plane(obj.plane)
    if obj.roi_kind == "rectangle":
        minx, miny, maxx, maxy = obj.geometry.bounds
        values = ", ".join(
            number(v, f"rectangle of {_label(obj)}") for v in (minx, miny, maxx - minx, maxy - miny)
        )
        return ["ROIs.createRectangleROI(", f"{_INDENT}{values},", f"{_INDENT}{plane}", ")"]
    points = [
        f"new qupath.lib.geom.Point2({number(x, f'point of {_label(obj)}')}, {number(y, f'point of {_label(obj)}')})"
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


def _connection(spec: _RunSpec) -> list[str]:
    return [
        f".serverURL({string(spec.server_url, 'server URL')})",
        f".verifySSL({boolean(spec.verify_ssl)})",
        f".model({_EXT}.entities.SAMType.{spec.model.upper()})",
    ]


def _weights_comment(spec: _RunSpec) -> list[str]:
    if not spec.weights_note:
        return []
    return ["//", f"// WARNING: the run used its own weights, which this script does not pass on: {_comment(spec.weights_note)}"]


def _weights(spec: _RunSpec) -> list[str]:
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


def job_kind(spec: Spec) -> str:
    """The job a spec describes: ``detect``, ``automask`` or ``track``."""
    if isinstance(spec, DetectionSpec):
        return "detect"
    if isinstance(spec, AutomaskSpec):
        return "automask"
    if isinstance(spec, SequenceSpec):
        return "track"
    raise ScriptError(f"not a run spec: {type(spec).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# A JSON description of a spec (for the history; not read back into specs)


def _describe_object(obj: PathObject) -> dict:
    from . import geojson

    return geojson.to_feature(obj)  # QuPath GeoJSON: geojson.from_feature reads it back


def _describe_region(region: Region) -> dict:
    return {
        "x": region.x,
        "y": region.y,
        "width": region.width,
        "height": region.height,
        "downsample": region.downsample,
        "plane": [region.plane.c, region.plane.z, region.plane.t],
    }


def _plain(value: object) -> object:
    """Tuples as lists, so that a description equals itself after a JSON round trip."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe(spec: Spec) -> dict:
    """The parameters of a run as plain JSON values (prompt objects as QuPath GeoJSON features)."""
    out: dict = {
        "kind": job_kind(spec),
        "server_url": spec.server_url,
        "model": spec.model,
        "weights_url": spec.weights_url,
        "weights_note": spec.weights_note,
        "verify_ssl": spec.verify_ssl,
        "region": _describe_region(spec.region),
        "set_name": spec.set_name,
        "random_color": spec.random_color,
    }
    if isinstance(spec, DetectionSpec):
        out.update(
            output=spec.output.value,
            prompts=[_describe_object(o) for o in spec.prompts],
            background=[_describe_object(o) for o in spec.background],
        )
        if spec.is_sam3:
            out.update(text=spec.text, reset_prompts=spec.reset_prompts, confidence_threshold=spec.confidence_threshold)
    elif isinstance(spec, AutomaskSpec):
        p = spec.params
        out["params"] = {
            name: (getattr(p, name).value if name == "output" else getattr(p, name))
            for name in p.__dataclass_fields__
        }
        out["clear_current_objects"] = spec.clear_current_objects
    else:
        out.update(
            axis=spec.axis,
            start=spec.start,
            end=spec.end,
            text=spec.text,
            classes={str(k): v for k, v in spec.classes.items()},
            prompts=[
                {
                    "obj_id": p.obj_id,
                    "frame": p.frame,
                    "box": list(p.prompt.box) if p.prompt.box else None,
                    "points": [list(pt) for pt in p.prompt.points],
                    "labels": list(p.prompt.labels),
                    "negative": p.negative,
                }
                for p in spec.prompts
            ],
        )
    return _plain(out)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# Standalone scripts kept in groovy/


TEMPLATES = ("import_geojson.groovy", "import_geojson_project.groovy")
_FILL_IN = re.compile(r"^def (?P<name>\w+) = (?P<value>.*?)(?P<comment>\s*// FILL IN:.*)$")


def template_path(name: str) -> Path:
    """Where a standalone script lies (``groovy/`` of the source tree, packaged as ``qpsam/groovy_templates``)."""
    if name not in TEMPLATES:
        raise ScriptError(f"no Groovy template {name!r}; templates: {', '.join(TEMPLATES)}")
    packaged = Path(str(resources.files("qpsam") / "groovy_templates" / name))
    if packaged.is_file():
        return packaged
    # A source checkout where the groovy_templates link to ../../groovy was not made (symlinks off on Windows).
    source = Path(__file__).resolve().parents[2] / "groovy" / name
    return source if source.is_file() else packaged


def template_text(name: str) -> str:
    path = template_path(name)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"cannot read Groovy template {path}: {exc}") from exc


def _literal(value: object, what: str) -> str:
    if isinstance(value, bool):
        return boolean(value)
    if isinstance(value, int):
        return integer(value, what)
    if isinstance(value, float):
        return number(value, what)
    if isinstance(value, (str, Path)):
        return string(str(value), what)
    raise ScriptError(f"{what}: cannot write {type(value).__name__} into a Groovy script")


def fill_template(name: str, **values: object) -> str:
    """A standalone script with the values of its ``// FILL IN`` lines replaced (others keep their default)."""
    lines = template_text(name).splitlines()
    seen = set()
    for i, line in enumerate(lines):
        match = _FILL_IN.match(line)
        if match and match["name"] in values:
            key = match["name"]
            lines[i] = f"def {key} = {_literal(values[key], key)}{match['comment']}"
            seen.add(key)
    unknown = sorted(set(values) - seen)
    if unknown:
        raise ScriptError(f"template {name} has no fill-in value named {', '.join(unknown)}")
    return "\n".join(lines) + "\n"


_REMOVE_MODES = ("none", "same-id", "all")


def _check_remove(remove: str) -> str:
    if remove not in _REMOVE_MODES:
        raise ScriptError(f"remove must be one of {', '.join(_REMOVE_MODES)}, got {remove!r}")
    return remove


def import_script(geojson_path: str | Path, *, remove: str = "same-id", nest: bool = False) -> str:
    """A script importing one GeoJSON file into the image open in QuPath.

    ``remove``: ``same-id`` first removes objects whose id is in the file (importing twice replaces), ``all``
    clears the image, ``none`` only adds. ``nest`` re-nests objects by geometry (QuPath's resolveHierarchy).
    A relative path is read from the project's folder.
    """
    return fill_template(
        "import_geojson.groovy",
        geojsonFile=Path(geojson_path).as_posix() if isinstance(geojson_path, Path) else str(geojson_path),
        removeBeforeImport=_check_remove(remove),
        nestObjects=bool(nest),
    )


def project_import_script(
    geojson_folder: str | Path = "qpsam/geojson",
    *,
    file_name: str = "{id}.geojson",
    remove: str = "same-id",
    nest: bool = False,
) -> str:
    """A script for ``QuPath script -p project.qpproj -s script.groovy`` importing each entry's GeoJSON.

    ``file_name`` names each entry's file: ``{id}`` is the entry id, ``{name}`` the image name. A relative
    folder is read from the project's folder.
    """
    if "{id}" not in file_name and "{name}" not in file_name:
        raise ScriptError(f"file_name {file_name!r} must contain {{id}} or {{name}} to tell the images apart")
    folder = geojson_folder.as_posix() if isinstance(geojson_folder, Path) else str(geojson_folder)
    return fill_template(
        "import_geojson_project.groovy",
        geojsonFolder=folder,
        fileNamePattern=file_name,
        removeBeforeImport=_check_remove(remove),
        nestObjects=bool(nest),
    )


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
