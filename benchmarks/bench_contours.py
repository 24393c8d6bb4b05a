"""Masks to polygons: OpenCV (what qpsam uses) against scikit-image, at 1k and 4k pixels a side.

Both tracers get the same masks: one big blob with holes (a SAM mask of a tissue region) and many small discs (an
automask of nuclei). Reported per tracer: time, and correctness as the polygons' area against the pixel count (QuPath's
pixel-edge convention makes them equal) and whether the geometry is valid.

    python benchmarks/bench_contours.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from qpsam.geometry import mask_to_geometry


def make_masks(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    blob = ((yy - c) ** 2 / (0.4 * size) ** 2 + (xx - c) ** 2 / (0.3 * size) ** 2) < 1
    for _ in range(20):  # holes
        hy, hx, r = rng.uniform(0.3 * size, 0.7 * size), rng.uniform(0.35 * size, 0.65 * size), size / 60
        blob &= (yy - hy) ** 2 + (xx - hx) ** 2 > r**2
    discs = np.zeros((size, size), bool)
    r = max(3, size // 150)
    for cy, cx in rng.uniform(r, size - r, size=(size // 8, 2)):
        y0, y1, x0, x1 = int(cy - r), int(cy + r + 1), int(cx - r), int(cx + r + 1)
        discs[y0:y1, x0:x1] |= (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 < r**2
    return {"blob with holes": blob, "many discs": discs}


def trace_skimage(mask: np.ndarray) -> MultiPolygon | Polygon:
    """scikit-image's marching squares at level 0.5, rings nested into polygons with holes by shapely."""
    from skimage import measure

    padded = np.pad(mask, 1).astype(np.uint8)
    rings = [Polygon(c[:, ::-1] - 1 + 0.5) for c in measure.find_contours(padded, 0.5) if len(c) >= 4]
    # Even-odd nesting: symmetric difference of all rings gives holes and pieces.
    geometry = shapely.Polygon()
    for ring in sorted(rings, key=lambda p: -p.area):
        geometry = geometry.symmetric_difference(ring)
    return geometry


def trace_opencv(mask: np.ndarray) -> MultiPolygon | Polygon | None:
    return mask_to_geometry(mask)


def timed(fn, mask: np.ndarray, repeat: int) -> tuple[float, object]:
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(mask)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    args = parser.parse_args()
    print(f"{'size':>5} | {'mask':<16} | {'tracer':<8} | {'time s':>8} | {'ratio':>6} | {'area err %':>10} | valid")
    print("-" * 76)
    for size in args.sizes:
        for name, mask in make_masks(size).items():
            pixels = int(mask.sum())
            base = None
            for tracer, fn in (("opencv", trace_opencv), ("skimage", trace_skimage)):
                seconds, geometry = timed(fn, mask, args.repeat)
                base = base or seconds
                err = 100 * abs(geometry.area - pixels) / pixels
                print(f"{size:>5} | {name:<16} | {tracer:<8} | {seconds:>8.3f} | {seconds / base:>5.1f}x | "
                      f"{err:>10.3f} | {geometry.is_valid}")


if __name__ == "__main__":
    main()
