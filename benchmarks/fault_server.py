"""Fault campaigns against ``qpsam serve``: bad bodies, huge parameters, non-finite numbers, huge strings and
SIGTERM in the middle of requests. Loopback only, bounded (every request has a timeout, every campaign a fixed
list of inputs).

Starts ``qpsam serve --device cpu`` in a subprocess with the real MobileSAM (vit_t), sends each input, and
classifies the answer:

* clean error: a 4xx, or a 503 (a model this machine cannot load: SAM2/SAM3 here; or the server stopping),
  with a JSON ``detail`` and at most 2 KB of body; for the inputs that are valid after all (an unknown key
  the server ignores) the right 200. Validation runs before any model loads, so a 503 never hides a bad input;
* traceback: a 5xx other than 503, a dropped connection, the process dying, or a new ``Traceback`` in its log;
* hang: no answer within the timeout, or a process still alive 15 s after SIGTERM;
* silent wrong result: 200 for an input that must be refused, or an error answer that echoes more than 2 KB;
* objects lost: after each campaign (and after each restart) a control prompt must give the same features
  as at the start, and a registration stopped by SIGTERM must leave no weights behind.

    python benchmarks/fault_server.py [--quick]

Prints a table (Markdown) and exits 1 when any of the last four columns is not 0.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fault_table import Row, print_table, total

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

ECHO_LIMIT = 2048
TIMEOUT_S = 30.0
STOP_LIMIT_S = 15.0
NOTES = 8  # notes kept per campaign


# ----------------------------------------------------------------------------- inputs
def png_b64(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def control_image() -> tuple[str, list[int]]:
    """A 128x128 crop of the bundled nuclei image and the box of its largest nucleus."""
    import tifffile

    from qpsam.sam import to_rgb8

    img = tifffile.imread(REPO / "examples/data/nuclei.tif")[:128, :128]
    lab = tifffile.imread(REPO / "examples/data/nuclei_mask.tif")[:128, :128]
    best = max((int((lab == v).sum()), int(v)) for v in np.unique(lab[lab > 0]))[1]
    rows, cols = np.nonzero(lab == best)
    return png_b64(to_rgb8(img)), [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


@dataclass
class Case:
    """One request: ``body`` is JSON (dict), raw bytes, or multipart ``files``; ``valid`` inputs must answer 200."""

    name: str
    endpoint: str
    body: Any = None
    files: dict[str, Any] | None = None
    content_type: str = "application/json"
    method: str = "POST"
    valid: bool = False


def raw_with(body: dict[str, Any], path: list[Any], literal: str) -> bytes:
    """``body`` as JSON with the value at ``path`` replaced by a bare literal (Infinity and NaN are not JSON)."""
    body = json.loads(json.dumps(body))
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "__LITERAL__"
    return json.dumps(body).replace('"__LITERAL__"', literal).encode()


def bad_bodies(img: str, box: list[int]) -> list[Case]:
    good = {"type": "vit_t", "b64img": img, "bbox": box}
    tiny_png = base64.b64decode(img)
    bomb = bytearray(tiny_png[:33])
    bomb[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")  # IHDR claims 100000 x 100000
    cases = []
    for ep in ("", "automask/", "sam3/", "video/", "sam3video/", "weights/"):
        cases += [
            Case(f"{ep or '/'} empty body", ep, b""),
            Case(f"{ep or '/'} not JSON", ep, b"this is not json"),
            Case(f"{ep or '/'} truncated JSON", ep, b'{"type": "vit_t", "b64img": "'),
            Case(f"{ep or '/'} JSON array", ep, b"[1, 2, 3]"),
            Case(f"{ep or '/'} JSON null", ep, b"null"),
            Case(f"{ep or '/'} invalid UTF-8", ep, b'{"type": "\xff\xfe\xfd"}'),
            Case(f"{ep or '/'} nested 100000 deep", ep, b"[" * 100000 + b"]" * 100000),
            Case(f"{ep or '/'} 5000-digit number", ep, b'{"type": "vit_t", "points_per_side": ' + b"9" * 5000 + b"}"),
        ]
    cases += [
        Case("text/plain body", "", json.dumps(good).encode(), content_type="text/plain"),
        Case("multipart to /sam/", "", files={"b64img": (None, img)}),
        Case("missing b64img", "", {"type": "vit_t", "bbox": box}),
        Case("b64img not base64", "", {**good, "b64img": "@@@@"}),
        Case("b64img empty", "", {**good, "b64img": ""}),
        Case("b64img random bytes", "", {**good, "b64img": base64.b64encode(os.urandom(4096)).decode()}),
        Case("b64img truncated PNG", "", {**good, "b64img": base64.b64encode(tiny_png[: len(tiny_png) // 2]).decode()}),
        Case("b64img PNG bomb header", "", {**good, "b64img": base64.b64encode(bytes(bomb)).decode()}),
        Case("b64img a number", "", {**good, "b64img": 12345}),
        Case("bbox a string", "", {**good, "bbox": "0,0,10,10"}),
        Case("bbox nested", "", {**good, "bbox": [[0, 0], [10, 10]]}),
        Case("bbox inverted", "", {**good, "bbox": [50, 50, 10, 10]}),
        Case("points without labels", "", {**good, "bbox": None, "point_coords": [[3, 4]]}),
        Case("points not pairs", "", {**good, "point_coords": [[1, 2, 3]], "point_labels": [1]}),
        Case("label 2", "", {**good, "point_coords": [[3, 4]], "point_labels": [2]}),
        Case("label a string", "", {**good, "point_coords": [[3, 4]], "point_labels": ["one"]}),
        Case("unknown type", "", {**good, "type": "vit_x"}),
        Case("path as checkpoint_url", "", {**good, "checkpoint_url": "/etc/passwd"}),
        Case("file URL as checkpoint_url", "", {**good, "checkpoint_url": "file:///etc/passwd"}),
        Case("sam3 on /sam/", "", {**good, "type": "sam3"}),
        Case("automask sam3", "automask/", {"type": "sam3", "b64img": img}),
        Case("automask output_type unknown", "automask/", {"type": "vit_t", "b64img": img, "output_type": "Biggest"}),
        Case("automask points_per_side 0", "automask/", {"type": "vit_t", "b64img": img, "points_per_side": 0}),
        Case("automask threshold -1", "automask/", {"type": "vit_t", "b64img": img, "pred_iou_thresh": -1}),
        Case("sam3 negative box", "sam3/", {"type": "sam3", "b64img": img, "positive_bboxes": [[4, 4, -3, 20]]}),
        Case("video objs a list", "video/", {"type": "sam2_t", "b64imgs": [img], "objs": [1, 2]}),
        Case("video objs key not int", "video/", {"type": "sam2_t", "b64imgs": [img], "objs": {"x": []}}),
        Case("video obj_id missing", "video/", {"type": "sam2_t", "b64imgs": [img], "objs": {"0": [{"bbox": box}]}}),
        Case("video frame outside", "video/", {"type": "sam2_t", "b64imgs": [img],
                                               "objs": {"7": [{"obj_id": 1, "bbox": box}]}}),
        Case("video dirname never uploaded", "video/", {"type": "sam2_t", "dirname": "nothing-here",
                                                        "objs": {"0": [{"obj_id": 1, "bbox": box}]}}),
        Case("video axes XYC", "video/", {"type": "sam2_t", "b64imgs": [img], "axes": "XYC",
                                          "objs": {"0": [{"obj_id": 1, "bbox": box}]}}),
        Case("video bbox a number", "video/", {"type": "sam2_t", "b64imgs": [img], "objs": {"0": [{"obj_id": 1,
                                                                                              "bbox": 5}]}}),
        Case("video point_coords a dict", "video/", {"type": "sam2_t", "b64imgs": [img],
                                                     "objs": {"0": [{"obj_id": 1, "point_coords": {"x": 1},
                                                                     "point_labels": [1]}]}}),
        Case("video obj_id a string", "video/", {"type": "sam2_t", "b64imgs": [img],
                                                 "objs": {"0": [{"obj_id": "one", "bbox": box}]}}),
        Case("video obj_id true", "video/", {"type": "sam2_t", "b64imgs": [img],
                                             "objs": {"0": [{"obj_id": True, "bbox": box}]}}),
        Case("sam3video obj_id a string", "sam3video/", {"type": "sam3", "b64imgs": [img],
                                                         "objs": {"0": [{"obj_id": "one", "text": "cell"}]}}),
        Case("sam3video box_labels strings", "sam3video/", {"type": "sam3", "b64imgs": [img], "objs": {"0": [
            {"obj_id": 1, "boxes_xywh": [[1, 1, 4, 4]], "box_labels": ["yes"]}]}}),
        Case("sam3video box a number", "sam3video/", {"type": "sam3", "b64imgs": [img],
                                                      "objs": {"0": [{"obj_id": 1, "boxes_xywh": [5]}]}}),
        Case("sam3video text a list", "sam3video/", {"type": "sam3", "b64imgs": [img],
                                                     "objs": {"0": [{"obj_id": 1, "text": ["a"]}]}}),
        Case("sam3video box of 3", "sam3video/", {"type": "sam3", "b64imgs": [img],
                                                  "objs": {"0": [{"obj_id": 1, "boxes_xywh": [[1, 2, 3]]}]}}),
        Case("upload without file", "upload/", files={"dirname": (None, "d", "text/plain")}),
        Case("upload without dirname", "upload/", files={"file": ("0.jpg", b"x", "image/jpeg")}),
        Case("upload traversal name", "upload/", files={"dirname": (None, "d", "text/plain"),
                                                        "file": ("../../../evil.jpg", tiny_png, "image/jpeg")}),
        Case("upload empty file", "upload/", files={"dirname": (None, "d", "text/plain"),
                                                    "file": ("0.jpg", b"", "image/jpeg")}),
        Case("weights ftp URL", "weights/", {"type": "vit_t", "name": "w", "url": "ftp://127.0.0.1/w.pt"}),
        Case("weights no name", "weights/", {"type": "vit_t", "url": "http://127.0.0.1:9/w.pt"}),
        Case("GET on automask", "automask/", method="GET"),
        Case("unknown path", "nothing/", {"type": "vit_t"}),
    ]
    return cases


def huge_parameters(img: str, box: list[int]) -> list[Case]:
    auto = {"type": "vit_t", "b64img": img}
    cases = []
    for name in ("points_per_side", "points_per_batch", "crop_n_layers", "crop_n_points_downscale_factor",
                 "min_mask_region_area"):
        for value in (10**9, 10**40, -(10**9)):
            cases.append(Case(f"automask {name} {value:.0e}", "automask/", {**auto, name: value}))
    for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh",
                 "crop_nms_thresh", "crop_overlap_ratio"):
        cases.append(Case(f"automask {name} 1e300", "automask/", {**auto, name: 1e300}))
    cases += [
        Case("automask points_per_side 100000", "automask/", {**auto, "points_per_side": 100000}),
        Case("automask points_per_side 10000", "automask/", {**auto, "points_per_side": 10000}),
        Case("automask crop_n_layers 50", "automask/", {**auto, "points_per_side": 2, "crop_n_layers": 50}),
        Case("automask crop_n_layers 10", "automask/", {**auto, "points_per_side": 2, "crop_n_layers": 10}),
        Case("automask 64 x 6 layers", "automask/", {**auto, "points_per_side": 64, "crop_n_layers": 6}),
        Case("bbox 1e308", "", {"type": "vit_t", "b64img": img, "bbox": [0, 0, 1e308, 1e308]}),
        Case("point 1e308", "", {"type": "vit_t", "b64img": img, "point_coords": [[1e308, 1e308]], "point_labels": [1]}),
        Case("bbox -1e308", "", {"type": "vit_t", "b64img": img, "bbox": [-1e308, -1e308, 10, 10]}),
        Case("100000 points", "", {"type": "vit_t", "b64img": img, "point_coords": [[5, 5]] * 100000,
                                   "point_labels": [1] * 100000}),
        Case("sam3 confidence 1e9", "sam3/", {"type": "sam3", "b64img": img, "text_prompt": "x",
                                              "confidence_threshold": 1e9}),
        Case("sam3 100000 boxes", "sam3/", {"type": "sam3", "b64img": img, "positive_bboxes": [[1, 1, 4, 4]] * 100000}),
        Case("video 100000 objects", "video/", {"type": "sam2_t", "b64imgs": [img],
                                                "objs": {"0": [{"obj_id": i, "bbox": box} for i in range(100000)]}}),
        Case("video plane_position 1e30", "video/", {"type": "sam2_t", "b64imgs": [img], "plane_position": 10**30,
                                                     "objs": {"0": [{"obj_id": 1, "bbox": box}]}}),
        Case("video start_frame_idx 1e30", "video/", {"type": "sam2_t", "b64imgs": [img], "start_frame_idx": 10**30,
                                                      "objs": {"0": [{"obj_id": 1, "bbox": box}]}}),
        Case("video max_frames -5", "video/", {"type": "sam2_t", "b64imgs": [img], "max_frame_num_to_track": -5,
                                               "objs": {"0": [{"obj_id": 1, "bbox": box}]}}),
        Case("video obj_id 1e30", "video/", {"type": "sam2_t", "b64imgs": [img],
                                             "objs": {"0": [{"obj_id": 10**30, "bbox": box}]}}),
        Case("video frame key 1e30", "video/", {"type": "sam2_t", "b64imgs": [img],
                                                "objs": {str(10**30): [{"obj_id": 1, "bbox": box}]}}),
    ]
    return cases


def non_finite(img: str, box: list[int]) -> list[Case]:
    bodies: list[tuple[str, dict[str, Any], list[Any]]] = [
        ("", {"type": "vit_t", "b64img": img, "bbox": box}, ["bbox", 0]),
        ("", {"type": "vit_t", "b64img": img, "bbox": box}, ["bbox", 3]),
        ("", {"type": "vit_t", "b64img": img, "point_coords": [[5, 5]], "point_labels": [1]}, ["point_coords", 0, 0]),
        ("", {"type": "vit_t", "b64img": img, "point_coords": [[5, 5]], "point_labels": [1]}, ["point_labels", 0]),
        ("sam3/", {"type": "sam3", "b64img": img, "text_prompt": "x"}, ["confidence_threshold"]),
        ("sam3/", {"type": "sam3", "b64img": img, "positive_bboxes": [[1, 1, 4, 4]]}, ["positive_bboxes", 0, 1]),
        ("sam3/", {"type": "sam3", "b64img": img, "negative_bboxes": [[1, 1, 4, 4]]}, ["negative_bboxes", 0, 3]),
        ("video/", {"type": "sam2_t", "b64imgs": [img], "objs": {"0": [{"obj_id": 1, "bbox": box}]}},
         ["objs", "0", 0, "bbox", 2]),
        ("video/", {"type": "sam2_t", "b64imgs": [img], "objs": {"0": [{"obj_id": 1, "point_coords": [[3, 3]],
                                                                        "point_labels": [1]}]}},
         ["objs", "0", 0, "point_coords", 0, 1]),
        ("video/", {"type": "sam2_t", "b64imgs": [img], "objs": {"0": [{"obj_id": 1, "bbox": box}]}},
         ["plane_position"]),
        ("sam3video/", {"type": "sam3", "b64imgs": [img], "objs": {"0": [{"obj_id": 1, "boxes_xywh": [[1, 1, 4, 4]]}]}},
         ["objs", "0", 0, "boxes_xywh", 0, 0]),
    ]
    for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh",
                 "crop_nms_thresh", "crop_overlap_ratio", "points_per_side", "crop_n_layers", "min_mask_region_area"):
        bodies.append(("automask/", {"type": "vit_t", "b64img": img, "points_per_side": 4}, [name]))
    cases = []
    for endpoint, body, path in bodies:
        for literal in ("Infinity", "-Infinity", "NaN", "1e999", "-1e999"):
            where = ".".join(str(p) for p in path)
            cases.append(Case(f"{endpoint or '/'} {where} = {literal}", endpoint, raw_with(body, path, literal)))
    return cases


def huge_strings(img: str, box: list[int], sizes: tuple[int, ...]) -> list[Case]:
    cases = []
    for size in sizes:
        big = "x" * size
        label = f"{size // 2**20} MB"
        cases += [
            Case(f"type {label}", "", {"type": big, "b64img": img, "bbox": box}),
            Case(f"b64img {label} of junk", "", {"type": "vit_t", "b64img": "@" * size, "bbox": box}),
            Case(f"b64img {label} of valid base64", "", {"type": "vit_t", "b64img": "QUFB" * (size // 4), "bbox": box}),
            Case(f"checkpoint_url {label}", "", {"type": "vit_t", "b64img": img, "bbox": box, "checkpoint_url": big}),
            Case(f"output_type {label}", "automask/", {"type": "vit_t", "b64img": img, "output_type": big}),
            Case(f"text_prompt {label}", "sam3/", {"type": "sam3", "b64img": img, "text_prompt": big}),
            Case(f"axes {label}", "video/", {"type": "sam2_t", "b64imgs": [img], "axes": big,
                                             "objs": {"0": [{"obj_id": 1, "bbox": box}]}}),
            Case(f"dirname {label}", "video/", {"type": "sam2_t", "dirname": big,
                                                "objs": {"0": [{"obj_id": 1, "bbox": box}]}}),
            Case(f"objs key {label}", "video/", {"type": "sam2_t", "b64imgs": [img], "objs": {big: []}}),
            Case(f"weights name {label}", "weights/", {"type": "vit_t", "name": big, "url": "http://127.0.0.1:9/w.pt"}),
            Case(f"weights url {label}", "weights/", {"type": "vit_t", "name": "w", "url": "file:///" + big}),
            Case(f"upload dirname {label}", "upload/", files={"dirname": (None, big, "text/plain"),
                                                              "file": ("0.jpg", b"x", "image/jpeg")}),
            Case(f"upload filename {label}", "upload/", files={"dirname": (None, "d", "text/plain"),
                                                               "file": (big[:4000] + ".jpg", b"x", "image/jpeg")}),
            Case(f"point_labels {label} of strings", "", {"type": "vit_t", "b64img": img, "point_coords": [[1, 1]],
                                                          "point_labels": ["y" * 1000] * (size // 1000)}),
            Case(f"ignored key {label}", "", {"type": "vit_t", "b64img": img, "bbox": box,
                                              "builderAsGroovyScript": big}, valid=True),
        ]
    return cases


# ----------------------------------------------------------------------------- the server under test
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``qpsam serve`` in a subprocess on loopback; its log is kept to count tracebacks."""

    def __init__(self, home: Path, log: Path):
        self.home, self.log = home, log
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        env = dict(os.environ, QPSAM_HOME=str(self.home), OMP_NUM_THREADS="2")
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "qpsam.cli", "serve", "--port", str(port), "--device", "cpu", "--log-level", "info"]
        self._out = open(self.log, "a")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/sam/"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"qpsam serve exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "version/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("qpsam serve did not answer within 60 s")

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> float:
        """SIGTERM; seconds until the process exited (``inf`` if it had to be killed)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_LIMIT_S)
            return time.monotonic() - start
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return float("inf")
        finally:
            self._out.close()


# ----------------------------------------------------------------------------- classification
def send(url: str, case: Case) -> httpx.Response | str:
    """The answer, or ``"hang"`` / ``"dropped: ..."``."""
    try:
        if case.method == "GET":
            return httpx.get(url + case.endpoint, timeout=TIMEOUT_S)
        if case.files is not None:
            return httpx.post(url + case.endpoint, files=case.files, timeout=TIMEOUT_S)
        data = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
        return httpx.post(url + case.endpoint, content=data, headers={"Content-Type": case.content_type},
                          timeout=TIMEOUT_S)
    except httpx.TimeoutException:
        return "hang"
    except httpx.HTTPError as exc:
        return f"dropped: {type(exc).__name__}: {exc}"


def classify(row: Row, case: Case, answer: httpx.Response | str) -> None:
    row.tried += 1
    if answer == "hang":
        row.hangs += 1
        row.example(f"hang: {case.name}")
        return
    if isinstance(answer, str):
        row.tracebacks += 1
        row.example(f"{case.name}: {answer[:120]}")
        return
    status, size = answer.status_code, len(answer.content)
    if case.valid:
        if status == 200:
            row.clean += 1
        else:
            row.wrong += 1
            row.example(f"{case.name}: {status} for a valid input")
        return
    if status >= 500 and status != 503:
        row.tracebacks += 1
        row.example(f"{case.name}: {status} {answer.text[:160]}")
        return
    if status < 400:
        row.wrong += 1
        row.example(f"{case.name}: {status} {answer.text[:80]}")
        return
    if size > ECHO_LIMIT:
        row.wrong += 1
        row.example(f"{case.name}: {status} with a {size}-byte answer")
        return
    try:
        detail = answer.json()["detail"]
    except (ValueError, KeyError, TypeError):
        row.wrong += 1
        row.example(f"{case.name}: {status} without a JSON detail: {answer.text[:80]}")
        return
    if not detail:
        row.wrong += 1
        row.example(f"{case.name}: empty detail")
        return
    row.clean += 1


def control(url: str, img: str, box: list[int]) -> list[dict[str, Any]] | None:
    try:
        r = httpx.post(url, json={"type": "vit_t", "b64img": img, "bbox": box}, timeout=120)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def run_campaign(name: str, cases: list[Case], served: Served, img: str, box: list[int],
                 baseline: list[dict[str, Any]]) -> Row:
    row = Row(name, keep=NOTES)
    before = served.tracebacks()
    for case in cases:
        classify(row, case, send(served.url, case))
        if not served.alive():
            row.example(f"server died after {case.name}")
            row.tracebacks += 1
            served.start()
    logged = served.tracebacks() - before
    if logged:
        row.tracebacks += logged
        row.example(f"{logged} traceback(s) in the server log")
    if control(served.url, img, box) != baseline:
        row.lost += len(baseline)
        row.example("control prompt changed after the campaign")
    return row


# ----------------------------------------------------------------------------- SIGTERM mid-request
class _SlowWeights(BaseHTTPRequestHandler):
    """Serves 50 MB of weights at 1 MB/s: a registration that is still running when SIGTERM comes."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(50 * 2**20))
        self.end_headers()
        try:
            for _ in range(500):
                self.wfile.write(b"\0" * (100 * 1024))
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


