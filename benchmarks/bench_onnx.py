"""ONNX Runtime engine against the plain PyTorch predictor used the way samapi uses it, in one run.

Same weights, same image (the 512x512 nuclei image of examples/data with its 125 ground-truth nuclei), the same
number of CPU threads for torch and onnxruntime. Prints one markdown table: each step's median time, the ratio
baseline / qpsam onnx, and the quality figures that make the ratio fair (IoU against the ground truth, masks
matched between the two automask generators).

    PYTHONPATH=src python benchmarks/bench_onnx.py --threads 2 --repeat 3

Rows:
* new view, one box: ``set_image`` + one box on an image not seen before (no embedding cache).
* 125 boxes after encoding: the plain predictor looped box by box (samapi's decode per request) against qpsam's
  batched decoder, which upscales each mask only in a window around its box; also qpsam onnx one by one,
  batched over the whole 256x256 grid (no box windows), and batched with every mask upsampled to the whole
  image (what a decoder graph with SAM's own post-processing does), to show what batching, box windows and
  low-resolution post-processing each bring.
* automask: segment-anything's (MobileSAM's) ``SamAutomaticMaskGenerator`` with the same parameters against
  qpsam's low-resolution generator on the onnx engine.

With OpenVINO installed, a second table compares the runtimes on what a user waits for on a new view (the encoder
and all 125 boxes) in the same run: ONNX Runtime fp32 (the onnx engine), OpenVINO fp32 and bf16 (the openvino
engine; bf16 only on a CPU with native bf16) and OpenVINO running every graph, each with the masks' IoU against
qpsam's torch engine in fp32 and the mean IoU against the ground truth; ``--threads-sweep`` adds OpenVINO at 1 and
2 threads. ``--runtimes-only`` prints that table alone:

    PYTHONPATH=src python benchmarks/bench_onnx.py --runtimes-only --repeat 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls and the last result."""
    times, result = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def paired(baseline: Callable[[], Any], ours: Callable[[], Any], repeat: int) -> tuple[float, float, Any, Any]:
    """Median seconds of ``baseline`` and ``ours`` called in turn (order swapped every round), so that both see
    the same load on a shared machine; and their last results."""
    times: tuple[list[float], list[float]] = ([], [])
    results: list[Any] = [None, None]
    for r in range(max(1, repeat)):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for which in order:
            fn = (baseline, ours)[which]
            t0 = time.perf_counter()
            results[which] = fn()
            times[which].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1]), results[0], results[1]


