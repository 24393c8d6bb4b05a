"""Server speed: a prompt on a new image against further prompts on the same image (embedding cache).

Starts ``qpsam serve``'s application in this process (uvicorn on loopback, CPU, MobileSAM vit_t) and sends
requests the way the QuPath extension does (a 512x512 RGB PNG in base64, one box per request, the official
checkpoint URL, over one keep-alive connection as the extension's HTTP client keeps it). The same run measures a
server with the cache turned off (every request re-encodes, as samapi does when the image changes) as the
baseline. Prints a table with ratios against the first prompt of the same run, then where the time of a cached
prompt goes: the server runs with ``timing`` on and answers each stage in a ``Server-Timing`` header, and the
same engine's decoder is timed in this process on the same boxes, each right after its HTTP request.

    python benchmarks/bench_server.py [--repeat 5] [--threads 1] [--concurrent]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from qpsam.sam import OutputType, Prompt, to_rgb8  # noqa: E402
from qpsam.server import Settings, create_app  # noqa: E402
from qpsam.server.state import app_state  # noqa: E402
from qpsam.server.thread import ServerThread  # noqa: E402
from qpsam.server.timing import parse_server_timing  # noqa: E402


def png_b64(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def boxes_of(labels: np.ndarray, n: int) -> list[list[int]]:
    out = []
    for value in np.unique(labels[labels > 0])[:n]:
        rows, cols = np.nonzero(labels == value)
        out.append([int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1])
    return out


VIT_T_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"  # what the extension sends
HEADERS = {"accept": "application/json", "Content-Type": "application/json; charset=utf-8"}
# Stages of a cached prompt in the order the server runs them (qpsam.server.routes.prompts).
STAGES = (
    ("route", "middleware, routing, dependencies"),
    ("read", "body read"),
    ("parse", "JSON parse + validation"),
    ("engine", "loaded engine look-up"),
    ("key", "image key (BLAKE2b of the base64)"),
    ("image", "image decode (a new view only)"),
    ("hop", "hop to the inference thread and back"),
    ("model", "decoder (set_image_from + predict)"),
    ("polygon", "mask -> polygon features"),
    ("json", "response serialisation"),
)


def body_of(box: list[int], b64: str, multimask: bool = False) -> bytes:
    body = {"type": "vit_t", "bbox": box, "b64img": b64, "multimask_output": multimask, "checkpoint_url": VIT_T_URL}
    return json.dumps(body, separators=(",", ":")).encode()


def post(client: httpx.Client, url: str, data: bytes) -> tuple[float, dict[str, float]]:
    """Seconds for one request on ``client``'s connection, and the server's stages (when it reports them)."""
    t = time.perf_counter()
    r = client.post(url, content=data, headers=HEADERS)
    elapsed = time.perf_counter() - t
    r.raise_for_status()
    return elapsed, parse_server_timing(r.headers.get("server-timing", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="prompts per cached measurement (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--concurrent", action="store_true", help="also time 8 clients with 8 different images")
    args = ap.parse_args()

    import tifffile
    import torch

    torch.set_num_threads(args.threads)
    image = tifffile.imread(REPO / "examples/data/nuclei.tif")
    labels = tifffile.imread(REPO / "examples/data/nuclei_mask.tif")
    rgb = to_rgb8(image)
    boxes = boxes_of(labels, args.repeat + 2)
    rows: list[tuple[str, float, int]] = []

    stages: dict[str, list[float]] = {}
    totals: list[float] = []
    decode: list[float] = []
    with tempfile.TemporaryDirectory() as home:
        for cached in (True, False):
            settings = Settings(home=Path(home) / ("on" if cached else "off"), device="cpu",
                                cache_bytes=(1 << 30) if cached else 0, timing=cached)
            with ServerThread(create_app(settings)) as server, httpx.Client(timeout=600) as client:
                url = server.url
                # Load the model first, on another image, so that no row below includes loading.
                load, _ = post(client, url, body_of([0, 0, 20, 20], png_b64(rgb[::-1].copy())))
                b64 = png_b64(rgb)
                tag = "cache on" if cached else "cache off (baseline)"
                first, _ = post(client, url, body_of(boxes[0], b64))
                rows.append((f"{tag}: model load + first prompt on another image", load, 1))
                rows.append((f"{tag}: first prompt on a new image", first, 1))
                engine = app_state(server.app).engine_for("vit_t", None)
                same = []
                for b in boxes[1 : 1 + args.repeat]:
                    seconds, timing = post(client, url, body_of(b, b64))
                    same.append(seconds)
                    if cached:
                        # The floor of a cached request: the same engine's decoder on the same prompt, called in
                        # this process right after it (the engine still holds the view; the server is idle).
                        totals.append(seconds)
                        for name, value in timing.items():
                            stages.setdefault(name, []).append(value)
                        with engine.lock:
                            t = time.perf_counter()
                            engine.predict([Prompt(box=(b[0], b[1], b[2], b[3]))], OutputType.SINGLE)
                            decode.append(time.perf_counter() - t)
                rows.append((f"{tag}: next prompt, same image (median)", statistics.median(same), len(same)))
                if cached:
                    rows.append(("in-process decoder, same prompts (median)", statistics.median(decode), len(decode)))
                multi = [post(client, url, body_of(b, b64, multimask=True))[0] for b in boxes[1 : 1 + args.repeat]]
                rows.append((f"{tag}: next multimask prompt, same image (median)", statistics.median(multi), len(multi)))
                if cached:
                    # What the benchmark's client did before: a new connection (and client) per request.
                    fresh = []
                    for b in boxes[1 : 1 + args.repeat]:
                        with httpx.Client(timeout=600) as once:
                            fresh.append(post(once, url, body_of(b, b64))[0])
                    rows.append(("cache on: next prompt, same image, new connection each (median)",
                                 statistics.median(fresh), len(fresh)))
                if cached and args.concurrent:
                    crops = [png_b64(rgb[r : r + 256, c : c + 256].copy()) for r in (0, 256) for c in (0, 128, 256)]
                    crops += [png_b64(rgb[64:320, 64:320].copy()), png_b64(rgb[192:448, 192:448].copy())]
                    times: list[float] = []

                    def one(b: str, times: list[float] = times, url: str = url) -> None:
                        with httpx.Client(timeout=600) as own:
                            times.append(post(own, url, body_of([10, 10, 60, 60], b))[0])

                    t = time.perf_counter()
                    threads = [threading.Thread(target=one, args=(c,)) for c in crops]
                    for th in threads:
                        th.start()
                    for th in threads:
                        th.join()
                    rows.append(("cache on: 8 concurrent clients, 8 new images (wall)", time.perf_counter() - t, 8))

    first_on = next(v for name, v, _ in rows if name == "cache on: first prompt on a new image")
    print(f"\nMobileSAM vit_t on CPU ({args.threads} torch thread(s)), 512x512 PNG as the QuPath extension sends it")
    print("ratio = first prompt on a new image (cache on) / this row\n")
    print("| step | n | seconds | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, value, n in rows:
        print(f"| {name} | {n} | {value:.3f} | {first_on / value:.1f}x |")
    cached_next = next(v for name, v, _ in rows if name == "cache on: next prompt, same image (median)")
    print(f"\nsecond prompt on the same image: {first_on / cached_next:.1f}x faster than the first (target >= 10x)")
    floor = statistics.median(decode)
    print(f"cached prompt over HTTP / the in-process decoder: {cached_next / floor:.2f}x (target <= 1.5x)")
    print_breakdown(stages, totals, floor)


def print_breakdown(stages: dict[str, list[float]], totals: list[float], floor: float) -> None:
    """Where a cached prompt's time goes: the server's stages (medians), then what only the client sees."""
    total = statistics.median(totals)
    print(f"\nA cached prompt, stage by stage (median of {len(totals)}; Server-Timing of each answer)\n")
    print("| stage | ms | share |")
    print("| --- | ---: | ---: |")
    named = dict(STAGES)
    server = 0.0
    for key in [k for k, _ in STAGES if k in stages] + [k for k in stages if k not in named]:
        value = statistics.median(stages[key])
        server += value
        print(f"| {named.get(key, key)} | {value * 1000:.2f} | {value / total:.0%} |")
    rest = max(0.0, total - server)
    print(f"| client, connection, HTTP parsing, routing (the rest) | {rest * 1000:.2f} | {rest / total:.0%} |")
    print(f"| **total over HTTP** | {total * 1000:.2f} | 100% |")
    print(f"| in-process decoder (same prompts, same run) | {floor * 1000:.2f} | {floor / total:.0%} |")


if __name__ == "__main__":
    main()
