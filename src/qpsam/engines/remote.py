"""A client for samapi-compatible servers (``qpsam serve`` or the original samapi) that works like an engine.

:class:`SamapiClient` speaks samapi's wire format (base64 PNG in, GeoJSON features out) and turns answers
back into the :class:`~qpsam.sam.Mask` values a local engine returns, so jobs run the same way on a
GPU box as on the laptop::

    client = SamapiClient("http://gpu-box:8000/sam/", token="...", model_type="vit_t")
    client.set_image(rgb)
    masks = client.predict([Prompt(box=(10, 10, 60, 60))], OutputType.MULTI_BEST)

It asks ``GET <base>health/`` once what the server is; only a qpsam server advertises extras there. With
the original samapi it undoes samapi's quality shift (each feature carries the previous mask's score) and
reads its pixel-centre polygons accordingly.
"""

from __future__ import annotations

import base64
import io
import json
import ssl
import threading
import time
import uuid
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import ServerError
from ..sam import DEFAULT_MODEL, AutomaskParams, Mask, OutputType, Prompt, select_masks, to_rgb8
from ..types import Progress
from .base import video_objects

__all__ = ["SamapiClient", "normalise_url", "features_to_masks"]



def normalise_url(url: str) -> str:
    """The ``/sam/`` base URL: a trailing slash is added, and a bare host gets ``/sam/``."""
    text = (url or "").strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServerError(f"server URL {url!r} is not an http(s) URL")
    path = parts.path or "/"
    if path == "/":
        path = "/sam/"
    if not path.endswith("/"):
        path += "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _weights_url(weights: str | None) -> str | None:
    """Catalog names (``vit_b_lm``...) become their URLs, which every samapi server understands."""
    if not weights:
        return None
    from .weights import CATALOG

    entry = CATALOG.get(str(weights))
    return entry.url if entry is not None else str(weights)


def _rasterise(geometry: Any, shape: tuple[int, int], pixel_corner: bool) -> np.ndarray:
    """Pixels of ``shape`` (rows, cols) whose centres lie inside ``geometry``.

    With pixel-corner geometry (qpsam) a pixel's centre is at (col + 0.5, row + 0.5); samapi's contours run
    through pixel centres, so there a pixel is at (col, row). Neither convention puts a centre on a boundary.
    """
    import shapely

    mask = np.zeros(shape, dtype=bool)
    if geometry is None or geometry.is_empty:
        return mask
    offset = 0.5 if pixel_corner else 0.0
    minx, miny, maxx, maxy = geometry.bounds
    c0, c1 = max(0, int(np.floor(minx - offset))), min(shape[1], int(np.ceil(maxx - offset)) + 1)
    r0, r1 = max(0, int(np.floor(miny - offset))), min(shape[0], int(np.ceil(maxy - offset)) + 1)
    if c1 <= c0 or r1 <= r0:
        return mask
    cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
    shapely.prepare(geometry)
    inside = shapely.contains_xy(geometry, cols + offset, rows + offset)
    mask[r0:r1, c0:c1] = inside
    return mask


def features_to_masks(
    features: Any,
    shape: tuple[int, int],
    *,
    pixel_corner: bool,
    unshift_quality: bool = False,
    prompt_index: int = -1,
    where: str = "server answer",
) -> list[Mask]:
    """Masks from a samapi feature list (or FeatureCollection), in feature order."""
    from shapely.geometry import shape as to_shape

    if isinstance(features, dict) and "features" in features:
        features = features["features"]
    if isinstance(features, dict) and features.get("type") == "Feature":
        features = [features]
    if not isinstance(features, list):
        raise ServerError(f"{where}: expected a list of GeoJSON features, got {type(features).__name__}")
    geometries: list[Any] = []
    scores: list[float] = []
    for i, f in enumerate(features):
        if not isinstance(f, dict) or not isinstance(f.get("geometry"), dict):
            raise ServerError(f"{where}: feature {i} has no geometry")
        geom = dict(f["geometry"])
        geom.pop("plane", None)
        try:
            geometries.append(to_shape(geom) if geom.get("coordinates") else None)
        except Exception as exc:  # noqa: BLE001 - shapely raises several kinds for bad GeoJSON
            raise ServerError(f"{where}: feature {i} has unreadable geometry: {exc}") from None
        props = f.get("properties") or {}
        quality = props.get("quality")
        scores.append(float(quality) if isinstance(quality, (int, float)) else float("nan"))
    if unshift_quality and len(scores) > 1:
        # samapi gives mask i the score of mask i-1 (wrapping): mask j's own score sits on feature j+1.
        scores = [scores[(j + 1) % len(scores)] for j in range(len(scores))]
    return [
        Mask(_rasterise(g, shape, pixel_corner), s, prompt_index=prompt_index) for g, s in zip(geometries, scores)
    ]


