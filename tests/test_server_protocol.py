"""Server bookkeeping of the SAM3 and video endpoints, through the engine seam of ``create_app``.

SAM2 and SAM3 weights cannot be had on this machine, so their engines cannot run here. These tests inject an
engine that records what the server asks of it and answers with given masks: they check the protocol side
(box conversion, SAM3 prompt state, thresholds, frame order, planes, object ids, uploads), never inference
results. Real inference through the server is tested in ``test_server.py`` with MobileSAM.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from qpsam.sam import Mask, Prompt
from qpsam.server import Settings, create_app


def _png(value: int, size: int = 16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _square(x0: int, y0: int, n: int = 4, size: int = 16) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0 : y0 + n, x0 : x0 + n] = True
    return m


class RecordingSam3:
    model_type = "sam3"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.images: list[int] = []

    def set_image(self, image: np.ndarray) -> None:
        self.images.append(int(image[0, 0, 0]))

    def segment(self, text: Any, positive: list, negative: list) -> list[Mask]:
        self.calls.append((text, list(positive), list(negative)))
        return [Mask(_square(0, 0), 0.9), Mask(_square(8, 8), 0.45), Mask(_square(4, 4), 0.05)]


class RecordingVideo:
    model_type = "sam2_t"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def propagate(self, frames: list[np.ndarray], prompts: dict[int, list[Prompt]], **kw: Any) -> dict:
        self.calls.append({"frames": [int(f[0, 0, 0]) for f in frames], "prompts": prompts, **kw})
        keys = [p.key for ps in prompts.values() for p in ps]
        return {f: {k: Mask(_square(k, f), 0.5) for k in keys} for f in range(len(frames))}


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("QPSAM_HOME", str(tmp_path / "home"))
    engines = {"sam3": RecordingSam3(), "sam2_t": RecordingVideo()}
    app = create_app(Settings(home=tmp_path / "server"), engine_factory=lambda t, w, d, c: engines[t])
    with TestClient(app) as c:
        c.engines = engines
        yield c


def test_sam3_boxes_accumulate_until_reset_and_thresholds_filter(client: Any) -> None:
    b64 = base64.b64encode(_png(7)).decode()
    body = {"type": "sam3", "b64img": b64, "text_prompt": "nucleus", "positive_bboxes": [[2, 3, 4, 5]],
            "negative_bboxes": [], "reset_prompts": False, "confidence_threshold": 0.4}
    first = client.post("/sam/sam3/", json=body).json()
    # Instances above the request's threshold, each with its own score, numbered from -1.
    assert [(f["properties"]["object_idx"], f["properties"]["quality"]) for f in first] == [(-1, 0.9), (0, 0.45)]
    assert all(f["properties"]["sam_model"] == "sam3" for f in first)
    client.post("/sam/sam3/", json={**body, "text_prompt": "", "positive_bboxes": [[10, 10, 2, 2]],
                                     "negative_bboxes": [[0, 0, 1, 1]], "confidence_threshold": 0.5})
    client.post("/sam/sam3/", json={**body, "reset_prompts": True, "positive_bboxes": []})
    calls = client.engines["sam3"].calls
    assert calls[0] == ("nucleus", [(2, 3, 6, 8)], [])  # XYWH on the wire, XYXY to the engine
    assert calls[1] == (None, [(2, 3, 6, 8), (10, 10, 12, 12)], [(0, 0, 1, 1)])  # boxes kept, text replaced
    assert calls[2] == ("nucleus", [], [])  # reset
    # Prompts without text and without boxes (none kept) are refused instead of guessed.
    r = client.post("/sam/sam3/", json={**body, "reset_prompts": True, "text_prompt": None, "positive_bboxes": None})
    assert r.status_code == 422 and "text_prompt" in r.json()["detail"]


def test_video_from_uploads_with_planes_and_ids(client: Any) -> None:
    # Frames uploaded out of order, named as the extension names them; the server orders them by number.
    for i in (2, 0, 1, 10):
        files = {"dirname": (None, "run-1", "text/plain"), "file": (f"{i:02d}.jpg", _png(i), "image/jpeg")}
        assert client.post("/sam/upload/", files=files).json() == {"filename": f"{i:02d}.jpg"}
    body = {"type": "sam2_t", "dirname": "run-1", "axes": "XYZ", "plane_position": 5, "start_frame_idx": 0,
            "objs": {"1": [{"obj_id": 3, "bbox": [1, 1, 6, 6], "builderAsGroovyScript": "..."},
                           {"obj_id": 2, "point_coords": [[4, 4], [9, 9]], "point_labels": [1, 0]}],
                     "2": [{"obj_id": 3, "point_coords": [[5, 5]], "point_labels": [1]}]},
            "max_frame_num_to_track": 3}
    r = client.post("/sam/video/", json=body)
    assert r.status_code == 200, r.text
    (call,) = client.engines["sam2_t"].calls
    assert call["frames"] == [0, 1, 2, 10]
    assert call["start_frame"] == 0 and call["max_frames"] == 3 and call["reverse"] is True
    assert [(p.key, p.box, p.points, p.labels) for p in call["prompts"][1]] == [
        (3, (1.0, 1.0, 6.0, 6.0), (), ()), (2, None, ((4.0, 4.0), (9.0, 9.0)), (1, 0))]
    assert [p.key for p in call["prompts"][2]] == [3]
    features = r.json()
    assert len(features) == 4 * 2
    for f in features:
        plane = f["geometry"]["plane"]
        idx = f["properties"]["object_idx"]
        assert plane["c"] == -1 and plane["t"] == 5  # XYZ: the frame index is z, t is plane_position
        assert f["properties"] == {"object_idx": idx, "label": "object", "sam_model": "sam2_t"}  # no quality
        x0, y0 = f["geometry"]["coordinates"][0][0]
        assert (min(c[0] for c in f["geometry"]["coordinates"][0]), min(c[1] for c in f["geometry"]["coordinates"][0])) == (idx, plane["z"])
    # The uploads were consumed.
    assert client.post("/sam/video/", json=body).status_code == 422


def test_video_inline_frames_xyt(client: Any) -> None:
    frames = [base64.b64encode(_png(v)).decode() for v in (40, 41)]
    body = {"type": "sam2_t", "b64imgs": frames, "axes": "XYT", "plane_position": 2,
            "objs": {"0": [{"obj_id": 1, "bbox": [0, 0, 4, 4]}]}}
    features = client.post("/sam/video/", json=body).json()
    assert [f["geometry"]["plane"] for f in features] == [{"c": -1, "z": 2, "t": 0}, {"c": -1, "z": 2, "t": 1}]
    assert client.engines["sam2_t"].calls[0]["frames"] == [40, 41]
