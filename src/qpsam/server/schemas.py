"""Request bodies of the samapi protocol (snake_case keys, unknown keys ignored, optional fields nullable)."""

from __future__ import annotations

from typing import Any, Literal, Optional, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from ..sam import MODEL_TYPES, AutomaskParams

__all__ = [
    "ModelType",
    "SAMBody",
    "SAM3Body",
    "AutoMaskBody",
    "VideoBody",
    "WeightsBody",
    "parse_body",
    "body_schema",
]

ModelType = Literal[MODEL_TYPES]  # type: ignore[valid-type]


_AMG = AutomaskParams()

class _Body(BaseModel):
    # The extension sends keys the server does not use (builderAsGroovyScript, ...): ignore them.
    # Python's JSON reader takes Infinity, NaN and 1e999: every float field must be finite.
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), allow_inf_nan=False)


class SAMBody(_Body):
    """``POST /sam/``: box (XYXY) and/or labelled points on one image."""

    type: ModelType = "vit_h"
    bbox: Optional[list[float]] = None
    point_coords: Optional[list[list[float]]] = None
    point_labels: Optional[list[int]] = None
    b64img: str
    b64mask: Optional[str] = None
    multimask_output: bool = False
    checkpoint_url: Optional[str] = None


class SAM3Body(_Body):
    """``POST /sam/sam3/``: a text prompt and XYWH exemplar boxes, accumulated until ``reset_prompts``."""

    type: ModelType = "sam3"
    text_prompt: Optional[str] = None
    positive_bboxes: Optional[list[list[float]]] = None
    negative_bboxes: Optional[list[list[float]]] = None
    b64img: str
    checkpoint_url: Optional[str] = None
    reset_prompts: bool = False
    confidence_threshold: float = 0.5


class AutoMaskBody(_Body):
    """``POST /sam/automask/``: every parameter of SAM's automatic mask generator."""

    type: ModelType = "vit_h"
    b64img: str
    # The wire names are AutomaskParams' own; the defaults come from it (samapi's server defaults).
    points_per_side: int = _AMG.points_per_side
    points_per_batch: int = _AMG.points_per_batch
    pred_iou_thresh: float = _AMG.pred_iou_thresh
    stability_score_thresh: float = _AMG.stability_score_thresh
    stability_score_offset: float = _AMG.stability_score_offset
    box_nms_thresh: float = _AMG.box_nms_thresh
    crop_n_layers: int = _AMG.crop_n_layers
    crop_nms_thresh: float = _AMG.crop_nms_thresh
    crop_overlap_ratio: float = _AMG.crop_overlap_ratio
    crop_n_points_downscale_factor: int = _AMG.crop_n_points_downscale_factor
    min_mask_region_area: int = _AMG.min_mask_region_area
    output_type: str = "Single mask"
    include_image_edge: bool = False
    checkpoint_url: Optional[str] = None


class VideoBody(_Body):
    """``POST /sam/video/`` and ``/sam/sam3video/``: prompts per frame, propagated through a sequence."""

    type: ModelType = "sam2_t"
    dirname: Optional[str] = None
    b64imgs: Optional[list[str]] = None
    axes: str = "XYT"
    plane_position: int = 0
    start_frame_idx: Optional[int] = None
    max_frame_num_to_track: Optional[int] = None
    objs: Optional[dict[int, list[dict[str, Any]]]] = None
    # qpsam extension: also track backwards from the prompted frames (samapi tracks forward only).
    reverse: bool = True
    # The extension sends camelCase ``checkpointUrl`` here; samapi ignored it. Accept both spellings.
    checkpoint_url: Optional[str] = Field(
        default=None, validation_alias=AliasChoices("checkpoint_url", "checkpointUrl")
    )


class WeightsBody(_Body):
    """``POST /sam/weights/``: register weights for a model type from a URL under a name."""

    type: ModelType
    name: str
    url: str


Body = TypeVar("Body", bound=BaseModel)


def _is_json(content_type: str) -> bool:
    main, _, rest = content_type.partition(";")
    kind, _, subtype = main.strip().lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_body(model: type[Body], raw: bytes, content_type: str | None) -> Body:
    """A request body read straight from its bytes as ``model``, as FastAPI reads a body parameter (JSON without a
    content type or with a JSON one) but in one pass: pydantic's own JSON reader validates while it parses, and
    a 600 kB base64 image is one string made once. Errors are FastAPI's :class:`RequestValidationError` (422)
    with locations under ``body``."""
    if not raw:
        errors: list[dict[str, Any]] = [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        raise RequestValidationError(errors)
    if content_type and not _is_json(content_type):
        errors = [{"type": "model_attributes_type", "loc": ("body",),
                   "msg": f"Input should be JSON (Content-Type application/json), got Content-Type {content_type}",
                   "input": None}]
        raise RequestValidationError(errors)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = []
        for found in exc.errors(include_url=False):
            error: dict[str, Any] = {**found, "loc": ("body", *found["loc"])}
            if error["type"] == "json_invalid":
                error.pop("input", None)  # the whole body
            errors.append(error)
        raise RequestValidationError(errors) from None


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` with :func:`parse_body`: the request body FastAPI would
    have published for a body parameter of that type."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
