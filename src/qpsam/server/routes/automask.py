"""Automatic mask generation on one image, every generator parameter bounded before any work."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...errors import ModelError, PromptError
from ...sam import AutomaskParams
from ..features import mask_features
from ..fields import output_type
from ..limits import batch_for_memory, check_automask
from ..routing import slash_twins
from ..schemas import AutoMaskBody
from ..state import AppState

__all__ = ["router"]

router = APIRouter()
route = slash_twins(router)

# The generator parameters samapi's body names as AutomaskParams does.
_PARAMETERS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
               "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
               "crop_n_points_downscale_factor", "min_mask_region_area")


@route("POST", "/sam/automask/")
def automask(state: AppState, body: AutoMaskBody) -> JSONResponse:
    if body.type == "sam3":
        raise PromptError("automask does not run with sam3; use a SAM1 (vit_*) or SAM2 (sam2_*) type")
    settings = state.settings
    # Bounded before anything else runs: crop_n_layers 50 once grew past 6 GB without answering.
    values = check_automask(
        {name: getattr(body, name) for name in _PARAMETERS},
        max_decodings=settings.max_automask_points,
        max_crops=settings.max_automask_crops,
        max_region_area=settings.max_image_pixels,
    )
    try:
        params = AutomaskParams(
            **values, output=output_type(body.output_type), include_image_edge=body.include_image_edge
        )
    except ModelError as exc:
        raise PromptError(str(exc)) from None
    image = state.decode(body.b64img)
    params = batch_for_memory(params, image.shape[0], image.shape[1], settings.automask_batch_bytes)
    engine = state.engine_for(body.type, body.checkpoint_url)
    masks = state.host.run(lambda: engine.automask(image, params, progress=state.host.check))
    return JSONResponse(mask_features(masks, body.type))
