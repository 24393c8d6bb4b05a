"""Propagation through a sequence: SAM2 prompts per frame (``/sam/video/``) and SAM3 concepts
(``/sam/sam3video/``), on frames uploaded beforehand or sent in the body."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...engines.base import ConceptVideoEngine, VideoEngine
from ...errors import PromptError
from ...sam import SAM2_TYPES, Mask, Prompt
from ..echo import clip
from ..features import mask_features
from ..fields import index, plane, prompt, xywh_to_xyxy
from ..host import ModelUnavailable
from ..images import decode_image_bytes
from ..limits import MAX_BOXES, MAX_INDEX, MAX_VIDEO_OBJECTS
from ..routing import slash_twins
from ..schemas import VideoBody
from ..state import AppState, ServerState

__all__ = ["router"]

router = APIRouter()
route = slash_twins(router)


def frames_of(state: ServerState, body: VideoBody) -> list[np.ndarray]:
    """The request's frames: uploaded under ``dirname`` or sent as ``b64imgs``, each within the pixel limit."""
    settings = state.settings
    if body.dirname:
        raw = state.uploads.frames(body.dirname)
        return [
            decode_image_bytes(r, field=f"frame {i} of {clip(body.dirname)}", max_pixels=settings.max_image_pixels)
            for i, r in enumerate(raw)
        ]
    if body.b64imgs:
        if len(body.b64imgs) > settings.max_upload_frames:
            raise PromptError(f"b64imgs has {len(body.b64imgs)} frames; this server's limit is "
                              f"{settings.max_upload_frames}")
        return [state.decode(b, f"b64imgs[{i}]") for i, b in enumerate(body.b64imgs)]
    raise PromptError("a video request needs dirname (frames uploaded to /sam/upload/) or b64imgs")


def check_video(body: VideoBody) -> None:
    """The body's axes, indices and object count, before any frame is read."""
    if body.axes not in ("XYZ", "XYT"):
        raise PromptError(f"axes must be 'XYZ' or 'XYT', got {clip(body.axes)}")
    if not body.objs:
        raise PromptError("a video request needs objs: {frame index: [prompt objects]}")
    if body.max_frame_num_to_track is not None:
        index(body.max_frame_num_to_track, "max_frame_num_to_track", low=1)
    if body.start_frame_idx is not None:
        index(body.start_frame_idx, "start_frame_idx")
    index(body.plane_position, "plane_position")
    for frame in body.objs:
        index(frame, "objs frame index")
    count = sum(len(objs) for objs in body.objs.values())
    if count > MAX_VIDEO_OBJECTS:
        raise PromptError(f"objs holds {count} prompt objects; this server's limit is {MAX_VIDEO_OBJECTS}")


def check_frames(body: VideoBody, frames: list[np.ndarray], prompted: Any) -> None:
    """The prompted frames and the start frame lie within the frames sent."""
    bad = [f for f in prompted if not 0 <= f < len(frames)]
    if bad:
        raise PromptError(f"objs name frame(s) {clip(bad)} outside the {len(frames)} frames sent")
    if body.start_frame_idx is not None and body.start_frame_idx >= len(frames):
        raise PromptError(f"start_frame_idx {body.start_frame_idx} is outside the {len(frames)} frames sent")


def video_features(body: VideoBody, model_type: str, result: dict[int, dict[int, Any]]) -> list[dict]:
    """GeoJSON features of every object on every frame, on the frame's plane."""
    out: list[dict[str, Any]] = []
    for frame in sorted(result):
        objects = result[frame]
        ids = sorted(objects)
        masks = [Mask(np.asarray(getattr(objects[i], "mask", objects[i])) > 0, 0.0) for i in ids]
        where = plane(body.axes, frame, body.plane_position)
        out.extend(mask_features(masks, model_type, with_quality=False, object_ids=ids, plane=where))
    return out


