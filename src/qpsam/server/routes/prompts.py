"""Prompts on one image: boxes and points (SAM1 family, SAM2) and SAM3's text with exemplar boxes."""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ...engines.base import ConceptEngine, KeyedImages
from ...errors import PromptError
from ...sam import Mask, OutputType
from ..features import mask_features
from ..fields import prompt, xywh_to_xyxy
from ..host import ModelUnavailable
from ..limits import MAX_BOXES
from ..routing import slash_twins
from ..schemas import SAM3Body, SAMBody, body_schema, parse_body
from ..state import AppState, image_key

__all__ = ["router"]

log = logging.getLogger("qpsam.server")

router = APIRouter()
route = slash_twins(router)


# Masks of images up to this many pixels become polygons on the event loop (well under a millisecond for the
# extension's 512x512 views); larger ones in a worker thread, so that one huge mask cannot stall other requests.
_INLINE_FEATURE_PIXELS = 2048 * 2048


@route("POST", "/sam/", openapi_extra=body_schema(SAMBody))
async def predict(request: Request, state: AppState) -> Response:
    # A coroutine that reads its own body: the extension's every click is another prompt on the view the engine
    # holds, and then costs one JSON pass, one hash and one hop to the inference thread and back (a sync handler
    # added a hop through FastAPI's thread pool; a body parameter parsed the JSON into dicts, then validated those).
    timer = state.timer(request)
    timer.mark("route")
    raw = await request.body()
    timer.mark("read")
    body = parse_body(SAMBody, raw, request.headers.get("content-type"))
    del raw
    if body.type == "sam3":
        raise PromptError("type sam3 takes text and XYWH boxes: send it to /sam/sam3/")
    request_prompt = prompt(body.bbox, body.point_coords, body.point_labels)
    timer.mark("parse")
    if body.b64mask:
        log.info("b64mask ignored: a mask image cannot stand in for SAM's low-resolution logits")
    engine = await state.engine_async(body.type, body.checkpoint_url)
    timer.mark("engine")
    output = OutputType.MULTI_ALL if body.multimask_output else OutputType.SINGLE
    b64 = body.b64img
    run: Callable[[], tuple[list[Mask], float]]
    if not isinstance(engine, KeyedImages):
        image = await run_in_threadpool(state.decode, b64)
        timer.mark("image")

        def run() -> tuple[list[Mask], float]:
            start = time.perf_counter()
            engine.set_image(image)
            return engine.predict([request_prompt], output)[0], time.perf_counter() - start

    else:
        # The hot path: another prompt on the view the engine holds costs no decode. The key is compared outside
        # the inference thread only as a hint; set_image_from decides under the engine's lock.
        keyed = engine
        key = image_key(b64)
        timer.mark("key")
        decoded = None
        if keyed.image_key != key:
            decoded = await run_in_threadpool(state.decode, b64)
            timer.mark("image")

        def load() -> np.ndarray:
            return decoded if decoded is not None else state.decode(b64)

        def run() -> tuple[list[Mask], float]:
            start = time.perf_counter()
            keyed.set_image_from(key, load)
            return engine.predict([request_prompt], output)[0], time.perf_counter() - start

    masks, model_s = await state.host.run_async(run)
    timer.add("model", model_s)
    timer.mark("hop", exclude=model_s)
    if sum(m.mask.size for m in masks) <= _INLINE_FEATURE_PIXELS:
        features = mask_features(masks, body.type)
    else:
        features = await run_in_threadpool(mask_features, masks, body.type)
    timer.mark("polygon")
    response = JSONResponse(features)
    timer.mark("json")
    response.headers.update(timer.header())
    return response


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
