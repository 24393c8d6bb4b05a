"""Engine speed: qpsam's engine against the plain predictor used the way samapi uses it, in the same run.

Prints a table: model load, image encoder, decoder per prompt, a batch of 64 prompts, a second prompt on a cached
image, automask at 16 (and optionally 32) points per side, each with peak memory; then the ratios.

    PYTHONPATH=src python benchmarks/bench_engines.py                     # vit_t, CPU, one thread
    PYTHONPATH=src python benchmarks/bench_engines.py --device cuda --automask-32

The baseline is segment-anything's/mobile_sam's ``SamPredictor`` and ``SamAutomaticMaskGenerator``: one request
sets the image and decodes one prompt, as samapi does for each object the QuPath extension sends. Its 64-prompt
figure is measured over ``--baseline-requests`` requests and scaled to 64 (marked "scaled").
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

warnings.filterwarnings("ignore")


class PeakMemory:
    """Peak resident memory (CPU, sampled from /proc) and peak CUDA memory over a block."""

    def __init__(self) -> None:
        self.peak_rss = 0
        self.peak_cuda = 0

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @contextmanager
    def measure(self) -> Iterator["PeakMemory"]:
        import torch

        stop = threading.Event()
        self.peak_rss = self.rss()

        def sample() -> None:
            while not stop.wait(0.005):
                self.peak_rss = max(self.peak_rss, self.rss())

        thread = threading.Thread(target=sample, daemon=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak_rss = max(self.peak_rss, self.rss())
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                self.peak_cuda = torch.cuda.max_memory_allocated()


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, float, float, object]:
    """(median seconds, peak RSS GiB, peak CUDA GiB, last result) of ``repeat`` calls."""
    import torch

    times, result = [], None
    mem = PeakMemory()
    with mem.measure():
        for _ in range(repeat):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak_rss / 2**30, mem.peak_cuda / 2**30, result


def load_image(path: str | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    import tifffile

    if path:
        return tifffile.imread(path), None, path
    spec = importlib.util.find_spec("stardist")
    if spec and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
        if (folder / "img2d.tif").is_file():
            return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif"), "stardist img2d.tif"
    from skimage import data

    return data.immunohistochemistry(), None, "skimage immunohistochemistry"


def gt_boxes(gt: np.ndarray | None, shape: tuple[int, int], n: int) -> list[tuple[float, float, float, float]]:
    boxes = []
    if gt is not None:
        for label in np.unique(gt)[1:]:
            ys, xs = np.nonzero(gt == label)
            boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    rng = np.random.default_rng(0)
    h, w = shape
    while len(boxes) < n:
        x, y = rng.integers(0, w - 40), rng.integers(0, h - 40)
        boxes.append((float(x), float(y), float(x + 30), float(y + 30)))
    return boxes[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_t", choices=["vit_t", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--weights", help="weights file or name (default: resolve as qpsam does)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--image", help="a TIFF image (default: stardist's img2d.tif)")
    parser.add_argument("--batch", type=int, default=64, help="prompts in the batch figure")
    parser.add_argument("--baseline-requests", type=int, default=3, help="baseline requests measured for the batch")
    parser.add_argument("--automask-32", action="store_true", help="also automask at 32 points per side (slow on CPU)")
    parser.add_argument("--no-automask", action="store_true", help="skip automask")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from qpsam.engines import EmbeddingCache, load_engine
    from qpsam.engines._torch import load_into, pick_device, read_checkpoint
    from qpsam.engines.torch_sam import build_sam1
    from qpsam.engines.weights import resolve_weights
    from qpsam.sam import AutomaskParams, Prompt, to_rgb8

    image, gt, image_name = load_image(args.image)
    rgb = to_rgb8(image)
    boxes = gt_boxes(gt, rgb.shape[:2], args.batch)
    device = pick_device(args.device)
    weights = resolve_weights(args.model, args.weights)
    rows: list[tuple[str, str, float, float, float]] = []

    def row(what: str, who: str, seconds: float, rss: float, cuda: float) -> float:
        rows.append((what, who, seconds, rss, cuda))
        print(f"  {what:<38} {who:<18} {seconds:9.3f} s", file=sys.stderr, flush=True)
        return seconds

    print(f"# {args.model} on {device} ({args.threads} thread(s)), image {image_name} {rgb.shape[1]}x{rgb.shape[0]}",
          file=sys.stderr)

    # ---- qpsam
    cache = EmbeddingCache(max_bytes=512 << 20)
    s, r, c, engine = timed(lambda: load_engine(args.model, weights, device=str(device), cache=cache))
    row("model load", "qpsam", s, r, c)
    prompt = Prompt(box=boxes[0])
    s, r, c, _ = timed(lambda: engine.set_image(rgb))
    q_encode = row("image encoder (set_image)", "qpsam", s, r, c)
    other = np.ascontiguousarray(rgb[::-1])  # a new image: encoder + decoder

    def first_prompt() -> object:
        engine.set_image(other)
        return engine.predict([prompt])

    def second_prompt() -> object:
        engine.set_image(other)  # same pixels again: the cache answers
        return engine.predict([Prompt(box=boxes[1])])

    s, r, c, _ = timed(first_prompt)
    q_first = row("first prompt on a new image", "qpsam", s, r, c)
    s, r, c, _ = timed(second_prompt, repeat=5)
    q_second = row("second prompt, cached image", "qpsam", s, r, c)
    engine.set_image(rgb)
    s, r, c, _ = timed(lambda: engine.predict([prompt]), repeat=5)
    q_prompt = row("decoder, 1 prompt", "qpsam", s, r, c)
    batch = [Prompt(box=b) for b in boxes]
    s, r, c, _ = timed(lambda: engine.predict(batch))
    q_batch = row(f"decoder, batch of {len(batch)} prompts", "qpsam", s, r, c)
    q_amg: dict[int, float] = {}
    if not args.no_automask:
        for pps in [16] + ([32] if args.automask_32 else []):
            s, r, c, masks = timed(lambda pps=pps: engine.automask(rgb, AutomaskParams(points_per_side=pps)))
            q_amg[pps] = row(f"automask {pps} points/side ({len(masks)} masks)", "qpsam", s, r, c)

    # ---- baseline: the plain predictor, as samapi drives it
    def plain() -> object:
        model, predictor_cls = build_sam1(args.model)
        load_into(model, read_checkpoint(weights, args.model), weights, args.model)
        model.to(device).eval()
        return predictor_cls(model)

    s, r, c, predictor = timed(plain)
    row("model load", "plain predictor", s, r, c)

    def request(box: tuple[float, float, float, float]) -> object:
        predictor.set_image(rgb)
        return predictor.predict(box=np.array(box), multimask_output=False)

    s, r, c, _ = timed(lambda: predictor.set_image(rgb))
    b_encode = row("image encoder (set_image)", "plain predictor", s, r, c)
    s, r, c, _ = timed(lambda: request(boxes[0]), repeat=2)
    b_request = row("request: set_image + 1 prompt", "plain predictor", s, r, c)
    s, r, c, _ = timed(lambda: predictor.predict(box=np.array(boxes[0]), multimask_output=False), repeat=5)
    b_prompt = row("decoder, 1 prompt (image kept)", "plain predictor", s, r, c)
    k = max(1, min(args.baseline_requests, len(boxes)))
    s, r, c, _ = timed(lambda: [request(b) for b in boxes[:k]])
    b_batch = row(f"{len(boxes)} requests (scaled from {k})", "plain predictor", s * len(boxes) / k, r, c)
    s, r, c, _ = timed(lambda: [predictor.predict(box=np.array(b), multimask_output=False) for b in boxes])
    b_batch_kept = row(f"{len(boxes)} prompts one by one (image kept)", "plain predictor", s, r, c)
    b_amg: dict[int, float] = {}
    if not args.no_automask:
        if args.model == "vit_t":
            from mobile_sam import SamAutomaticMaskGenerator
        else:
            from segment_anything import SamAutomaticMaskGenerator
        for pps in q_amg:
            gen = SamAutomaticMaskGenerator(predictor.model, points_per_side=pps)
            s, r, c, masks = timed(lambda gen=gen: gen.generate(rgb))
            b_amg[pps] = row(f"automask {pps} points/side ({len(masks)} masks)", "plain predictor", s, r, c)

    # ---- table
    print(f"\n{args.model} on {device}, torch {torch.__version__}, {args.threads} CPU thread(s), "
          f"image {image_name} ({rgb.shape[1]}x{rgb.shape[0]})\n")
    print("| step | engine | time (s) | peak RSS (GiB) | peak CUDA (GiB) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for what, who, seconds, rss, cuda in rows:
        print(f"| {what} | {who} | {seconds:.3f} | {rss:.2f} | {cuda:.2f} |")
    print("\n| ratio | value |")
    print("| --- | ---: |")
    print(f"| first prompt on a new image / second prompt on the cached image (qpsam) | {q_first / q_second:.1f}x |")
    print(f"| samapi-way request / qpsam prompt on a cached image | {b_request / q_second:.1f}x |")
    print(f"| samapi-way {len(boxes)} requests / qpsam batch of {len(boxes)} | {b_batch / q_batch:.1f}x |")
    print(f"| plain predictor {len(boxes)} prompts (image kept) / qpsam batch | {b_batch_kept / q_batch:.2f}x |")
    print(f"| plain decoder per prompt / qpsam decoder per prompt | {b_prompt / q_prompt:.2f}x |")
    print(f"| plain encoder / qpsam encoder | {b_encode / q_encode:.2f}x |")
    for pps in q_amg:
        print(f"| plain automask {pps} / qpsam automask {pps} | {b_amg[pps] / q_amg[pps]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