def sigterm_campaign(served: Served, img: str, box: list[int], baseline: list[dict[str, Any]]) -> Row:
    row = Row("SIGTERM mid-request", keep=NOTES)
    rng = np.random.default_rng(0)
    long_img = png_b64(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    long_automask = {"type": "vit_t", "b64img": long_img, "points_per_side": 64, "crop_n_layers": 1,
                     "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    weights_http = ThreadingHTTPServer(("127.0.0.1", 0), _SlowWeights)
    threading.Thread(target=weights_http.serve_forever, daemon=True).start()
    weights_url = f"http://127.0.0.1:{weights_http.server_address[1]}/slow.pt"

    scenarios: list[tuple[str, list[Case], float, bool]] = [
        # (name, requests started one after another, seconds before SIGTERM, restart the server first)
        ("during automask, a prompt waiting", [Case("long automask", "automask/", long_automask),
                                               Case("waiting prompt", "", {"type": "vit_t", "b64img": img, "bbox": box})],
         3.0, False),
        ("during model loading", [Case("first prompt", "", {"type": "vit_t", "b64img": img, "bbox": box})], 0.3, True),
        ("during a weights download", [Case("register", "weights/", {"type": "vit_t", "name": "slow",
                                                                    "url": weights_url})], 2.0, True),
        ("idle, keep-alive connection open", [], 0.5, True),
    ]
    for name, cases, delay, restart in scenarios:
        if restart:
            served.start()
        elif not served.alive():
            served.start()
        before = served.tracebacks()
        answers: dict[str, Any] = {}
        threads = []
        keep = httpx.Client(timeout=TIMEOUT_S)
        keep.get(served.url + "health/")  # an open keep-alive connection, as the extension leaves them
        for case in cases:
            t = threading.Thread(target=lambda c=case, a=answers: a.__setitem__(c.name, send(served.url, c)), daemon=True)
            t.start()
            threads.append(t)
            time.sleep(0.3)
        time.sleep(delay)
        stopped = served.terminate()
        for t in threads:
            t.join(TIMEOUT_S)
        keep.close()
        row.tried += 1
        problems = []
        if stopped == float("inf"):
            row.hangs += 1
            row.example(f"{name}: still running {STOP_LIMIT_S:.0f} s after SIGTERM")
        else:
            said = ", ".join(
                f"{c.name} {a.status_code if isinstance(a, httpx.Response) else a}"
                for c in cases for a in [answers.get(c.name, "no answer")]
            )
            row.example(f"{name}: stopped in {stopped:.2f} s" + (f" ({said})" if said else ""))
        for case in cases:
            a = answers.get(case.name, "hang")
            if isinstance(a, httpx.Response) and a.status_code == 503 and len(a.content) <= ECHO_LIMIT:
                continue
            if isinstance(a, httpx.Response) and a.status_code == 200 and case.endpoint == "":
                continue  # finished before the signal: a right answer
            problems.append(f"{case.name}: {a.status_code if isinstance(a, httpx.Response) else a}")
        logged = served.tracebacks() - before
        if logged:
            problems.append(f"{logged} traceback(s) in the log")
            row.tracebacks += 1
        elif problems:
            row.wrong += 1
        elif stopped != float("inf"):
            row.clean += 1
        for p in problems:
            row.example(f"{name}: {p}")
    # After the last stop: a fresh server answers the control prompt as before and holds no half-registered weights.
    served.start()
    if control(served.url, img, box) != baseline:
        row.lost += len(baseline)
        row.example("control prompt changed after restart")
    listed = httpx.get(served.url + "weights/?type=vit_t", timeout=TIMEOUT_S).json()
    if any(w["name"] == "slow" for w in listed):
        row.lost += 1
        row.example("the stopped registration left weights behind")
    weights_http.shutdown()
    return row


# ----------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 MB strings only (else 1 MB and 16 MB)")
    args = parser.parse_args()
    sizes = (2**20,) if args.quick else (2**20, 16 * 2**20)
    img, box = control_image()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qpsam-fault-server-") as tmp:
        served = Served(Path(tmp) / "home", Path(tmp) / "serve.log")
        served.start()
        baseline = control(served.url, img, box)
        if not baseline:
            raise SystemExit("the control prompt gave no feature; is MobileSAM installed?")
        rows = [
            run_campaign("bad bodies", bad_bodies(img, box), served, img, box, baseline),
            run_campaign("huge parameters", huge_parameters(img, box), served, img, box, baseline),
            run_campaign("non-finite numbers", non_finite(img, box), served, img, box, baseline),
            run_campaign("huge strings", huge_strings(img, box, sizes), served, img, box, baseline),
            sigterm_campaign(served, img, box, baseline),
        ]
        if served.alive():
            served.terminate()
    summed = total(rows)
    print(f"qpsam serve fault campaigns (loopback, CPU, MobileSAM vit_t), {time.monotonic() - started:.0f} s\n")
    print_table(rows + [summed])
    print()
    for r in rows:
        for n in r.examples:
            print(f"- {r.campaign}: {n}")
    return 1 if summed.failures else 0


if __name__ == "__main__":
    sys.exit(main())
