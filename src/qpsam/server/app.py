"""The FastAPI application: samapi's endpoints, thin handlers (decode request -> engine -> features)."""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Optional

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..engines.base import (
    SAM2_TYPES,
    AutomaskParams,
    ConceptEngine,
    ConceptVideoEngine,
    Mask,
    OutputType,
    Prompt,
    VideoEngine,
)
from ..errors import ModelError, PromptError, QpsamError, WeightsError
from .echo import clip, clip_detail, validation_detail
from .features import mask_features
from .guard import Guard
from .host import EngineFactory, ModelHost, ModelUnavailable
from .images import ImageTooLarge, decode_b64_image, decode_image_bytes
from .limits import (
    MAX_BOXES,
    MAX_COORDINATE,
    MAX_INDEX,
    MAX_PROMPT_POINTS,
    MAX_VIDEO_OBJECTS,
    batch_for_memory,
    check_automask,
)
from .schemas import AutoMaskBody, ModelType, SAM3Body, SAMBody, VideoBody, WeightsBody
from .settings import Settings
from .shutdown import ServerStopping, Shutdown
from .uploads import UploadStore
from .weights_api import CheckpointRejected, WeightsService

__all__ = ["create_app", "PROTOCOL_VERSION", "FEATURES"]

log = logging.getLogger("qpsam.server")

# The samapi release whose wire format this server speaks; ``/sam/version/`` answers it with qpsam's version
# as a local label, so that clients comparing samapi versions keep working.
PROTOCOL_VERSION = "0.7.1"

# Lowest SAM3 confidence a request can ask for (thresholds below it act as it).
SAM3_FLOOR = 0.1

# What a qpsam server does beyond samapi 0.7.1; clients read it from ``GET /sam/health/``.
FEATURES = (
    "quality-per-mask",  # each feature's quality is its own mask's (samapi shifts them by one)
    "pixel-corner-geometry",  # integer coordinates are pixel corners, holes and pieces kept
    "empty-masks-omitted",  # no feature for an empty mask (samapi sends an empty polygon)
    "embedding-cache",  # encoder output cached by image content, shared between requests
    "bearer-token",
    "token-path-prefix",  # /t/<token>/sam/ for clients that cannot send headers
)


class _QuietPolling(logging.Filter):
    """Drops access-log lines of the endpoints clients poll every 100 ms during a registration."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "/sam/progress/" not in message and "/sam/weights/cancel/" not in message


def _quiet_polling() -> None:
    # Added from create_app so that every uvicorn worker process (which builds its own app) gets it.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _QuietPolling) for f in access.filters):
        access.addFilter(_QuietPolling())


class _QuietUpgrades(logging.Filter):
    """Drops uvicorn's two warnings about upgrade offers it declines.

    Java's HttpClient (the QuPath extension) offers HTTP/2 with ``Connection: Upgrade, HTTP2-Settings`` and
    ``Upgrade: h2c`` on every plain-HTTP request; uvicorn answers over HTTP/1.1, as it should, but warned twice
    per request. This app has no WebSocket endpoint, so no upgrade is ever taken up and the warnings say nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("Unsupported upgrade request", "No supported WebSocket library detected"))


def _quiet_upgrades() -> None:
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietUpgrades) for f in errors.filters):
        errors.addFilter(_QuietUpgrades())


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": clip_detail(detail)}, status_code=status)


def _finite(values: Any, what: str) -> tuple[float, ...]:
    """Pixel coordinates as floats, or :class:`PromptError` when one is not a finite number (JSON readers take
    Infinity and NaN) or lies beyond :data:`MAX_COORDINATE`."""
    try:
        if any(isinstance(v, (bool, str)) for v in values):
            raise TypeError
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"{what} must hold numbers, got {clip(values)}") from None
    if not all(math.isfinite(v) for v in numbers):
        raise PromptError(f"{what} must hold finite numbers, got {clip(values)}")
    if not all(abs(v) <= MAX_COORDINATE for v in numbers):
        raise PromptError(f"{what} must lie within +-{MAX_COORDINATE:.0f} pixels (this server's limit), "
                          f"got {clip(values)}")
    return numbers


