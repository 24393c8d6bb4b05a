"""SamapiClient against real loopback servers that misbehave, and against samapi's own wire format.

The servers here are real HTTP servers on 127.0.0.1 (``http.server`` in a thread); they stand in for a
broken or an original samapi server, not for inference. The client against a real ``qpsam serve`` with
real weights is tested in ``test_server.py``.
"""

from __future__ import annotations

import json
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
import pytest

from qpsam.engines.remote import SamapiClient, features_to_masks, normalise_url
from qpsam.errors import ServerError
from qpsam.sam import OutputType, Prompt


class _Server:
    """A ThreadingHTTPServer on a free loopback port answering with ``handle(handler) -> (status, body, type)``."""

    def __init__(self, handle: Callable[[BaseHTTPRequestHandler], tuple[int, bytes, str]]):
        outer = self
        self.requests: list[tuple[str, str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, body))
                self.body = body
                status, payload, ctype = handle(self)
                try:
                    self.send_response(status)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sam/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)


def test_normalise_url() -> None:
    assert normalise_url("http://h:8000") == "http://h:8000/sam/"
    assert normalise_url("http://h:8000/sam") == "http://h:8000/sam/"
    assert normalise_url("h:8000/sam/") == "http://h:8000/sam/"
    assert normalise_url("https://h/t/abc/sam/") == "https://h/t/abc/sam/"
    with pytest.raises(ServerError, match="not an http"):
        normalise_url("ftp://h/sam/")


def test_refused_connection_is_retried_then_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = SamapiClient(f"http://127.0.0.1:{port}/sam/", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(ServerError, match=r"cannot connect .*refused.*tried 3 times") as err:
        client.version()
    assert err.value.status is None  # no answer at all


def test_timeout_is_a_clear_error() -> None:
    def slow(_: BaseHTTPRequestHandler) -> tuple[int, bytes, str]:
        time.sleep(2.0)
        return 200, b"0.7.1", "text/plain"

    with _Server(slow) as server:
        client = SamapiClient(server.url, timeout=0.3, retries=0)
        with pytest.raises(ServerError, match=r"no answer within 0.3 s"):
            client.version()


def test_500_carries_the_servers_text() -> None:
    with _Server(lambda h: (500, b"Internal Server Error", "text/plain")) as server:
        client = SamapiClient(server.url)
        client.set_image(_image())
        with pytest.raises(ServerError, match=r"answered 500: Internal Server Error") as err:
            client.predict([Prompt(box=(1, 1, 10, 10))])
        assert err.value.status == 500


def test_malformed_json_is_named() -> None:
    with _Server(lambda h: (200, b"<html>not json", "application/json")) as server:
        client = SamapiClient(server.url)
        client.set_image(_image())
        with pytest.raises(ServerError, match=r"not with JSON: '<html>not json'") as err:
            client.predict([Prompt(box=(1, 1, 10, 10))])
        assert err.value.status == 200


def test_wrong_shape_of_json_is_named() -> None:
    with _Server(lambda h: (200, b'{"detail": "x"}', "application/json")) as server:
        client = SamapiClient(server.url)
        client.set_image(_image())
        with pytest.raises(ServerError, match="expected a list of GeoJSON features"):
            client.predict([Prompt(box=(1, 1, 10, 10))])


def test_401_and_422_details_are_shown() -> None:
    def answer(h: BaseHTTPRequestHandler) -> tuple[int, bytes, str]:
        if "weights" in h.path:
            return 401, json.dumps({"detail": "token please"}).encode(), "application/json"
        detail = [{"loc": ["body", "b64img"], "msg": "Field required", "type": "missing"}]
        return 422, json.dumps({"detail": detail}).encode(), "application/json"

    with _Server(answer) as server:
        client = SamapiClient(server.url)
        with pytest.raises(ServerError, match=r"valid token \(401\): token please") as err:
            client.list_weights("vit_t")
        assert err.value.status == 401
        client.set_image(_image())
        with pytest.raises(ServerError, match=r"422: body.b64img: Field required") as err:
            client.predict([Prompt(box=(1, 1, 10, 10))])
        assert err.value.status == 422


def test_server_error_keeps_its_status_across_processes() -> None:
    error = pickle.loads(pickle.dumps(ServerError("POST /sam/: the server answered 503: busy", 503)))
    assert isinstance(error, ServerError) and error.status == 503 and str(error).endswith("503: busy")
    assert ServerError("no image set").status is None


# ----------------------------------------------------------------------------- samapi's own wire format
def _samapi_features(masks: list[np.ndarray], scores: list[float], model: str) -> list[dict]:
    """Features the way samapi 0.7.1 writes them: one marching-squares ring per mask through pixel centres,
    and each feature carrying the previous mask's score (``quality = q[i-1]``)."""
    from skimage import measure

    out = []
    for i, m in enumerate(masks):
        contours = measure.find_contours(np.pad(m, 1).astype(float), 0.5)
        if contours:
            ring = max(contours, key=len) - 1
            coords = [[[float(c), float(r)] for r, c in ring]]
        else:
            coords = []
        out.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {"object_idx": i - 1, "label": "object", "quality": scores[i - 1], "sam_model": model},
            }
        )
    return out


