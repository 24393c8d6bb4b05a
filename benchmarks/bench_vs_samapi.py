"""qpsam's server against the real samapi 0.7.1, side by side in one run (MobileSAM vit_t, CPU, one worker each).

Each round starts samapi (``uvicorn samapi.main:app``, 1 worker, loopback) from its own virtual environment,
measures it, stops it, then does the same with ``qpsam serve`` (a subprocess of this Python, ``--device cpu``, the
default engine: ONNX Runtime when it is installed); the order alternates from round to round. Every server is
started fresh in every round, so start-up is measured each time. The client is httpx, one keep-alive connection per client; request bodies are built (PNG,
base64, JSON) before the timer, which is around the POST alone. Rows (median over requests, then median over
rounds; ratio = samapi / qpsam):

* start-up to the first answered request (``GET /sam/version/`` polled from process start);
* start-up + first prompt (process start to the answer of the first box on the IHC image) and that first prompt
  alone;
* another box on the same view (the embedding is reused by both servers);
* a different image each request: the 7 other flips/rotations of skimage's immunohistochemistry image (512x512),
  with the box mapped through the same transform;
* 8 concurrent clients with 8 images not seen before (the 8 flips/rotations, pixel values scaled by 0.9 so that
  neither server has them cached), wall time;
* automask with the QuPath extension's GUI settings at 16 and 32 points per side on the IHC view, right after a
  prompt on it (``--skip-automask-32`` drops the slow one; ``--no-automask`` both).

qpsam's engine (same model type, device and engine choice as the server, loaded in this process before the
rounds) decodes the same boxes on the same view, each right after the server answered that box over HTTP: the
floor for a cached request, timed under the same load, so "cached request <= 1.5x the decoder" reads from the
same run. Without ``--samapi-python`` the script exits with status 2 and measures nothing.

samapi runs from its own folder, outside this repository: a Python 3.11 venv with torch 2.14.1, samapi 0.7.1
(installed ignoring its requires-python) with MobileSAM and sam2 from ksugar's forks, two small patches (only vit_t
is registered at start-up when ANCHOR_ONLY_VIT_T is set; a sam3 annotation made a string so that it imports
without sam3), and ``mobile_sam.pt`` with its ``{type, name, url}`` sidecar under ``<root>/vit_t/`` (see
``shared/specs/samapi-measured.md`` §1). The script starts it with SAMAPI_ROOT_DIR=<root>, HOME=<home>,
HF_HUB_OFFLINE=1 and ANCHOR_ONLY_VIT_T=1. Idle machine, full run::

    PYTHONPATH=src python benchmarks/bench_vs_samapi.py \\
        --samapi-python SAMAPI_VENV/bin/python --samapi-root ROOT --rounds 3 --repeat 5

Quick check (loaded machine): ``--rounds 1 --repeat 3 --skip-automask-32``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

BOX_A = (250, 300, 390, 511)  # the gland of the IHC image (xyxy)
OTHER_BOXES = [(270, 0, 460, 300), (0, 250, 165, 511), (0, 0, 130, 250), (100, 0, 270, 260), (420, 90, 480, 150)]
# What the QuPath extension sends from its automask dialog (GUI defaults), points_per_side set per row.
AUTOMASK = {
    "points_per_batch": 64, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "stability_score_offset": 1.0,
    "box_nms_thresh": 0.2, "crop_n_layers": 0, "crop_nms_thresh": 0.7, "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1, "min_mask_region_area": 0, "output_type": "Multi-mask (smallest)",
    "include_image_edge": False, "checkpoint_url": None,
}
TIMEOUT_S = 1800.0


# ------------------------------------------------------------------------------------------------ images


def png_b64(rgb: np.ndarray) -> str:
    """Standard base64 of a PNG, as the QuPath extension sends the viewer's image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def transforms(rgb: np.ndarray, box: tuple[int, int, int, int]) -> list[tuple[np.ndarray, list[int]]]:
    """The 8 flips/rotations of ``rgb`` (identity first), each with ``box`` mapped through the same transform."""
    mask = np.zeros(rgb.shape[:2], bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    out = []
    for flip in (False, True):
        for k in range(4):
            img, m = (rgb[:, ::-1], mask[:, ::-1]) if flip else (rgb, mask)
            img, m = np.ascontiguousarray(np.rot90(img, k)), np.rot90(m, k)
            rows, cols = np.nonzero(m)
            out.append((img, [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]))
    return out


def prompt_body(b64: str, box: list[int] | tuple[int, ...]) -> bytes:
    return json.dumps({"type": "vit_t", "b64img": b64, "bbox": list(box), "multimask_output": False,
                       "checkpoint_url": None}, separators=(",", ":")).encode()


def automask_body(b64: str, points_per_side: int) -> bytes:
    return json.dumps({"type": "vit_t", "b64img": b64, "points_per_side": points_per_side, **AUTOMASK},
                      separators=(",", ":")).encode()


@dataclass
class Bodies:
    """Every request body, encoded once before any timer starts."""

    first: bytes
    same_view: list[bytes]
    different: list[bytes]
    concurrent: list[bytes]
    automask: dict[int, bytes]


def make_bodies(repeat: int, sides: list[int]) -> tuple[Bodies, np.ndarray]:
    from skimage import data

    rgb = np.ascontiguousarray(data.immunohistochemistry()[:, :, :3])
    b64 = png_b64(rgb)
    views = transforms(rgb, BOX_A)
    unseen = transforms((rgb.astype(np.float32) * 0.9).astype(np.uint8), BOX_A)
    boxes = [OTHER_BOXES[i % len(OTHER_BOXES)] for i in range(repeat)]
    return Bodies(
        first=prompt_body(b64, BOX_A),
        same_view=[prompt_body(b64, b) for b in boxes],
        different=[prompt_body(png_b64(img), box) for img, box in views[1:]],
        concurrent=[prompt_body(png_b64(img), box) for img, box in unseen],
        automask={s: automask_body(b64, s) for s in sides},
    ), rgb


# ------------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One server process we started, its log file and its base URL."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    started: float

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def peak_rss_gb(self) -> float | None:
        """Peak resident memory of the server process (VmHWM), read before it stops."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
        except OSError:
            pass
        return None

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def start_samapi(python: str, root: Path, home: Path, log: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(SAMAPI_ROOT_DIR=str(root), HOME=str(home), HF_HUB_OFFLINE="1", ANCHOR_ONLY_VIT_T="1")
    cmd = [python, "-m", "uvicorn", "samapi.main:app", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=str(home), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Server("samapi", proc, log, f"http://127.0.0.1:{port}/sam/", t)


def start_qpsam(home: Path, log: Path) -> Server:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["QPSAM_SERVER_HOME"] = str(home)
    cmd = [sys.executable, "-m", "qpsam.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--workers", "1"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=str(home), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Server("qpsam", proc, log, f"http://127.0.0.1:{port}/sam/", t)


def wait_ready(server: Server, limit_s: float = 300.0) -> float:
    """Seconds from process start to the first answered ``GET /sam/version/``."""
    import httpx

    deadline = server.started + limit_s
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "version/", timeout=2.0).status_code == 200:
                return time.perf_counter() - server.started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not answer within {limit_s:.0f} s:\n{server.log_tail()}")


def post(client: Any, url: str, body: bytes) -> tuple[float, list[Any]]:
    """Seconds for one POST (the timer covers the request alone) and the features it returned."""
    t = time.perf_counter()
    r = client.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT_S)
    elapsed = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"POST {url} answered {r.status_code}: {r.text[:300]}")
    features = r.json()
    if not isinstance(features, list) or not features:
        raise RuntimeError(f"POST {url} returned no features: {r.text[:300]}")
    return elapsed, features


# ------------------------------------------------------------------------------------------------ one server


@dataclass
class Round:
    """One server's numbers in one round (seconds unless named otherwise)."""

    values: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    version: str = ""
    rss_gb: float | None = None


def measure(server: Server, bodies: Bodies, decode: Callable[[int], float] | None = None) -> Round:
    """Every row for one freshly started server; ``decode(i)`` (qpsam only) times the in-process decoder on
    same-view box ``i`` right after the server answered it."""
    import httpx

    out = Round()
    try:
        out.values["startup"] = wait_ready(server)
        with httpx.Client() as client:
            out.version = client.get(server.url + "version/", timeout=10).text.strip()
            first, _ = post(client, server.url, bodies.first)
            out.values["first_prompt"] = first
            out.values["startup_first"] = time.perf_counter() - server.started
            same, floor = [], []
            for i, body in enumerate(bodies.same_view):
                same.append(post(client, server.url, body)[0])
                if decode is not None:
                    floor.append(decode(i))
            out.values["same_view"] = statistics.median(same)
            if floor:
                out.values["decoder"] = statistics.median(floor)
            out.values["different"] = statistics.median(post(client, server.url, b)[0] for b in bodies.different)
        out.values["concurrent"] = concurrent(server.url, bodies.concurrent)
        with httpx.Client() as client:
            for side, body in bodies.automask.items():
                post(client, server.url, bodies.first)  # the view is the server's current image, as in QuPath
                seconds, features = post(client, server.url + "automask/", body)
                out.values[f"automask{side}"] = seconds
                out.counts[f"automask{side}"] = len(features)
        out.rss_gb = server.peak_rss_gb()
    finally:
        server.stop()
    return out


def concurrent(url: str, bodies: list[bytes]) -> float:
    """Wall seconds for one client per body, all started together, each on its own keep-alive connection."""
    import httpx

    clients = [httpx.Client() for _ in bodies]
    errors: list[BaseException] = []
    go = threading.Barrier(len(bodies) + 1)

    def run(client: Any, body: bytes) -> None:
        # Connect before the barrier so that the wall time is requests, not handshakes.
        client.get(url + "version/", timeout=30)
        go.wait()
        try:
            post(client, url, body)
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c, b)) for c, b in zip(clients, bodies)]
    for th in threads:
        th.start()
    go.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    for c in clients:
        c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(bodies)} concurrent requests failed: {errors[0]}")
    return wall


