"""Run specs: frozen descriptions of a qpsam run that a replay script reproduces, checked when they are made.

:class:`DetectionSpec`, :class:`AutomaskSpec` and :class:`SequenceSpec` share :class:`RunSpec` (server, model,
weights, region). A spec refuses what qupath-extension-sam cannot replay, so that every spec has a script.
:func:`describe` gives a spec's parameters as plain JSON values for the run history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

from shapely.geometry import MultiPoint, Point
from shapely.geometry import box as shapely_box

from ..errors import ScriptError
from ..geometry import Region
from ..objects import ImagePlane, PathClass, PathObject
from ..sam import MODEL_TYPES, VIDEO_TYPES, AutomaskParams, OutputType, Prompt
from .literals import integer

__all__ = [
    "DEFAULT_SERVER_URL",
    "AutomaskSpec",
    "DetectionSpec",
    "RunSpec",
    "SequenceSpec",
    "Spec",
    "VideoPrompt",
    "describe",
    "job_kind",
    "object_label",
    "objects_from_prompts",
]

DEFAULT_SERVER_URL = "http://localhost:8000/sam/"


def _check_model(model: str) -> str:
    name = str(model).lower()
    if name not in MODEL_TYPES:
        choices = ", ".join(MODEL_TYPES)
        raise ScriptError(f"model {model!r} has no SAMType in qupath-extension-sam; choose one of {choices}")
    return name


@dataclass(frozen=True, kw_only=True)
class RunSpec:
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
class DetectionSpec(RunSpec):
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
                            f"SAM3 {role} box {i} ({object_label(obj)}) has a {obj.roi_kind} ROI; SAM3 takes rectangles"
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
                            f"{role} prompt {i} ({object_label(obj)}) has a {obj.roi_kind} ROI; "
                            f"{role} prompts are {', '.join(kinds)}"
                        )

    @classmethod
    def from_prompts(cls, prompts: Sequence[Prompt], *, region: Region, model: str, **options: object) -> "DetectionSpec":
        """A spec from engine prompts in full-resolution image coordinates (see :func:`objects_from_prompts`)."""
        foreground, background = objects_from_prompts(prompts, region.plane)
        return cls(region=region, model=model, prompts=foreground, background=background, **options)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class AutomaskSpec(RunSpec):
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
class SequenceSpec(RunSpec):
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


def object_label(obj: PathObject) -> str:
    """How errors and comments name a prompt object: by its name when it has one, and its id."""
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


def job_kind(spec: Spec) -> str:
    """The job a spec describes: ``detect``, ``automask`` or ``track``."""
    if isinstance(spec, DetectionSpec):
        return "detect"
    if isinstance(spec, AutomaskSpec):
        return "automask"
    if isinstance(spec, SequenceSpec):
        return "track"
    raise ScriptError(f"not a run spec: {type(spec).__name__}")



# A JSON description of a spec (for the history; not read back into specs)


def _describe_object(obj: PathObject) -> dict:
    from .. import geojson

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

