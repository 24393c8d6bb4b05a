"""Prompts on one image: boxes and points (SAM1 family, SAM2) and SAM3's text with exemplar boxes."""

from __future__ import annotations

import logging

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...engines.base import ConceptEngine, KeyedImages
from ...errors import PromptError
from ...sam import Mask, OutputType
from ..features import mask_features
from ..fields import prompt, xywh_to_xyxy
from ..host import ModelUnavailable
from ..limits import MAX_BOXES
from ..routing import slash_twins
from ..schemas import SAM3Body, SAMBody
from ..state import AppState, image_key

__all__ = ["router"]

log = logging.getLogger("qpsam.server")

router = APIRouter()
route = slash_twins(router)


@route("POST", "/sam/")
def predict(state: AppState, body: SAMBody) -> JSONResponse:
    if body.type == "sam3":
        raise PromptError("type sam3 takes text and XYWH boxes: send it to /sam/sam3/")
    request_prompt = prompt(body.bbox, body.point_coords, body.point_labels)
    if body.b64mask:
        log.info("b64mask ignored: a mask image cannot stand in for SAM's low-resolution logits")
    engine = state.engine_for(body.type, body.checkpoint_url)
    output = OutputType.MULTI_ALL if body.multimask_output else OutputType.SINGLE
    if not isinstance(engine, KeyedImages):
        image = state.decode(body.b64img)

        def run() -> list[Mask]:
            engine.set_image(image)
            return engine.predict([request_prompt], output)[0]

        return JSONResponse(mask_features(state.host.run(run), body.type))

    # The hot path: another prompt on the view the engine holds costs no decode and no hash. The key is read
    # outside the inference thread only as a hint; set_image_from decides under the engine's lock.
    key = image_key(body.b64img)
    decoded = None if engine.image_key == key else state.decode(body.b64img)

    def load() -> np.ndarray:
        return decoded if decoded is not None else state.decode(body.b64img)

    def run_keyed() -> list[Mask]:
        engine.set_image_from(key, load)
        return engine.predict([request_prompt], output)[0]

    return JSONResponse(mask_features(state.host.run(run_keyed), body.type))

    return JSONResponse(mask_features(state.host.run(run), body.type))


@route("POST", "/sam/sam3/")
def sam3(state: AppState, body: SAM3Body) -> JSONResponse:
    if body.type != "sam3":
        raise PromptError(f"/sam/sam3/ needs type sam3, got {body.type}")
    if not 0.0 <= body.confidence_threshold <= 1.0:
        raise PromptError(f"confidence_threshold must be in [0, 1], got {body.confidence_threshold}")
    if len(body.positive_bboxes or []) + len(body.negative_bboxes or []) > MAX_BOXES:
        raise PromptError(f"sam3 takes at most {MAX_BOXES} boxes (this server's limit)")
    positives = [xywh_to_xyxy(b, "positive_bboxes entry") for b in body.positive_bboxes or []]
    negatives = [xywh_to_xyxy(b, "negative_bboxes entry") for b in body.negative_bboxes or []]
    image = state.decode(body.b64img)
    engine = state.engine_for("sam3", body.checkpoint_url)
    if not isinstance(engine, ConceptEngine):
        raise ModelUnavailable("SAM3 is not available on this server: its engine cannot take text prompts")
    segment = engine.segment
    key = ("sam3", body.checkpoint_url)

    def run() -> list[Mask]:
        boxes = state.sam3_state.setdefault(key, {"positive": [], "negative": []})
        if body.reset_prompts:
            boxes["positive"], boxes["negative"] = [], []
        # Boxes accumulate across requests until reset_prompts (samapi's contract); the text is replaced.
        if len(boxes["positive"]) + len(boxes["negative"]) + len(positives) + len(negatives) > MAX_BOXES:
            raise PromptError(f"sam3 keeps at most {MAX_BOXES} boxes (this server's limit); "
                              "send reset_prompts to start again")
        boxes["positive"] = boxes["positive"] + positives
        boxes["negative"] = boxes["negative"] + negatives
        if not (body.text_prompt or boxes["positive"] or boxes["negative"]):
            raise PromptError("sam3 needs text_prompt or at least one box (none given, none kept)")
        engine.set_image(image)
        found = segment(body.text_prompt or None, list(boxes["positive"]), list(boxes["negative"]))
        return [m for m in found if m.score > body.confidence_threshold]

    return JSONResponse(mask_features(state.host.run(run), "sam3"))