# ------------------------------------------------------------------------------------------------ report


def decoder(rgb: np.ndarray) -> tuple[Callable[[int], float], str]:
    """A timer of the in-process ``predict`` for same-view box ``i``, on the engine the server picks on the CPU."""
    sys.path.insert(0, str(REPO / "src"))
    from qpsam.engines import load_engine
    from qpsam.sam import OutputType, Prompt

    engine = load_engine("vit_t", device="cpu", cache=False)
    engine.set_image(rgb)
    engine.predict([Prompt(box=BOX_A)], OutputType.SINGLE)  # as the server's cold prompt, before the timed ones

    def timed(i: int) -> float:
        box = OTHER_BOXES[i % len(OTHER_BOXES)]
        t = time.perf_counter()
        engine.predict([Prompt(box=box)], OutputType.SINGLE)
        return time.perf_counter() - t

    return timed, repr(engine)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def samapi_versions(python: str) -> str:
    code = ("import sys, torch, fastapi, uvicorn; "
            "print(f'Python {sys.version.split()[0]}, torch {torch.__version__}, fastapi {fastapi.__version__}, "
            "uvicorn {uvicorn.__version__}, {torch.get_num_threads()} torch threads')")
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    return r.stdout.strip() or f"(could not read: {r.stderr.strip()[-200:]})"