def _disk(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_client_reads_samapi_answers_and_undoes_the_quality_shift() -> None:
    shape = (40, 50)
    masks = [_disk(shape, 20, 20, 4), _disk(shape, 20, 20, 8), _disk(shape, 22, 20, 12)]
    scores = [0.91, 0.97, 0.85]
    seen: list[dict] = []

    def samapi(h: BaseHTTPRequestHandler) -> tuple[int, bytes, str]:
        if h.path.startswith("/sam/health"):
            return 404, b'{"detail":"Not Found"}', "application/json"
        body = json.loads(h.body)
        seen.append(body)
        chosen = masks if body["multimask_output"] else masks[1:2]
        chosen_scores = scores if body["multimask_output"] else scores[1:2]
        return 200, json.dumps(_samapi_features(chosen, chosen_scores, body["type"])).encode(), "application/json"

    with _Server(samapi) as server:
        client = SamapiClient(server.url, model_type="vit_b", weights="https://example.org/w.pth")
        assert client.info()["server"] == "samapi"
        client.set_image(np.zeros((*shape, 3), np.uint8))
        (all3,) = client.predict([Prompt(box=(8, 8, 32, 32))], OutputType.MULTI_ALL)
        assert [m.score for m in all3] == scores  # each mask gets its own score back
        for got, want in zip(all3, masks):
            assert np.array_equal(got.mask, want)
        (best,) = client.predict([Prompt(box=(8, 8, 32, 32))], OutputType.MULTI_BEST)
        assert len(best) == 1 and best[0].score == 0.97 and np.array_equal(best[0].mask, masks[1])
        (single,) = client.predict([Prompt(points=((20, 20), (2, 2)), labels=(1, 0))])
        assert len(single) == 1 and single[0].score == 0.97
    # The requests are what the extension sends.
    assert seen[0]["bbox"] == [8, 8, 32, 32] and seen[0]["multimask_output"] is True
    assert seen[0]["type"] == "vit_b" and seen[0]["checkpoint_url"] == "https://example.org/w.pth"
    assert seen[2]["point_coords"] == [[20, 20], [2, 2]] and seen[2]["point_labels"] == [1, 0]
    assert seen[0]["b64img"] == seen[1]["b64img"] == seen[2]["b64img"]  # same string: the server's cache hits


def test_features_to_masks_pixel_corner_round_trip() -> None:
    from qpsam.sam import Mask
    from qpsam.server.features import mask_features

    m = np.zeros((30, 30), bool)
    m[5:20, 5:25] = True
    m[10:14, 10:14] = False  # a hole
    m[25:28, 2:4] = True  # a second piece
    feats = mask_features([Mask(m, 0.5)], "vit_t")
    assert feats[0]["geometry"]["type"] == "MultiPolygon"
    (back,) = features_to_masks(feats, m.shape, pixel_corner=True)
    assert np.array_equal(back.mask, m) and back.score == 0.5