def gt_boxes(gt: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
    out = []
    for label in np.unique(gt)[1:]:
        ys, xs = np.nonzero(gt == label)
        out.append((int(label), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def matched(ours: list[np.ndarray], ref: list[np.ndarray], threshold: float = 0.9) -> tuple[float, float]:
    """Share of ``ref`` masks with a mask in ``ours`` at IoU >= threshold, and the other way round."""
    if not ours or not ref:
        return 0.0, 0.0
    def box(m: np.ndarray) -> list[int]:
        xs, ys = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
        return [xs[0], xs[-1], ys[0], ys[-1]] if xs.size else [-1, -2, -1, -2]

    bo, br = np.array([box(m) for m in ours]), np.array([box(m) for m in ref])
    matrix = np.zeros((len(ours), len(ref)))
    for i, m in enumerate(ours):
        near = np.flatnonzero((br[:, 0] <= bo[i, 1]) & (br[:, 1] >= bo[i, 0]) & (br[:, 2] <= bo[i, 3])
                              & (br[:, 3] >= bo[i, 2]))
        for j in near:
            matrix[i, j] = iou(m, ref[j])
    return float((matrix.max(axis=0) >= threshold).mean()), float((matrix.max(axis=1) >= threshold).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch and onnxruntime")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of each fast step (median reported)")
    parser.add_argument("--points-per-side", type=int, default=32, help="automask grid")
    parser.add_argument("--no-automask", action="store_true")
    parser.add_argument("--box-repeat", type=int, default=1, help="rounds of the 125-box comparison")
    parser.add_argument("--automask-repeat", type=int, default=1, help="rounds of the automask comparison")
    parser.add_argument("--runtimes-only", action="store_true", help="only the runtime table (onnx vs openvino)")
    parser.add_argument("--threads-sweep", action="store_true", help="runtime table: openvino at 1 and 2 threads")
    args = parser.parse_args(argv)
    if args.runtimes_only:
        return runtimes(args)

    import onnxruntime
    import tifffile
    import torch

    torch.set_num_threads(args.threads)
    from qpsam.engines import load_engine
    from qpsam.engines._torch import load_into, read_checkpoint
    from qpsam.engines.lowres import masks_from_lowres, upsample_roi
    from qpsam.engines.onnx_sam import _encode_prompts
    from qpsam.engines.torch_sam import build_sam1
    from qpsam.engines.weights import resolve_weights
    from qpsam.sam import AutomaskParams, Prompt, to_rgb8

    data = REPO / "examples" / "data"
    rgb = to_rgb8(tifffile.imread(data / "nuclei.tif"))
    gt = tifffile.imread(data / "nuclei_mask.tif")
    boxes = gt_boxes(gt)
    weights = resolve_weights("vit_t")
    rows: list[tuple[str, str, float, str]] = []

    def row(step: str, who: str, seconds: float, note: str = "") -> float:
        rows.append((step, who, seconds, note))
        print(f"  {step:<34} {who:<32} {seconds:8.3f} s  {note}", file=sys.stderr, flush=True)
        return seconds

    # ---- engines: ONNX Runtime (exported once beforehand, not timed) and the plain predictor
    t0 = time.perf_counter()
    engine = load_engine("vit_t", weights, device="cpu", engine="onnx", cache=False, threads=args.threads)
    print(f"# onnx engine ready in {time.perf_counter() - t0:.1f} s (export on first use: "
          f"{'yes' if engine.files.rebuilt else 'no'})", file=sys.stderr)
    model, predictor_cls = build_sam1("vit_t")
    load_into(model, read_checkpoint(weights, "vit_t"), weights, "vit_t")
    predictor = predictor_cls(model.eval())

    views = [np.ascontiguousarray(np.rot90(rgb, k)) for k in range(4)]  # new pixels each time: no cache
    first = boxes[0][1]
    counter = iter(range(10**6))

    def plain_view() -> Any:
        view = views[next(counter) % len(views)]
        predictor.set_image(view)
        return predictor.predict(box=np.array(first), multimask_output=False)

    def onnx_view() -> Any:
        view = views[next(counter) % len(views)]
        engine.set_image(view)
        return engine.predict([Prompt(box=first)])

    with torch.inference_mode():
        plain_view()  # warm-up (first call allocates)
        onnx_view()
        b, o, _, _ = paired(plain_view, onnx_view, args.repeat)
        b_view = row("new view, one box", "plain predictor (torch)", b)
        o_view = row("new view, one box", "qpsam onnx", o)
        b, o, _, _ = paired(lambda: predictor.set_image(rgb), lambda: engine.set_image(rgb), args.repeat)
        b_enc = row("image encoder only", "plain predictor (torch)", b)
        o_enc = row("image encoder only", "qpsam onnx", o)

        # ---- 125 boxes on the encoded image
        predictor.set_image(rgb)
        engine.set_image(rgb)
        prompts = [Prompt(box=b) for _, b in boxes]

        def plain_loop() -> list[np.ndarray]:
            return [predictor.predict(box=np.array(b), multimask_output=False)[0][0] for _, b in boxes]

        b, o, plain_masks, ours = paired(plain_loop, lambda: engine.predict(prompts), args.box_repeat)
        plain_quality = np.mean([iou(m, gt == label) for (label, _), m in zip(boxes, plain_masks)])
        b_boxes = row(f"{len(boxes)} boxes after encoding", "plain predictor, looped", b,
                      f"mean IoU vs GT {plain_quality:.3f}")
        ours_quality = np.mean([iou(m[0].mask, gt == label) for (label, _), m in zip(boxes, ours)])
        agree = np.mean([iou(a[0].mask, b) for a, b in zip(ours, plain_masks)])
        o_boxes = row(f"{len(boxes)} boxes after encoding", "qpsam onnx, batched + box windows", o,
                      f"mean IoU vs GT {ours_quality:.3f}; vs plain {agree:.3f}")
        s, _ = timed(lambda: [engine.predict([p]) for p in prompts], 1)
        row(f"{len(boxes)} boxes after encoding", "qpsam onnx, looped + box windows", s)

        def batched_grid() -> np.ndarray:
            coords, labels = _encode_prompts(prompts, True)
            low, _ = engine.decode(coords, labels, channels=slice(0, 1))
            return masks_from_lowres(low[:, 0], engine.frame())

        s, _ = timed(batched_grid, args.repeat)
        row(f"{len(boxes)} boxes after encoding", "qpsam onnx, batched, whole 256 grid", s)

        def batched_full() -> list[np.ndarray]:
            coords, labels = _encode_prompts(prompts, True)
            low, _ = engine.decode(coords, labels, channels=slice(0, 1))
            frame = engine.frame()
            h, w = frame.original
            return [upsample_roi(low[i, 0], frame, 0, h, 0, w) > 0 for i in range(len(prompts))]

        s, _ = timed(batched_full, args.repeat)
        row(f"{len(boxes)} boxes after encoding", "qpsam onnx, batched + full-size", s)

        # ---- automask
        b_amg = o_amg = float("nan")
        amg_note = ""
        if not args.no_automask:
            from mobile_sam import SamAutomaticMaskGenerator

            pps = args.points_per_side
            params = AutomaskParams(points_per_side=pps, include_image_edge=True)  # SAM keeps whole-image masks
            gen = SamAutomaticMaskGenerator(
                model, points_per_side=pps, points_per_batch=params.points_per_batch,
                pred_iou_thresh=params.pred_iou_thresh, stability_score_thresh=params.stability_score_thresh,
                box_nms_thresh=params.box_nms_thresh,
            )
            b, o, ref, got = paired(lambda: gen.generate(rgb), lambda: engine.automask(rgb, params),
                                    args.automask_repeat)
            b_amg = row(f"automask {pps} points/side", "segment-anything generator (torch)", b, f"{len(ref)} masks")
            ref_found, ours_found = matched([m.mask for m in got], [r["segmentation"] for r in ref])
            amg_note = (f"{len(got)} masks; {ref_found:.1%} of SAM's matched, {ours_found:.1%} of ours matched "
                        "(IoU >= 0.9)")
            o_amg = row(f"automask {pps} points/side", "qpsam onnx, low-res generator", o, amg_note)

    # ---- table
    cpu = platform.processor() or platform.machine()
    print(f"\nMobileSAM vit_t, {args.threads} threads, torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, {cpu}, {platform.python_version()}; image examples/data/nuclei.tif "
          f"({rgb.shape[1]}x{rgb.shape[0]}, {len(boxes)} GT nuclei); median of {args.repeat}\n")
    print("| step | engine | time (s) | notes |")
    print("| --- | --- | ---: | --- |")
    for step, who, seconds, note in rows:
        print(f"| {step} | {who} | {seconds:.3f} | {note} |")
    print("\n| ratio (plain / qpsam onnx, same run) | value | target |")
    print("| --- | ---: | ---: |")
    print(f"| new view, one box (encoder + decoder) | {b_view / o_view:.1f}x | >= 3x |")
    print(f"| image encoder | {b_enc / o_enc:.1f}x | |")
    print(f"| {len(boxes)} boxes after encoding | {b_boxes / o_boxes:.1f}x | >= 5x |")
    print(f"| mean IoU vs GT, qpsam onnx - plain | {ours_quality - plain_quality:+.3f} | within 0.01 |")
    if not args.no_automask:
        print(f"| automask {args.points_per_side} points/side | {b_amg / o_amg:.1f}x | >= 3x |")
    return 0


def runtimes(args: argparse.Namespace) -> int:
    """The runtime table: one new view with the 125 GT boxes per engine, rounds interleaved across engines."""
    import tifffile
    import torch

    torch.set_num_threads(args.threads)
    from qpsam.engines import load_engine
    from qpsam.engines.openvino_sam import host_native_bf16, openvino_available
    from qpsam.engines.weights import resolve_weights
    from qpsam.sam import Prompt, to_rgb8

    data = REPO / "examples" / "data"
    rgb = to_rgb8(tifffile.imread(data / "nuclei.tif"))
    gt = tifffile.imread(data / "nuclei_mask.tif")
    boxes = gt_boxes(gt)
    prompts = [Prompt(box=b) for _, b in boxes]
    weights = resolve_weights("vit_t")
    common: dict[str, Any] = {"device": "cpu", "cache": False}
    reference = load_engine("vit_t", weights, engine="torch", **common)
    reference.set_image(rgb)
    ref_masks = [m[0].mask for m in reference.predict(prompts)]
    ref_truth = float(np.mean([iou(m, gt == label) for (label, _), m in zip(boxes, ref_masks)]))

    engines: list[tuple[str, Any]] = [("onnx (ONNX Runtime) fp32", load_engine(
        "vit_t", weights, engine="onnx", threads=args.threads, **common))]
    if openvino_available():
        def ov(label: str, threads: int, **options: Any) -> None:
            engines.append((label, load_engine("vit_t", weights, engine="openvino", threads=threads, **common,
                                               **options)))

        ov("openvino fp32", args.threads, precision="fp32")
        if host_native_bf16():
            ov("openvino bf16", args.threads, precision="bf16")
        ov("openvino fp32, every graph", args.threads, precision="fp32",
           openvino_graphs=("encoder", "prepare", "decoder", "upscale"))
        if args.threads_sweep:
            for threads in (1, 2):
                if threads != args.threads:
                    ov(f"openvino fp32, {threads} thread(s)", threads, precision="fp32")
    else:
        print("# openvino is not installed: pip install 'qpsam[openvino]'", file=sys.stderr)

    views = [np.ascontiguousarray(np.rot90(rgb, k)) for k in range(4)]  # new pixels each round: no cache
    times: dict[str, list[float]] = {label: [] for label, _ in engines}
    for _, engine in engines:  # warm-up: first runs allocate
        engine.set_image(views[0])
        engine.predict(prompts[:4])
    for r in range(max(1, args.repeat)):
        order = engines if r % 2 == 0 else engines[::-1]
        for label, engine in order:
            t0 = time.perf_counter()
            engine.set_image(views[(r + 1) % len(views)])
            engine.predict(prompts)
            times[label].append(time.perf_counter() - t0)

    base = statistics.median(times[engines[0][0]])
    print(f"\nMobileSAM vit_t on examples/data/nuclei.tif, new view + {len(boxes)} box prompts, {args.threads} "
          f"threads unless said, {platform.processor() or platform.machine()}; median of {args.repeat}; "
          f"torch fp32 reference mean IoU vs GT {ref_truth:.4f}\n")
    print("| engine | s per new view | ORT fp32 / this | mask IoU vs torch fp32 mean (min) | IoU vs GT (diff) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, engine in engines:
        engine.set_image(rgb)
        masks = [m[0].mask for m in engine.predict(prompts)]
        agree = [iou(a, b) for a, b in zip(masks, ref_masks)]
        truth = float(np.mean([iou(m, gt == lab) for (lab, _), m in zip(boxes, masks)]))
        seconds = statistics.median(times[label])
        print(f"| {label} | {seconds:.3f} | {base / seconds:.2f}x | {np.mean(agree):.4f} ({min(agree):.3f}) | "
              f"{truth:.4f} ({truth - ref_truth:+.4f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