class SamapiClient:
    """An engine that runs on a samapi-compatible server.

    ``url`` is the ``/sam/`` base (``http://host:8000/sam/``); ``token`` is sent as a bearer token; ``verify``
    is True, False or a CA bundle path; ``timeout`` in seconds for each request; ``transport`` an httpx
    transport (tests, proxies). Connection failures are retried ``retries`` times with a growing pause;
    everything else raises :class:`~qpsam.errors.ServerError` with what the server said.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        timeout: float = 120.0,
        transport: Any = None,
        *,
        model_type: str = DEFAULT_MODEL,
        weights: str | None = None,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        import httpx

        self.url = normalise_url(url)
        self.model_type = model_type
        self.weights = _weights_url(weights)
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        headers = {"accept": "application/json", "user-agent": "qpsam-samapi-client"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(
            base_url=self.url, headers=headers, verify=verify, timeout=self.timeout, transport=transport
        )
        self._info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()
        self._image: np.ndarray | None = None
        self._b64: str | None = None

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "SamapiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SamapiClient({self.url!r}, model_type={self.model_type!r})"

    def with_model(self, model_type: str, weights: str | None = None) -> "SamapiClient":
        """A client for another model on the same server, sharing the connection pool."""
        other = object.__new__(SamapiClient)
        other.__dict__.update(self.__dict__)
        other.model_type, other.weights = model_type, _weights_url(weights)
        other._image, other._b64 = None, None
        return other

    def _request(self, method: str, path: str, *, expect: str = "json", **kw: Any) -> Any:
        import httpx

        where = f"{method} {self.url}{path}"
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kw)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.retries:
                    raise ServerError(
                        f"cannot connect to the server at {self.url} ({type(exc).__name__}: {exc}); "
                        f"is it running and is the URL right? (tried {attempt + 1} times)"
                    ) from None
                time.sleep(self.backoff * (2**attempt))
                attempt += 1
            except httpx.TimeoutException:
                raise ServerError(f"{where}: no answer within {self.timeout:g} s (timeout)") from None
            except httpx.HTTPError as exc:
                raise ServerError(f"{where}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            detail = self._detail(response)
            if response.status_code == 401:
                raise ServerError(f"{where}: the server wants a valid token (401): {detail}", 401)
            raise ServerError(f"{where}: the server answered {response.status_code}: {detail}", response.status_code)
        if expect == "text":
            return response.text
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            snippet = response.text[:200].replace("\n", " ")
            raise ServerError(f"{where}: the server answered 200 but not with JSON: {snippet!r}", 200) from None

    @staticmethod
    def _detail(response: Any) -> str:
        try:
            data = response.json()
        except ValueError:
            return (response.text or response.reason_phrase or "")[:300].strip()
        if isinstance(data, dict) and "detail" in data:
            detail = data["detail"]
            if isinstance(detail, list):  # FastAPI validation errors
                return "; ".join(
                    f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                    for d in detail
                )
            return str(detail)
        return str(data)[:300]

    # ------------------------------------------------------------------ what the server is
    def info(self) -> dict[str, Any]:
        """``GET health/`` of a qpsam server, or ``{"server": "samapi"}`` for servers without it (asked once)."""
        with self._info_lock:
            if self._info is None:
                try:
                    data = self._request("GET", "health/")
                except ServerError as exc:
                    if exc.status != 404:
                        raise
                    data = None
                if not isinstance(data, dict) or data.get("server") != "qpsam":
                    data = {"server": "samapi", "features": []}
                self._info = data
            return self._info

    def has(self, feature: str) -> bool:
        """Whether the server advertises ``feature`` (plain samapi advertises nothing)."""
        return feature in (self.info().get("features") or [])

    def version(self) -> str:
        return str(self._request("GET", "version/", expect="text")).strip()

    # ------------------------------------------------------------------ weights
    def list_weights(self, model_type: str | None = None) -> list[dict[str, str]]:
        params = {"type": model_type} if model_type else None
        data = self._request("GET", "weights/", params=params)
        if not isinstance(data, list):
            raise ServerError(f"GET {self.url}weights/: expected a list, got {type(data).__name__}", 200)
        return data

    def register_weights(self, model_type: str, name: str, url: str, timeout: float | None = None) -> str:
        """Ask the server to download and register weights; returns its message (blocks until done)."""
        body = {"type": model_type, "name": name, "url": url}
        return str(self._request("POST", "weights/", json=body, expect="text", timeout=timeout or 3600.0))

    def cancel_registration(self) -> str:
        return str(self._request("GET", "weights/cancel/", expect="text"))

    def progress(self) -> dict[str, Any]:
        return dict(self._request("GET", "progress/"))

    # ------------------------------------------------------------------ the engine interface
    def set_image(self, image: np.ndarray) -> None:
        """Keep the image (as RGB) and its PNG; every request sends the same string, so servers cache it."""
        from PIL import Image

        rgb = to_rgb8(image)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        self._image = rgb
        self._b64 = base64.b64encode(buf.getvalue()).decode("ascii")

    @property
    def image_shape(self) -> tuple[int, int] | None:
        return None if self._image is None else (self._image.shape[0], self._image.shape[1])

    def _body_common(self) -> dict[str, Any]:
        if self._b64 is None:
            raise ServerError("no image set: call set_image() before predict()")
        body: dict[str, Any] = {"type": self.model_type, "b64img": self._b64}
        if self.weights:
            body["checkpoint_url"] = self.weights
        return body

    def _masks(self, features: Any, *, prompt_index: int, where: str, per_mask_quality: bool | None = None) -> list[Mask]:
        assert self._image is not None
        qpsam = self.info().get("server") == "qpsam"
        fixed = self.has("quality-per-mask") if per_mask_quality is None else per_mask_quality
        return features_to_masks(
            features,
            self._image.shape[:2],
            pixel_corner=qpsam and self.has("pixel-corner-geometry"),
            unshift_quality=not fixed,
            prompt_index=prompt_index,
            where=where,
        )

    def predict(self, prompts: Sequence[Prompt], output: OutputType = OutputType.SINGLE) -> list[list[Mask]]:
        """One request per prompt (samapi takes one box or one set of points at a time)."""
        output = OutputType.parse(output)
        results: list[list[Mask]] = []
        for i, prompt in enumerate(prompts):
            body = self._body_common()
            if prompt.box is not None:
                body["bbox"] = [int(round(v)) for v in prompt.box]
            if prompt.points:
                body["point_coords"] = [[int(np.floor(x)), int(np.floor(y))] for x, y in prompt.points]
                body["point_labels"] = list(prompt.labels)
            body["multimask_output"] = output.multimask
            features = self._request("POST", "", json=body)
            masks = self._masks(features, prompt_index=i, where=f"POST {self.url} (prompt {i})")
            if not output.multimask:
                masks = masks[:1]
            results.append(select_masks([m for m in masks if m.area > 0] or masks[:1], output))
        return results

    def automask(
        self, image: np.ndarray, params: AutomaskParams = AutomaskParams(), progress: Progress | None = None
    ) -> list[Mask]:
        """``POST automask/`` with every parameter; masks in the server's order."""
        self.set_image(image)
        body = self._body_common()
        body.update(
            points_per_side=int(params.points_per_side),
            points_per_batch=int(params.points_per_batch),
            pred_iou_thresh=float(params.pred_iou_thresh),
            stability_score_thresh=float(params.stability_score_thresh),
            stability_score_offset=float(params.stability_score_offset),
            box_nms_thresh=float(params.box_nms_thresh),
            crop_n_layers=int(params.crop_n_layers),
            crop_nms_thresh=float(params.crop_nms_thresh),
            crop_overlap_ratio=float(params.crop_overlap_ratio),
            crop_n_points_downscale_factor=int(params.crop_n_points_downscale_factor),
            min_mask_region_area=int(params.min_mask_region_area),
            output_type=params.output.label,
            include_image_edge=bool(params.include_image_edge),
        )
        if progress:
            progress(0, 1)
        features = self._request("POST", "automask/", json=body)
        # automask qualities are per mask on both servers (samapi only shifts object_idx there).
        masks = self._masks(features, prompt_index=-1, where=f"POST {self.url}automask/", per_mask_quality=True)
        if progress:
            progress(1, 1)
        return [m for m in masks if m.area > 0]

    def segment(
        self,
        text: str | None = None,
        positive_boxes: Sequence[Sequence[float]] = (),
        negative_boxes: Sequence[Sequence[float]] = (),
        *,
        threshold: float = 0.5,
    ) -> list[Mask]:
        """SAM3 on the current image: every instance of ``text`` and/or the XYXY exemplar boxes.

        Each call starts from fresh prompts (``reset_prompts``), as a local SAM3 engine does.
        """

        def xywh(b: Sequence[float]) -> list[int]:
            x1, y1, x2, y2 = (float(v) for v in b)
            return [int(x1), int(y1), int(round(x2 - x1)), int(round(y2 - y1))]

        body = self._body_common()
        body["type"] = "sam3"
        body.update(
            text_prompt=text or "",
            positive_bboxes=[xywh(b) for b in positive_boxes],
            negative_bboxes=[xywh(b) for b in negative_boxes],
            reset_prompts=True,
            confidence_threshold=float(threshold),
        )
        features = self._request("POST", "sam3/", json=body)
        return [m for m in self._masks(features, prompt_index=-1, where=f"POST {self.url}sam3/") if m.area > 0]

    def propagate(
        self,
        frames: Sequence[np.ndarray],
        prompts: Mapping[int, Sequence[Prompt]],
        *,
        start_frame: int | None = None,
        max_frames: int | None = None,
        reverse: bool = True,
        progress: Progress | None = None,
    ) -> dict[int, dict[Any, Mask]]:
        """SAM2 video on the server: upload the frames, send prompts per frame, get ``{frame: {key: Mask}}``.

        A prompt's ``key`` names its object (same key on several frames = one object), as with a local engine.
        ``reverse`` (also track backwards from the prompted frames) reaches qpsam servers; samapi tracks forward
        from ``start_frame`` only.
        """
        from PIL import Image

        if not frames:
            raise ServerError("propagate needs at least one frame")
        if not prompts:
            raise ServerError("propagate needs prompts on at least one frame")
        rgb = [to_rgb8(f) for f in frames]
        lossless = self.info().get("server") == "qpsam"
        dirname = uuid.uuid4().hex
        digits = len(str(len(rgb) - 1))
        for i, frame in enumerate(rgb):
            buf = io.BytesIO()
            # samapi's SAM2 loader reads only JPEG frames; a qpsam server takes PNG (no JPEG artefacts).
            Image.fromarray(frame).save(buf, format="PNG" if lossless else "JPEG", quality=95)
            name = f"{i:0{digits}d}.{'png' if lossless else 'jpg'}"
            files = {"file": (name, buf.getvalue(), "image/png" if lossless else "image/jpeg")}
            self._request("POST", "upload/", data={"dirname": dirname}, files=files)
            if progress:
                progress(i + 1, len(rgb) + 1)
        plan, names = video_objects(prompts)
        objs: dict[str, list[dict[str, Any]]] = {}
        for frame_idx, obj_id, prompt in plan:
            obj: dict[str, Any] = {"obj_id": obj_id}
            if prompt.box is not None:
                obj["bbox"] = [int(round(v)) for v in prompt.box]
            if prompt.points:
                obj["point_coords"] = [[int(np.floor(x)), int(np.floor(y))] for x, y in prompt.points]
                obj["point_labels"] = list(prompt.labels)
            objs.setdefault(str(frame_idx), []).append(obj)
        body: dict[str, Any] = {"type": self.model_type, "dirname": dirname, "axes": "XYT", "plane_position": 0, "objs": objs}
        if start_frame is not None:
            body["start_frame_idx"] = int(start_frame)
        if max_frames is not None:
            body["max_frame_num_to_track"] = int(max_frames)
        if self.weights:
            body["checkpoint_url"] = self.weights
        if lossless:
            body["reverse"] = bool(reverse)  # a qpsam extension; samapi would ignore the key
        features = self._request("POST", "video/", json=body)
        return self._video_masks(features, rgb[0].shape[:2], names, lossless, progress, len(rgb))

    def _video_masks(
        self, features: Any, shape: tuple[int, int], keys: dict[int, Any], lossless: bool,
        progress: Progress | None, n: int,
    ) -> dict[int, dict[Any, Mask]]:
        from shapely.geometry import shape as to_shape

        if not isinstance(features, list):
            raise ServerError(f"POST {self.url}video/: expected a list of features, got {type(features).__name__}",
                              200)
        pixel_corner = lossless and self.has("pixel-corner-geometry")
        out: dict[int, dict[Any, Mask]] = {}
        for i, f in enumerate(features):
            try:
                geom = dict(f["geometry"])
                plane = geom.pop("plane", None) or {}
                frame = int(plane.get("t", 0))
                obj_id = int(f["properties"]["object_idx"])
                mask = _rasterise(to_shape(geom), shape, pixel_corner)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ServerError(f"POST {self.url}video/: feature {i} is malformed: {exc}", 200) from None
            out.setdefault(frame, {})[keys.get(obj_id, obj_id)] = Mask(mask, float("nan"))
        if progress:
            progress(n + 1, n + 1)
        return out