def _index(value: Any, what: str, low: int = 0) -> int:
    """A frame, plane or object index: an integer from ``low`` to :data:`MAX_INDEX` (a Java int in QuPath)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptError(f"{what} must be an integer, got {clip(value)}")
    if not low <= value <= MAX_INDEX:
        raise PromptError(f"{what} must be between {low} and {MAX_INDEX} (this server's limit), got {clip(value)}")
    return value


def _default_factory() -> tuple[EngineFactory, Callable[[int], Any]]:
    """The real engines (``qpsam.engines.load_engine``) and their shared embedding cache."""

    def factory(model_type: str, weights: str | None, device: str, cache: Any) -> Any:
        from ..engines import load_engine

        options: dict[str, Any] = {}
        if model_type == "sam3":
            # Each request brings its own threshold and is filtered here; the engine keeps everything above
            # SAM3_FLOOR so that lower request thresholds (the extension's default is 0.4) still see instances.
            options["confidence_threshold"] = SAM3_FLOOR
        return load_engine(model_type, weights, device=device, cache=cache, **options)

    def make_cache(max_bytes: int) -> Any:
        from ..engines.cache import EmbeddingCache

        return EmbeddingCache(max_bytes=max_bytes)

    return factory, make_cache


def _output_type(value: str) -> OutputType:
    """samapi's ``output_type`` labels, case-insensitively (its own default ``"Single Mask"`` included)."""
    text = (value or "").strip()
    for member in OutputType:
        if text.lower() in (member.label.lower(), member.value, member.extension_name.lower()):
            return member
    labels = ", ".join(repr(m.label) for m in OutputType)
    raise PromptError(f"output_type {clip(value)} is not one of {labels}")


def _xyxy(box: list[float], what: str) -> tuple[float, float, float, float]:
    if not isinstance(box, (list, tuple)):
        raise PromptError(f"{what} must be a list of 4 numbers, got {clip(box)}")
    if len(box) != 4:
        raise PromptError(f"{what} must have 4 numbers, got {len(box)}")
    x1, y1, x2, y2 = _finite(box, what)
    if x2 < x1 or y2 < y1:
        raise PromptError(f"{what} must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1, got {clip(box)}")
    return x1, y1, x2, y2


def _xywh_to_xyxy(box: list[float], what: str) -> tuple[float, float, float, float]:
    if not isinstance(box, (list, tuple)):
        raise PromptError(f"{what} must be a list of 4 numbers [x, y, w, h], got {clip(box)}")
    if len(box) != 4:
        raise PromptError(f"{what} must have 4 numbers [x, y, w, h], got {len(box)}")
    x, y, w, h = _finite(box, what)
    if w < 0 or h < 0:
        raise PromptError(f"{what} must have width and height >= 0, got {clip(box)}")
    return x, y, x + w, y + h


def _prompt(bbox: Any, point_coords: Any, point_labels: Any, what: str = "request") -> Prompt:
    """A :class:`Prompt` from samapi's fields; empty lists count as absent."""
    box = _xyxy(bbox, f"{what} bbox") if bbox else None
    coords = point_coords or []
    labels = point_labels if point_labels is not None else ([] if not coords else None)
    if labels is None:
        raise PromptError(f"{what} has point_coords but no point_labels (1 foreground, 0 background)")
    if not isinstance(coords, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise PromptError(f"{what} point_coords and point_labels must be lists, got {clip(coords)} and {clip(labels)}")
    if len(coords) != len(labels):
        raise PromptError(f"{what} has {len(coords)} point_coords but {len(labels)} point_labels")
    if len(coords) > MAX_PROMPT_POINTS:
        raise PromptError(f"{what} has {len(coords)} point_coords; this server's limit is {MAX_PROMPT_POINTS}")
    points = []
    for p in coords:
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise PromptError(f"{what} point_coords must be [x, y] pairs, got {clip(p)}")
        points.append(_finite(p, f"{what} point_coords"))
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer() for v in labels):
        raise PromptError(f"{what} point_labels must be integers (1 foreground, 0 background), got {clip(labels)}")
    if any(int(v) not in (0, 1) for v in labels):
        raise PromptError(f"{what} point_labels must be 0 (background) or 1 (foreground), got {clip(labels)}")
    try:
        return Prompt(box=box, points=tuple((x, y) for x, y in points), labels=tuple(int(v) for v in labels))
    except ModelError as exc:
        raise PromptError(f"{what}: {exc}") from None