@route("POST", "/sam/video/")
def video(state: AppState, body: VideoBody) -> JSONResponse:
    try:
        if body.type not in SAM2_TYPES:
            raise PromptError(f"/sam/video/ needs a SAM2 type ({', '.join(SAM2_TYPES)}), got {body.type}")
        check_video(body)
        prompts: dict[int, list[Prompt]] = {}
        for frame, objs in (body.objs or {}).items():
            by_id: dict[int, Prompt] = {}
            for j, obj in enumerate(objs):
                what = f"objs[{frame}][{j}]"
                index(obj.get("obj_id"), f"{what} obj_id", low=-MAX_INDEX)
                p = prompt(obj.get("bbox"), obj.get("point_coords"), obj.get("point_labels"), what)
                # A later prompt for the same object on the same frame replaces the earlier one (as in samapi).
                by_id[obj["obj_id"]] = Prompt(box=p.box, points=p.points, labels=p.labels, key=obj["obj_id"])
            prompts[int(frame)] = list(by_id.values())
        frames = frames_of(state, body)
        check_frames(body, frames, prompts)
        engine = state.engine_for(body.type, body.checkpoint_url)
        if not isinstance(engine, VideoEngine):
            raise ModelUnavailable(f"the {body.type} engine of this server cannot propagate through a video")
        propagate = engine.propagate
        result = state.host.run(
            lambda: propagate(
                frames,
                prompts,
                start_frame=body.start_frame_idx,
                max_frames=body.max_frame_num_to_track,
                reverse=body.reverse,
                progress=state.host.check,
            )
        )
        return JSONResponse(video_features(body, body.type, result))
    finally:
        if body.dirname:
            state.uploads.discard(body.dirname)


@route("POST", "/sam/sam3video/")
def sam3video(state: AppState, body: VideoBody) -> JSONResponse:
    try:
        if body.type != "sam3":
            raise PromptError(f"/sam/sam3video/ needs type sam3, got {body.type}")
        check_video(body)
        prompts: dict[int, list[dict[str, Any]]] = {}
        for frame, objs in (body.objs or {}).items():
            for j, obj in enumerate(objs):
                what = f"objs[{frame}][{j}]"
                boxes = obj.get("boxes_xywh") or []
                text = obj.get("text")
                labels = obj.get("box_labels") or [1] * len(boxes)
                if not isinstance(boxes, list) or not isinstance(labels, list):
                    raise PromptError(f"{what} boxes_xywh and box_labels must be lists")
                if len(labels) != len(boxes):
                    raise PromptError(f"{what} has {len(boxes)} boxes_xywh but {len(labels)} box_labels")
                if len(boxes) > MAX_BOXES:
                    raise PromptError(f"{what} has {len(boxes)} boxes_xywh; this server's limit is {MAX_BOXES}")
                if any(isinstance(v, bool) or v not in (0, 1) for v in labels):
                    raise PromptError(f"{what} box_labels must be 0 or 1, got {clip(labels)}")
                if text is not None and not isinstance(text, str):
                    raise PromptError(f"{what} text must be a string, got {clip(text)}")
                if not boxes and not text:
                    raise PromptError(f"{what} needs text or boxes_xywh")
                prompts.setdefault(int(frame), []).append(
                    {
                        "obj_id": index(obj.get("obj_id", j), f"{what} obj_id", low=-MAX_INDEX),
                        "text": text,
                        "boxes": [xywh_to_xyxy(b, f"{what} box") for b in boxes],
                        "labels": [int(v) for v in labels],
                    }
                )
        engine = state.engine_for("sam3", body.checkpoint_url)
        if not isinstance(engine, ConceptVideoEngine):
            raise ModelUnavailable("SAM3 video is not available on this server")
        propagate = engine.propagate_concept
        frames = frames_of(state, body)
        check_frames(body, frames, prompts)
        result = state.host.run(
            lambda: propagate(frames, prompts, start_frame=body.start_frame_idx, max_frames=body.max_frame_num_to_track)
        )
        return JSONResponse(video_features(body, "sam3", result))
    finally:
        if body.dirname:
            state.uploads.discard(body.dirname)
