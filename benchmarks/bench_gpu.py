"""Encoder images/s and tiled automask tiles/s on a GPU: fp32 against bf16 autocast, one tile per encoder call
against several (``TorchSamEngine.encode_batch``), in one run.

Needs a CUDA device for numbers that mean anything (``--device cpu`` runs it small, as a smoke check). Images are
1024x1024 RGB tiles cut from the bundled nuclei image (tiled 2x2 and flipped, so every tile is real tissue and
different); the automask rows run ``automask_region`` over a grid of such tiles.

    PYTHONPATH=src python benchmarks/bench_gpu.py --device cuda --images 32 --tiles 16
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]


def tiles_from_nuclei(count: int, size: int) -> list[np.ndarray]:
    """``count`` different ``size`` x ``size`` RGB tiles made of the 512x512 nuclei image."""
    import tifffile

    from qpsam.sam import to_rgb8

    rgb = to_rgb8(tifffile.imread(REPO / "examples" / "data" / "nuclei.tif"))
    reps = -(-size // rgb.shape[0])
    out = []
    for i in range(count):
        turned = np.rot90(rgb, i % 4)
        if (i // 4) % 2:
            turned = turned[:, ::-1]
        big = np.tile(turned, (reps, reps, 1))[:size, :size]
        out.append(np.ascontiguousarray(np.roll(big, 37 * (i // 8), axis=(0, 1))))
    return out


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="vit_t", help="a SAM1-family type whose weights are at hand")
    parser.add_argument("--images", type=int, default=32, help="tiles encoded per encoder row")
    parser.add_argument("--batch", type=int, default=4, help="tiles per encoder call in the batched rows")
    parser.add_argument("--tiles", type=int, default=16, help="tiles in the automask rows (a square grid)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--size", type=int, default=1024, help="tile side in pixels")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated; default fp32,bf16 on CUDA and fp32 elsewhere (bf16 is slow on CPUs)")
    args = parser.parse_args(argv)
    precisions = (args.precisions or ("fp32,bf16" if args.device.startswith("cuda") else "fp32")).split(",")

    import torch

    from qpsam.engines import EmbeddingCache, load_engine
    from qpsam.jobs import ArraySource
    from qpsam.jobs.automask import AutomaskOptions, automask_region
    from qpsam.sam import AutomaskParams

    images = tiles_from_nuclei(args.images, args.size)
    rows: list[tuple[str, str, float, str]] = []

    def engine(precision: str, batch: int) -> Any:
        e = load_engine(args.model, device=args.device, engine="torch", precision=precision,
                        cache=EmbeddingCache(max_bytes=8 << 30))
        e.encode_batch_size = batch
        return e

    for precision in precisions:
        for batch in (1, args.batch):
            e = engine(precision, batch)
            e.encode_batch(images[: max(1, batch)])  # warm-up: kernels, allocator
            e.cache.clear()
            sync(args.device)
            t0 = time.perf_counter()
            e.encode_batch(images)
            sync(args.device)
            seconds = time.perf_counter() - t0
            rows.append(("encoder", f"{precision}, {batch} per call", len(images) / seconds, "images/s"))
            print(f"  encoder {precision} batch {batch}: {len(images) / seconds:.2f} images/s", file=sys.stderr)
            del e
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()

    side = max(1, int(round(args.tiles**0.5)))
    grid = np.concatenate([np.concatenate(images[r * side:(r + 1) * side] or images[:side], axis=1)
                           for r in range(side)], axis=0)
    options = AutomaskOptions(AutomaskParams(points_per_side=args.points_per_side), tile_size=args.size, overlap=0)
    source = ArraySource(grid, "grid")
    for precision in precisions:
        for batch in (1, args.batch):
            e = engine(precision, batch)
            automask_region(e, ArraySource(grid[: args.size, : args.size], "warm-up"), options=options)
            sync(args.device)
            t0 = time.perf_counter()
            objects = automask_region(e, source, options=options)
            sync(args.device)
            seconds = time.perf_counter() - t0
            rows.append(("automask", f"{precision}, {batch} per call", side * side / seconds,
                         f"tiles/s; {len(objects)} objects"))
            print(f"  automask {precision} batch {batch}: {side * side / seconds:.3f} tiles/s", file=sys.stderr)
            del e

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"\n{args.model}, {name}, torch {torch.__version__}, tiles {args.size}x{args.size}, "
          f"{args.images} images, automask {side}x{side} tiles at {args.points_per_side} points/side\n")
    print("| work | setting | rate | unit |")
    print("| --- | --- | ---: | --- |")
    for work, setting, rate, unit in rows:
        print(f"| {work} | {setting} | {rate:.3f} | {unit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