def _plane(axes: str, frame: int, plane_position: int) -> dict[str, int]:
    if axes == "XYZ":
        return {"c": -1, "z": int(frame), "t": int(plane_position)}
    return {"c": -1, "z": int(plane_position), "t": int(frame)}


def create_app(
    settings: Settings | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    cache: Any = None,
) -> FastAPI:
    """The samapi-compatible application.

    ``engine_factory`` and ``cache`` replace the real engines (``qpsam.engines.load_engine``) and their
    embedding cache; by default both are built lazily from ``qpsam.engines``.
    """
    settings = settings or Settings.from_env()
    assert settings.home is not None
    _quiet_polling()
    _quiet_upgrades()
    from PIL import Image

    # Our own pixel limit answers 413 first; PIL's decompression-bomb check must not fire below it.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < settings.max_image_pixels:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if engine_factory is None:
        engine_factory, make_cache = _default_factory()
        if cache is None:
            if settings.cache_bytes == 0:
                cache = False  # engines take False as "no cache" (None would mean their process-wide one)
            else:
                cache = make_cache(settings.cache_bytes)
    shutdown = Shutdown()
    host = ModelHost(
        engine_factory, device=settings.device, max_models=settings.max_models, cache=cache, shutdown=shutdown
    )
    weights = WeightsService(settings.home, shutdown=shutdown)
    uploads = UploadStore(settings.home / "videos", max_frames=settings.max_upload_frames, ttl_s=settings.upload_ttl_s)
    sam3_state: dict[tuple[str, str | None], dict[str, Any]] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        shutdown.follow_signals()  # inside uvicorn's own handling: SIGTERM sets our flag, then uvicorn's
        try:
            yield
        finally:
            shutdown.set()

    app = FastAPI(title="qpsam server (samapi protocol)", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.shutdown = shutdown
    app.state.host = host
    app.state.weights = weights
    app.state.uploads = uploads

    # ------------------------------------------------------------------ errors -> JSON with the right status
    @app.exception_handler(ImageTooLarge)
    async def _too_large(_: Request, exc: ImageTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(ServerStopping)
    async def _stopping(_: Request, exc: ServerStopping) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer repeats every input in full: a 1 MB string gave a 1 MB answer.
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(ModelUnavailable)
    async def _unavailable(_: Request, exc: ModelUnavailable) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(CheckpointRejected)
    async def _rejected(_: Request, exc: CheckpointRejected) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(WeightsError)
    async def _weights_failed(_: Request, exc: WeightsError) -> JSONResponse:
        return _error(502 if "download" in str(exc) else 422, str(exc))

    @app.exception_handler(QpsamError)
    async def _bad_input(_: Request, exc: QpsamError) -> JSONResponse:
        # BadImage, BadUpload, PromptError, GeometryError and engine-side ModelError on the request's values.
        return _error(422, str(exc))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, f"internal server error: {type(exc).__name__}: {exc}")

    def route(method: str, path: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``path`` and its slash-less twin (the extension posts to the URL as configured)."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            app.add_api_route(path, fn, methods=[method], **kw)
            if path.endswith("/") and len(path) > 1:
                app.add_api_route(path.rstrip("/"), fn, methods=[method], include_in_schema=False, **kw)
            return fn

        return deco

    def decode(b64: str, field: str = "b64img") -> np.ndarray:
        return decode_b64_image(b64, field=field, max_pixels=settings.max_image_pixels)

    def engine_for(model_type: str, checkpoint_url: str | None) -> Any:
        return host.engine(model_type, weights.resolve(model_type, checkpoint_url))

    # ------------------------------------------------------------------ version, health
    @route("GET", "/sam/version/", response_class=PlainTextResponse)
    def version() -> str:
        return f"{PROTOCOL_VERSION}+qpsam.{__version__}"

    @route("GET", "/health")
    @route("GET", "/sam/health/")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "server": "qpsam",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "features": list(FEATURES),
            "token_required": settings.token is not None,
        }

    # ------------------------------------------------------------------ weights
    @route("GET", "/sam/weights/")
    def list_weights(type: Optional[ModelType] = Query(default=None)) -> list[dict[str, str]]:  # noqa: A002
        return weights.list(type)

    @route("POST", "/sam/weights/", response_class=PlainTextResponse)
    def register_weights(body: WeightsBody) -> str:
        return weights.register(body.type, body.name, body.url)

    @route("GET", "/sam/weights/cancel/", response_class=PlainTextResponse)
    def cancel_registration() -> str:
        weights.cancel()
        return "Cancel signal sent"

    @route("GET", "/sam/progress/")
    def progress() -> dict[str, Any]:
        return weights.progress()

    # ------------------------------------------------------------------ prompts (SAM1 family, SAM2)
    @route("POST", "/sam/")
    def predict(body: SAMBody) -> JSONResponse:
        if body.type == "sam3":
            raise PromptError("type sam3 takes text and XYWH boxes: send it to /sam/sam3/")
        prompt = _prompt(body.bbox, body.point_coords, body.point_labels)
        if body.b64mask:
            log.info("b64mask ignored: a mask image cannot stand in for SAM's low-resolution logits")
        image = decode(body.b64img)
        engine = engine_for(body.type, body.checkpoint_url)
        output = OutputType.MULTI_ALL if body.multimask_output else OutputType.SINGLE

        def run() -> list[Mask]:
            engine.set_image(image)
            return engine.predict([prompt], output)[0]

        return JSONResponse(mask_features(host.run(run), body.type))

    # ------------------------------------------------------------------ automask
    @route("POST", "/sam/automask/")
    def automask(body: AutoMaskBody) -> JSONResponse:
        if body.type == "sam3":
            raise PromptError("automask does not run with sam3; use a SAM1 (vit_*) or SAM2 (sam2_*) type")
        names = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                 "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
                 "crop_n_points_downscale_factor", "min_mask_region_area")
        # Bounded before anything else runs: crop_n_layers 50 once grew past 6 GB without answering.
        values = check_automask(
            {name: getattr(body, name) for name in names},
            max_decodings=settings.max_automask_points,
            max_crops=settings.max_automask_crops,
            max_region_area=settings.max_image_pixels,
        )
        try:
            params = AutomaskParams(
                **values, output=_output_type(body.output_type), include_image_edge=body.include_image_edge
            )
        except ModelError as exc:
            raise PromptError(str(exc)) from None
        image = decode(body.b64img)
        params = batch_for_memory(params, image.shape[0], image.shape[1], settings.automask_batch_bytes)
        engine = engine_for(body.type, body.checkpoint_url)
        masks = host.run(lambda: engine.automask(image, params, progress=host.check))
        return JSONResponse(mask_features(masks, body.type))

    # ------------------------------------------------------------------ SAM3 (text + exemplar boxes), stateful
    @route("POST", "/sam/sam3/")
    def sam3(body: SAM3Body) -> JSONResponse:
        if body.type != "sam3":
            raise PromptError(f"/sam/sam3/ needs type sam3, got {body.type}")
        if not 0.0 <= body.confidence_threshold <= 1.0:
            raise PromptError(f"confidence_threshold must be in [0, 1], got {body.confidence_threshold}")
        if len(body.positive_bboxes or []) + len(body.negative_bboxes or []) > MAX_BOXES:
            raise PromptError(f"sam3 takes at most {MAX_BOXES} boxes (this server's limit)")
        positives = [_xywh_to_xyxy(b, "positive_bboxes entry") for b in body.positive_bboxes or []]
        negatives = [_xywh_to_xyxy(b, "negative_bboxes entry") for b in body.negative_bboxes or []]
        image = decode(body.b64img)
        engine = engine_for("sam3", body.checkpoint_url)
        if not isinstance(engine, ConceptEngine):
            raise ModelUnavailable("SAM3 is not available on this server: its engine cannot take text prompts")
        segment = engine.segment
        key = ("sam3", body.checkpoint_url)

        def run() -> list[Mask]:
            state = sam3_state.setdefault(key, {"positive": [], "negative": []})
            if body.reset_prompts:
                state["positive"], state["negative"] = [], []
            # Boxes accumulate across requests until reset_prompts (samapi's contract); the text is replaced.
            if len(state["positive"]) + len(state["negative"]) + len(positives) + len(negatives) > MAX_BOXES:
                raise PromptError(f"sam3 keeps at most {MAX_BOXES} boxes (this server's limit); "
                                  "send reset_prompts to start again")
            state["positive"] = state["positive"] + positives
            state["negative"] = state["negative"] + negatives
            if not (body.text_prompt or state["positive"] or state["negative"]):
                raise PromptError("sam3 needs text_prompt or at least one box (none given, none kept)")
            engine.set_image(image)
            found = segment(body.text_prompt or None, list(state["positive"]), list(state["negative"]))
            return [m for m in found if m.score > body.confidence_threshold]

        return JSONResponse(mask_features(host.run(run), "sam3"))

    # ------------------------------------------------------------------ uploads and video
    @route("POST", "/sam/upload/")
    async def upload(dirname: str = Form(...), file: UploadFile = File(...)) -> dict[str, str]:
        data = await file.read()
        uploads.add(dirname, file.filename or "", data)
        return {"filename": file.filename or ""}

    def frames_of(body: VideoBody) -> list[np.ndarray]:
        if body.dirname:
            raw = uploads.frames(body.dirname)
            return [
                decode_image_bytes(r, field=f"frame {i} of {clip(body.dirname)}", max_pixels=settings.max_image_pixels)
                for i, r in enumerate(raw)
            ]
        if body.b64imgs:
            if len(body.b64imgs) > settings.max_upload_frames:
                raise PromptError(f"b64imgs has {len(body.b64imgs)} frames; this server's limit is "
                                  f"{settings.max_upload_frames}")
            return [decode(b, f"b64imgs[{i}]") for i, b in enumerate(body.b64imgs)]
        raise PromptError("a video request needs dirname (frames uploaded to /sam/upload/) or b64imgs")

    def check_video(body: VideoBody) -> None:
        if body.axes not in ("XYZ", "XYT"):
            raise PromptError(f"axes must be 'XYZ' or 'XYT', got {clip(body.axes)}")
        if not body.objs:
            raise PromptError("a video request needs objs: {frame index: [prompt objects]}")
        if body.max_frame_num_to_track is not None:
            _index(body.max_frame_num_to_track, "max_frame_num_to_track", low=1)
        if body.start_frame_idx is not None:
            _index(body.start_frame_idx, "start_frame_idx")
        _index(body.plane_position, "plane_position")
        for frame in body.objs:
            _index(frame, "objs frame index")
        count = sum(len(objs) for objs in body.objs.values())
        if count > MAX_VIDEO_OBJECTS:
            raise PromptError(f"objs holds {count} prompt objects; this server's limit is {MAX_VIDEO_OBJECTS}")

    def check_frames(body: VideoBody, frames: list[np.ndarray], prompted: Any) -> None:
        bad = [f for f in prompted if not 0 <= f < len(frames)]
        if bad:
            raise PromptError(f"objs name frame(s) {clip(bad)} outside the {len(frames)} frames sent")
        if body.start_frame_idx is not None and body.start_frame_idx >= len(frames):
            raise PromptError(f"start_frame_idx {body.start_frame_idx} is outside the {len(frames)} frames sent")

    def video_features(body: VideoBody, model_type: str, result: dict[int, dict[int, Any]]) -> list[dict]:
        out: list[dict[str, Any]] = []
        for frame in sorted(result):
            objects = result[frame]
            ids = sorted(objects)
            masks = [Mask(np.asarray(getattr(objects[i], "mask", objects[i])) > 0, 0.0) for i in ids]
            plane = _plane(body.axes, frame, body.plane_position)
            out.extend(mask_features(masks, model_type, with_quality=False, object_ids=ids, plane=plane))
        return out

    @route("POST", "/sam/video/")
    def video(body: VideoBody) -> JSONResponse:
        try:
            if body.type not in SAM2_TYPES:
                raise PromptError(f"/sam/video/ needs a SAM2 type ({', '.join(SAM2_TYPES)}), got {body.type}")
            check_video(body)
            prompts: dict[int, list[Prompt]] = {}
            for frame, objs in (body.objs or {}).items():
                by_id: dict[int, Prompt] = {}
                for j, obj in enumerate(objs):
                    what = f"objs[{frame}][{j}]"
                    _index(obj.get("obj_id"), f"{what} obj_id", low=-MAX_INDEX)
                    p = _prompt(obj.get("bbox"), obj.get("point_coords"), obj.get("point_labels"), what)
                    # A later prompt for the same object on the same frame replaces the earlier one (as in samapi).
                    by_id[obj["obj_id"]] = Prompt(box=p.box, points=p.points, labels=p.labels, key=obj["obj_id"])
                prompts[int(frame)] = list(by_id.values())
            frames = frames_of(body)
            check_frames(body, frames, prompts)
            engine = engine_for(body.type, body.checkpoint_url)
            if not isinstance(engine, VideoEngine):
                raise ModelUnavailable(f"the {body.type} engine of this server cannot propagate through a video")
            propagate = engine.propagate
            result = host.run(
                lambda: propagate(
                    frames,
                    prompts,
                    start_frame=body.start_frame_idx,
                    max_frames=body.max_frame_num_to_track,
                    reverse=body.reverse,
                    progress=host.check,
                )
            )
            return JSONResponse(video_features(body, body.type, result))
        finally:
            if body.dirname:
                uploads.discard(body.dirname)

    @route("POST", "/sam/sam3video/")
    def sam3video(body: VideoBody) -> JSONResponse:
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
                            "obj_id": _index(obj.get("obj_id", j), f"{what} obj_id", low=-MAX_INDEX),
                            "text": text,
                            "boxes": [_xywh_to_xyxy(b, f"{what} box") for b in boxes],
                            "labels": [int(v) for v in labels],
                        }
                    )
            engine = engine_for("sam3", body.checkpoint_url)
            if not isinstance(engine, ConceptVideoEngine):
                raise ModelUnavailable("SAM3 video is not available on this server")
            propagate_concept = engine.propagate_concept
            frames = frames_of(body)
            check_frames(body, frames, prompts)
            result = host.run(
                lambda: propagate_concept(frames, prompts, start_frame=body.start_frame_idx, max_frames=body.max_frame_num_to_track)
            )
            return JSONResponse(video_features(body, "sam3", result))
        finally:
            if body.dirname:
                uploads.discard(body.dirname)

    app.add_middleware(Guard, token=settings.token, max_body_bytes=settings.max_body_bytes, shutdown=shutdown)
    return app