def qpsam_versions() -> str:
    sys.path.insert(0, str(REPO / "src"))
    from qpsam import __version__

    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = "no onnxruntime"
    return f"Python {platform.python_version()}, qpsam {__version__}, {ort}"


ROWS: list[tuple[str, str]] = [
    ("startup", "start-up to first answered request"),
    ("startup_first", "start-up + first prompt"),
    ("first_prompt", "first prompt alone (new view, cold)"),
    ("same_view", "same view, another box (median of {repeat})"),
    ("different", "different image each request (median of 7)"),
    ("concurrent", "8 concurrent clients, 8 new images (wall)"),
    ("automask16", "automask, 16 points per side"),
    ("automask32", "automask, 32 points per side"),
]


def table(rounds: dict[str, list[Round]], repeat: int) -> list[str]:
    lines = ["| step | samapi | qpsam | ratio (samapi/qpsam) |", "| --- | ---: | ---: | ---: |"]
    for key, label in ROWS:
        a = [r.values[key] for r in rounds["samapi"] if key in r.values]
        b = [r.values[key] for r in rounds["qpsam"] if key in r.values]
        if not a or not b:
            continue
        sa, sb = statistics.median(a), statistics.median(b)
        name = label.format(repeat=repeat)
        if key.startswith("automask"):
            na = statistics.median(r.counts[key] for r in rounds["samapi"])
            nb = statistics.median(r.counts[key] for r in rounds["qpsam"])
            name += f" (masks: samapi {na:g}, qpsam {nb:g})"
        lines.append(f"| {name} | {sa:.3f} s | {sb:.3f} s | {sa / sb:.2f}x |")
    rss = {k: [r.rss_gb for r in v if r.rss_gb is not None] for k, v in rounds.items()}
    if rss["samapi"] and rss["qpsam"]:
        lines.append(f"| peak RSS of the server process | {max(rss['samapi']):.2f} GB | {max(rss['qpsam']):.2f} GB | |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samapi-python", help="Python of samapi's own virtual environment (samapi 0.7.1 installed)")
    ap.add_argument("--samapi-root", type=Path, help="SAMAPI_ROOT_DIR: holds vit_t/mobile_sam.pt and its sidecar")
    ap.add_argument("--samapi-home", type=Path, help="HOME for samapi (default: the parent of --samapi-root)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each starts both servers afresh (default 3)")
    ap.add_argument("--repeat", type=int, default=5, help="boxes for the same-view row (default 5)")
    ap.add_argument("--skip-automask-32", action="store_true", help="leave out automask at 32 points per side")
    ap.add_argument("--no-automask", action="store_true", help="leave out both automask rows")
    args = ap.parse_args()

    if not args.samapi_python:
        print("bench_vs_samapi: samapi is not available: pass --samapi-python (the python of a venv with samapi "
              "0.7.1) and --samapi-root; nothing was measured", file=sys.stderr)
        return 2
    if not Path(args.samapi_python).is_file():
        print(f"bench_vs_samapi: --samapi-python {args.samapi_python} does not exist; nothing was measured",
              file=sys.stderr)
        return 2
    if args.samapi_root is None:
        print("bench_vs_samapi: pass --samapi-root (samapi's SAMAPI_ROOT_DIR, holding vit_t/mobile_sam.pt); "
              "nothing was measured", file=sys.stderr)
        return 2
    if not (args.samapi_root / "vit_t" / "mobile_sam.pt").is_file():
        print(f"bench_vs_samapi: --samapi-root {args.samapi_root} has no vit_t/mobile_sam.pt (samapi would try to "
              "download it); nothing was measured", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.repeat < 1:
        print("bench_vs_samapi: --rounds and --repeat must be >= 1", file=sys.stderr)
        return 2
    samapi_root = args.samapi_root.resolve()
    samapi_home = (args.samapi_home or samapi_root.parent).resolve()
    sides = [] if args.no_automask else [16] if args.skip_automask_32 else [16, 32]

    load_before = os.getloadavg()
    bodies, rgb = make_bodies(args.repeat, sides)
    decode, engine = decoder(rgb)
    rounds: dict[str, list[Round]] = {"samapi": [], "qpsam": []}
    starters: dict[str, Callable[[Path], Server]] = {
        "samapi": lambda log: start_samapi(args.samapi_python, samapi_root, samapi_home, log),
        "qpsam": lambda log: start_qpsam(log.parent, log),
    }
    with tempfile.TemporaryDirectory(prefix="bench_vs_samapi-") as tmp:
        for i in range(args.rounds):
            # Alternate which server goes first, so that a drifting load favours neither.
            for name in list(starters) if i % 2 == 0 else list(starters)[::-1]:
                start = starters[name]
                folder = Path(tmp) / f"{name}{i}"
                folder.mkdir()
                server = start(folder / "server.log")
                try:
                    result = measure(server, bodies, decode if name == "qpsam" else None)
                except Exception:
                    print(f"--- {name} log (last lines) ---\n{server.log_tail()}", file=sys.stderr)
                    raise
                rounds[name].append(result)
                print(f"round {i + 1}/{args.rounds} {name}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in result.values.items()), file=sys.stderr)
    load_after = os.getloadavg()

    print(f"\nqpsam serve vs samapi {rounds['samapi'][0].version}: MobileSAM vit_t, CPU, 1 worker each, loopback; "
          f"{args.rounds} round(s), each server started fresh per round; median over requests, then over rounds")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable); "
          f"load average before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (1/5/15 min)")
    print(f"samapi: {samapi_versions(args.samapi_python)}")
    print(f"qpsam: {qpsam_versions()}, engine {engine}\n")
    for line in table(rounds, args.repeat):
        print(line)
    cached = statistics.median(r.values["same_view"] for r in rounds["qpsam"])
    floor = statistics.median(r.values["decoder"] for r in rounds["qpsam"])
    print(f"\nqpsam in-process decoder, same boxes on the same view, each timed right after the server answered it "
          f"(median of {args.repeat}): {floor * 1000:.1f} ms; qpsam's cached request over HTTP ({cached * 1000:.1f} ms) "
          f"/ decoder = {cached / floor:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
