"""Whole slides with known ground truth: ``qpsam automask`` and ``qpsam detect`` on pyramidal OME-TIFFs.

Each slide is a mosaic of the bundled nuclei image (512x512, 125 annotated nuclei), every tile flipped and/or
rotated at random (seeded), written as a tiled, zlib-compressed, pyramidal OME-TIFF (sub-resolutions in SubIFDs, as
QuPath reads them) tile by tile, so that no level is ever held whole in memory. The same transforms applied to the
label mask give a ground-truth outline for every nucleus of the slide. Each slide goes into a QuPath project made
with qpsam's own API; the jobs run through the CLI as subprocesses (automask on the whole slide; detect with one box
annotation per ground-truth nucleus), and their results are read back from the project.

Per size and job: total wall time of the subprocess (start-up and model load included), tiles (automask) or
windows (detect) per second, objects per second, the subprocess's peak RSS, recall and precision at IoU >= 0.5
(one-to-one, greedy by IoU), seam duplicates (pairs of results overlapping by more than 20 % of the smaller one),
and the growth of time and memory with area against the smallest slide. The baseline, on the smallest slide in
the same run, is segment-anything's ``SamAutomaticMaskGenerator`` with the real MobileSAM weights run tile by tile
with the same tile size and overlap, its masks concatenated (the way users script it); it also runs in a
subprocess, so its time and memory are measured the same way. Detect is also set against its ideal, measured in
the same run just before it: one encoder pass per window of its plan plus the decoder on every box in its batches.

    PYTHONPATH=src python benchmarks/bench_wsi.py --sizes 4096,8192,16384 --json wsi.json
    PYTHONPATH=src python benchmarks/bench_wsi.py --sizes 1024 --points-per-side 8 --tile 512 --overlap 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

PROMPT_CLASS = "Nucleus"
AUTOMASK_CLASS = "Automask"
QUALITY = "SAM Quality"  # the measurement qpsam's detect writes on each result


# ---------------------------------------------------------------- slides with ground truth (no model)


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square array: ``k % 4`` quarter turns, mirrored when ``k >= 4``."""
    out = np.rot90(a, k % 4)
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


@dataclass(frozen=True)
class SlideLayout:
    """A square slide of ``size`` pixels made of ``tile``-pixel copies of the source; ``transforms[row, col]``
    is the :func:`dihedral` transform of each copy, or -1 for an empty (background) tile."""

    size: int
    tile: int
    transforms: np.ndarray

    @property
    def rows(self) -> int:
        return self.transforms.shape[0]

    @property
    def cols(self) -> int:
        return self.transforms.shape[1]


def make_layout(size: int, tile: int, seed: int = 0, blank: float = 0.0, tissue: float = 1.0) -> SlideLayout:
    """A layout with a seeded random transform per tile, and about ``blank`` of the tiles left empty (to measure
    skipping background); with ``tissue`` < 1 only the copies whose centre lies in a centred disc of that share of
    the slide's area hold tissue (one piece of tissue on empty glass, as on a real slide). ``size`` must be a
    multiple of the source ``tile``."""
    if size <= 0 or size % tile:
        raise ValueError(f"slide size {size} must be a positive multiple of the source image's side ({tile})")
    if not 0 < tissue <= 1:
        raise ValueError(f"tissue must be in (0, 1], got {tissue}")
    n = size // tile
    rng = np.random.default_rng(seed)
    transforms = rng.integers(0, 8, size=(n, n))
    transforms[rng.random((n, n)) < blank] = -1
    if tissue < 1:
        centres = (np.arange(n) + 0.5) * tile - size / 2
        radius = size * np.sqrt(tissue / np.pi)
        transforms[np.hypot(centres[:, None], centres[None, :]) > radius] = -1
    return SlideLayout(size, tile, transforms)


def pool(a: np.ndarray, d: int) -> np.ndarray:
    """Mean of ``d`` x ``d`` blocks, rounded back to the array's dtype (a pyramid level's pixels)."""
    if d == 1:
        return a
    h, w = a.shape
    out = a.reshape(h // d, d, w // d, d).mean(axis=(1, 3))
    return np.rint(out).astype(a.dtype) if np.issubdtype(a.dtype, np.integer) else out.astype(a.dtype)


def level_downsamples(size: int, source_tile: int, min_side: int) -> list[int]:
    """Downsamples 1, 2, 4, ... while the level keeps at least ``min_side`` pixels and a source copy at least
    one pixel (so that every level is an exact mosaic of pooled copies)."""
    out = [1]
    while size // (out[-1] * 2) >= min_side and source_tile % (out[-1] * 2) == 0:
        out.append(out[-1] * 2)
    return out


class SlidePixels:
    """Pixels of any region of any level of a slide, made on demand from the pooled, transformed source."""

    def __init__(self, source: np.ndarray, layout: SlideLayout, downsamples: Sequence[int]) -> None:
        if source.ndim != 2 or source.shape != (layout.tile, layout.tile):
            raise ValueError(f"the source must be a 2-D {layout.tile}x{layout.tile} image, got {source.shape}")
        self.layout = layout
        self.dtype = source.dtype
        self.background = np.percentile(source, 5).astype(source.dtype)  # what an empty tile holds
        self.downsamples = list(downsamples)
        # Pooling each transformed copy is exact: the copies' edges fall on every level's pixel edges.
        self.pooled = [[pool(dihedral(source, k), d) for k in range(8)] for d in self.downsamples]

    def level_size(self, level: int) -> int:
        return self.layout.size // self.downsamples[level]

    def region(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Level pixels [y0:y1, x0:x1]; outside the slide they are 0."""
        s = self.layout.tile // self.downsamples[level]
        out = np.zeros((y1 - y0, x1 - x0), self.dtype)
        for r in range(max(0, y0 // s), min(self.layout.rows, -(-y1 // s))):
            for c in range(max(0, x0 // s), min(self.layout.cols, -(-x1 // s))):
                k = int(self.layout.transforms[r, c])
                block = self.pooled[level][k] if k >= 0 else np.full((s, s), self.background, self.dtype)
                ty0, ty1 = max(y0, r * s), min(y1, (r + 1) * s)
                tx0, tx1 = max(x0, c * s), min(x1, (c + 1) * s)
                out[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = block[ty0 - r * s : ty1 - r * s, tx0 - c * s : tx1 - c * s]
        return out

    def tiles(self, level: int, tile: int) -> Iterator[np.ndarray]:
        """The level's TIFF tiles in row-major order, padded to full tiles (as TIFF stores edge tiles)."""
        n = self.level_size(level)
        for y in range(0, n, tile):
            for x in range(0, n, tile):
                yield self.region(level, y, y + tile, x, x + tile)


def write_slide(path: str | os.PathLike[str], source: np.ndarray, layout: SlideLayout, *, tile: int = 256,
                compression: str = "zlib", min_side: int | None = None) -> list[int]:
    """Write the slide as a tiled pyramidal OME-TIFF (levels in SubIFDs), streaming one tile at a time.

    Returns the downsamples of the levels written.
    """
    import tifffile

    downsamples = level_downsamples(layout.size, layout.tile, min_side or tile)
    pixels = SlidePixels(source, layout, downsamples)
    options: dict[str, Any] = dict(dtype=source.dtype, tile=(tile, tile), compression=compression,
                                   photometric="minisblack")
    with tifffile.TiffWriter(path, bigtiff=layout.size > 8192, ome=True) as tif:
        for level in range(len(downsamples)):
            n = pixels.level_size(level)
            extra: dict[str, Any] = (
                dict(subifds=len(downsamples) - 1, metadata={"axes": "YX"}) if level == 0 else dict(subfiletype=1)
            )
            tif.write(pixels.tiles(level, tile), shape=(n, n), **options, **extra)
    return downsamples


def label_stride(labels: np.ndarray) -> int:
    """Ids per slide tile: ground-truth id = tile index * stride + the source's label."""
    return int(labels.max()) + 1


def tile_labels(labels: np.ndarray, layout: SlideLayout, row: int, col: int) -> np.ndarray:
    """The slide's label image under tile (row, col), with ids unique across the slide (uint32, 0 = background)."""
    k = int(layout.transforms[row, col])
    if k < 0:
        return np.zeros(labels.shape, np.uint32)
    out = dihedral(labels, k).astype(np.uint32)
    out[out > 0] += np.uint32((row * layout.cols + col) * label_stride(labels))
    return out


@dataclass(frozen=True)
class Truth:
    """One ground-truth nucleus of the slide: its id (as in :func:`tile_labels`) and outline in slide pixels."""

    id: int
    geometry: Any


def ground_truth(labels: np.ndarray, layout: SlideLayout) -> list[Truth]:
    """Every nucleus of the slide, outlined once per transform and translated to each tile."""
    from scipy import ndimage
    from shapely import affinity

    from qpsam.geometry import Region, mask_to_geometry

    stride = label_stride(labels)
    base: list[list[tuple[int, Any]]] = []
    for k in range(8):
        lab = dihedral(labels, k)
        shapes = []
        for index, found in enumerate(ndimage.find_objects(lab)):
            if found is None:
                continue
            ys, xs = found
            region = Region(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
            shapes.append((index + 1, mask_to_geometry(lab[ys, xs] == index + 1, region)))
        base.append(shapes)
    out = []
    for r in range(layout.rows):
        for c in range(layout.cols):
            offset = (r * layout.cols + c) * stride
            k = int(layout.transforms[r, c])
            for value, geometry in base[k] if k >= 0 else []:
                out.append(Truth(offset + value, affinity.translate(geometry, c * layout.tile, r * layout.tile)))
    return out


# ---------------------------------------------------------------- scoring (no model)


@dataclass(frozen=True)
class Matching:
    """Objects matched one-to-one to ground truth at an IoU threshold."""

    found: int
    truths: int
    matched: int

    @property
    def precision(self) -> float:
        return self.matched / self.found if self.found else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.truths if self.truths else 0.0


def _valid(geoms: Sequence[Any]) -> np.ndarray:
    import shapely

    arr = np.asarray(list(geoms), dtype=object)
    if len(arr):
        bad = ~shapely.is_valid(arr)
        if bad.any():
            arr[bad] = shapely.make_valid(arr[bad])
    return arr


def match(found: Sequence[Any], truths: Sequence[Any], threshold: float = 0.5) -> Matching:
    """Match result geometries to ground-truth geometries one to one, greedily by IoU, keeping IoU >= threshold.

    Candidate pairs come from an R-tree of the ground truth (only pairs whose outlines intersect are measured).
    """
    import shapely

    f, t = _valid(found), _valid(truths)
    if not len(f) or not len(t):
        return Matching(len(f), len(t), 0)
    fi, ti = shapely.STRtree(t).query(f, predicate="intersects")
    inter = shapely.area(shapely.intersection(f[fi], t[ti]))
    union = shapely.area(f)[fi] + shapely.area(t)[ti] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = np.flatnonzero(iou >= threshold)
    used_f: set[int] = set()
    used_t: set[int] = set()
    for p in keep[np.argsort(-iou[keep], kind="stable")]:
        a, b = int(fi[p]), int(ti[p])
        if a not in used_f and b not in used_t:
            used_f.add(a)
            used_t.add(b)
    return Matching(len(f), len(t), len(used_f))


def seam_duplicates(geoms: Sequence[Any], fraction: float = 0.2) -> np.ndarray:
    """Pairs (i, j), i < j, of geometries whose overlap exceeds ``fraction`` of the smaller one's area."""
    import shapely

    g = _valid(geoms)
    if len(g) < 2:
        return np.zeros((0, 2), int)
    a, b = shapely.STRtree(g).query(g, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    inter = shapely.area(shapely.intersection(g[a], g[b]))
    areas = shapely.area(g)
    dup = inter > fraction * np.minimum(areas[a], areas[b])
    return np.stack([a[dup], b[dup]], axis=1)


def tile_origins(size: int, tile: int, overlap: int) -> list[int]:
    """Origins of tiles of ``tile`` pixels stepping by ``tile - overlap``; the last one ends at the slide's edge."""
    if tile >= size:
        return [0]
    step = max(1, tile - overlap)
    out = list(range(0, size - tile, step))
    return out + [size - tile]


# ---------------------------------------------------------------- subprocess runs


@dataclass
class Child:
    seconds: float
    rss_mib: float
    returncode: int


def run_child(cmd: Sequence[str], env: dict[str, str], log: Path) -> Child:
    """Run one subprocess to its end; its wall time and its own peak RSS (``wait4``, not the children's max)."""
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen so it does not wait again
    return Child(seconds, usage.ru_maxrss / 1024, proc.returncode)


@dataclass
class Run:
    """One job on one slide."""

    size: int
    job: str
    seconds: float
    rss_mib: float
    units: int
    objects: int
    recall: float
    precision: float
    duplicates: int
    truths: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def units_per_s(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0

    @property
    def objects_per_s(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("QPSAM_PROGRESS_SECONDS", "30")
    return env


def warm_up(args: argparse.Namespace, work: Path) -> None:
    """Load qpsam's engine once, untimed, so that a first-use ONNX export is not charged to the first job."""
    code = ("from qpsam.engines import load_engine; "
            f"load_engine('vit_t', device='cpu', engine={args.engine!r}, cache=False)")
    child = run_child([sys.executable, "-c", code], child_env(args.threads), work / "warm-up.log")
    if child.returncode:
        tail = (work / "warm-up.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"qpsam's engine did not load (exit {child.returncode}):\n{tail}")
    say(f"engine loaded once, untimed ({child.seconds:.1f} s)")


def build_project(folder: Path, slide: Path, truths: Sequence[Truth] | None) -> Path:
    """A native QuPath project holding the slide, with one box annotation per ground-truth nucleus if given."""
    from shapely.geometry import box

    from qpsam.objects import PathClass, PathObject
    from qpsam.project import open_project

    prompt = PathClass(PROMPT_CLASS, (230, 60, 60))
    with open_project(folder, "x", backend="native") as project:
        entry = project.add_image(slide)
        if truths:
            entry.add_objects([PathObject(box(*t.geometry.bounds), path_class=prompt) for t in truths])
        project.path_classes = [prompt, PathClass(AUTOMASK_CLASS, (60, 160, 230))]
        project.save()
    return folder


def read_results(folder: Path, job: str) -> list[Any]:
    from qpsam.project import open_project

    with open_project(folder, "r", backend="native") as project:
        objects = project.images[0].objects
        if job == "automask":
            return [o.geometry for o in objects if o.class_name == AUTOMASK_CLASS]
        return [o.geometry for o in objects if QUALITY in o.measurements]


def run_qpsam(job: str, size: int, slide: Path, truths: list[Truth], args: argparse.Namespace, work: Path) -> Run:
    folder = work / f"project-{job}"
    if folder.exists():
        shutil.rmtree(folder)
    build_project(folder, slide, truths if job == "detect" else None)
    ideal = run_ideal(size, folder, args, work) if job == "detect" else {}
    report = work / f"{job}-report.json"
    cmd = [sys.executable, "-m", "qpsam.cli", job, str(folder), "--backend", "native", "--model", "vit_t",
           "--engine", args.engine, "--device", "cpu", "--report", str(report)]
    if job == "automask":
        cmd += ["--points-per-side", str(args.points_per_side), "--tile-size", str(args.tile),
                "--overlap", str(args.overlap), "--class", AUTOMASK_CLASS]
    say(f"{size}: qpsam {job} ({len(truths)} GT nuclei{', as box prompts' if job == 'detect' else ''})")
    env = child_env(args.threads)
    stats_file = work / f"{job}-stats.jsonl"
    stats_file.unlink(missing_ok=True)
    if job == "automask":
        if args.no_skip_background:
            cmd.append("--no-skip-background")
        env["QPSAM_AUTOMASK_STATS"] = str(stats_file)  # qpsam appends each region's AutomaskStats here
    child = run_child(cmd, env, work / f"{job}.log")
    if child.returncode:
        tail = (work / f"{job}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"qpsam {job} failed on {slide} (exit {child.returncode}):\n{tail}")
    images = json.loads(report.read_text())["images"]
    if job == "automask":
        # The report's "windows" of automask counts regions, not tiles: plan the tiles as the job does.
        from qpsam.jobs.automask import plan_tiles

        units = len(plan_tiles((0, 0, size, size), args.tile, args.overlap))
    else:
        units = int(images[0]["windows"])
    found = read_results(folder, job)
    matching = match(found, [t.geometry for t in truths])
    dups = seam_duplicates(found)
    extra: dict[str, Any] = {"job_seconds": images[0]["seconds"]}
    if job == "detect":
        extra |= {"ideal": ideal, "one_nucleus_twice": duplicate_kinds(found, [t.geometry for t in truths], dups),
                  "truth_pairs": len(seam_duplicates([t.geometry for t in truths]))}
    if stats_file.exists():
        extra["automask"] = automask_stats(stats_file)
    return Run(size, f"qpsam {job}", child.seconds, child.rss_mib, units, len(found),
               matching.recall, matching.precision, len(dups), len(truths), extra=extra)


def automask_stats(path: Path) -> dict[str, float]:
    """The AutomaskStats lines qpsam wrote (one per region), summed."""
    total: dict[str, float] = {}
    for line in path.read_text().splitlines():
        for key, value in json.loads(line).items():
            if key == "peak_pending":
                total[key] = max(total.get(key, 0), value)
            elif key != "overhead":
                total[key] = total.get(key, 0) + value
    if total.get("total_seconds"):
        total["overhead"] = 1 - total["model_seconds"] / total["total_seconds"]
    return total


def run_baseline(size: int, slide: Path, truths: list[Truth], args: argparse.Namespace, work: Path) -> Run:
    out = work / "baseline.wkb"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-child", str(slide), str(out),
           "--points-per-side", str(args.points_per_side), "--tile", str(args.tile), "--overlap", str(args.overlap),
           "--threads", str(args.threads)]
    say(f"{size}: baseline, segment-anything's generator tile by tile with a naive merge")
    child = run_child(cmd, child_env(args.threads), work / "baseline.log")
    if child.returncode:
        tail = (work / "baseline.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"the baseline failed (exit {child.returncode}):\n{tail}")
    import shapely

    info = json.loads(out.with_suffix(".json").read_text())
    found = list(shapely.from_wkb([bytes.fromhex(line) for line in out.read_text().split()]))
    matching = match(found, [t.geometry for t in truths])
    dups = seam_duplicates(found)
    tile_of = np.asarray(info["tile_of"], int)
    # SAM's generator also keeps nested masks within a tile; those across tiles are the seam's own.
    across = int((tile_of[dups[:, 0]] != tile_of[dups[:, 1]]).sum()) if len(dups) else 0
    return Run(size, "baseline: SAM generator per tile, concatenated", child.seconds, child.rss_mib, info["tiles"],
               len(found), matching.recall, matching.precision, len(dups), len(truths),
               note=info["generator"], extra={"job_seconds": info["seconds"], "duplicates_across_tiles": across})


def baseline_child(slide: Path, out: Path, points_per_side: int, tile: int, overlap: int, threads: int) -> None:
    """What users script today: read the slide, run SamAutomaticMaskGenerator on each tile, concatenate."""
    import warnings

    warnings.filterwarnings("ignore")
    import tifffile
    import torch

    from qpsam.engines._torch import load_into, read_checkpoint
    from qpsam.engines.torch_sam import build_sam1
    from qpsam.engines.weights import resolve_weights
    from qpsam.geometry import Region, mask_to_geometry

    try:
        from segment_anything import SamAutomaticMaskGenerator

        generator = "segment_anything.SamAutomaticMaskGenerator"
    except ImportError:  # MobileSAM ships the same generator
        from mobile_sam import SamAutomaticMaskGenerator

        generator = "mobile_sam.SamAutomaticMaskGenerator"
    torch.set_num_threads(threads)
    weights = resolve_weights("vit_t", allow_download=False)
    model, _ = build_sam1("vit_t")
    # qpsam's loader, so that TinyViT's attention biases are loaded (see the README): the comparison is then about
    # tiling, merging and the engine, not about MobileSAM's loading bug.
    load_into(model, read_checkpoint(weights, "vit_t"), weights, "vit_t")
    model.eval()
    gen = SamAutomaticMaskGenerator(model, points_per_side=points_per_side)
    t0 = time.perf_counter()
    image = tifffile.imread(slide)  # level 0, whole
    lo, hi = np.percentile(image[::4, ::4], (0.1, 99.9))
    origins = tile_origins(image.shape[0], tile, overlap)
    geoms: list[Any] = []
    tile_of: list[int] = []
    with torch.inference_mode():
        for index, (y, x) in enumerate((y, x) for y in origins for x in origins):
            block = image[y : y + tile, x : x + tile].astype(np.float32)
            gray = np.clip((block - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
            for m in gen.generate(rgb):
                seg = m["segmentation"]
                geoms.append(mask_to_geometry(seg, Region(x, y, seg.shape[1], seg.shape[0])))
                tile_of.append(index)
    seconds = time.perf_counter() - t0
    import shapely

    out.write_text("\n".join(w.hex() for w in shapely.to_wkb(np.asarray(geoms, dtype=object))))
    out.with_suffix(".json").write_text(json.dumps({"tiles": len(origins) ** 2, "seconds": seconds,
                                                    "generator": generator, "tile_of": tile_of}))


def duplicate_kinds(found: Sequence[Any], truths: Sequence[Any], dups: np.ndarray) -> int:
    """How many duplicate pairs are one nucleus found twice: both results best match (by IoU) the same
    ground-truth nucleus. The others are two nuclei whose masks spill into each other."""
    import shapely

    f, t = _valid(found), _valid(truths)
    if not len(dups) or not len(t):
        return 0
    fi, ti = shapely.STRtree(t).query(f, predicate="intersects")
    inter = shapely.area(shapely.intersection(f[fi], t[ti]))
    iou = inter / (shapely.area(f)[fi] + shapely.area(t)[ti] - inter)
    best = np.full(len(f), -1)
    score = np.zeros(len(f))
    for a, b, v in zip(fi, ti, iou):
        if v > score[a]:
            best[a], score[a] = b, v
    same = (best[dups[:, 0]] == best[dups[:, 1]]) & (best[dups[:, 0]] >= 0)
    return int(same.sum())


def run_ideal(size: int, folder: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The detect job's floor on this slide, measured in this run just before the job: see :func:`ideal_child`."""
    out = work / "ideal.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ideal-child", str(folder), str(out),
           "--engine", args.engine, "--threads", str(args.threads), "--ideal-windows", str(args.ideal_windows)]
    say(f"{size}: detect's ideal: encoder and decoder timed on {args.ideal_windows} of its windows")
    child = run_child(cmd, child_env(args.threads), work / "ideal.log")
    if child.returncode:
        tail = (work / "ideal.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"the ideal measurement failed (exit {child.returncode}):\n{tail}")
    return dict(json.loads(out.read_text()))


def ideal_child(folder: Path, out: Path, engine: str, samples: int) -> None:
    """One encoder pass per window of detect's own plan, plus the decoder on every box in its batches: the
    encoder's median time on ``samples`` of the windows (evenly spread, cache off) times the windows, plus the
    decoder's time per box on those windows' boxes (``predict``, as the job batches them) times the boxes."""
    from qpsam.engines import load_engine
    from qpsam.jobs.detect import DetectOptions, detection_plan, select_prompts
    from qpsam.project import open_project

    model = load_engine("vit_t", device="cpu", engine=engine, cache=False)  # as the job loads it (OMP_NUM_THREADS)
    options = DetectOptions()
    with open_project(folder, "r", backend="native") as project:
        entry = project.images[0]
        plan = detection_plan(select_prompts(entry.objects, options), entry.width, entry.height, options)
        picks = sorted({round(i * (len(plan) - 1) / max(1, samples - 1)) for i in range(samples)})
        encoder, decoder, boxes = [], 0.0, 0
        for i in picks:
            window, prompts = plan[i]
            pixels = entry.read_rgb(window.region)
            t0 = time.perf_counter()
            model.set_image(pixels)
            t1 = time.perf_counter()
            model.predict(prompts, options.output)
            decoder += time.perf_counter() - t1
            encoder.append(t1 - t0)
            boxes += len(prompts)
    windows, total = len(plan), sum(len(p) for _, p in plan)
    per_window, per_box = float(np.median(encoder)), decoder / max(1, boxes)
    out.write_text(json.dumps({"windows": windows, "boxes": total, "sampled_windows": len(picks),
                               "sampled_boxes": boxes, "encoder_s": per_window, "decoder_s_per_box": per_box,
                               "ideal_s": per_window * windows + per_box * total}))


# ---------------------------------------------------------------- report


def say(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    versions = {}
    for name in ("onnxruntime", "torch", "tifffile", "shapely"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a version line must not stop the benchmark
            versions[name] = "-"
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "commit": commit, "load": os.getloadavg(), **versions}


def tables(runs: list[Run], baseline: Run | None) -> str:
    lines = ["| size | job | time s | tiles | tiles/s | objects | objects/s | peak RSS MiB | recall | precision "
             "| seam dups | time growth (area) | RSS growth | baseline / this |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    first: dict[str, Run] = {}
    for run in runs:
        ref = first.setdefault(run.job, run)
        area = (run.size / ref.size) ** 2
        ratio = ""
        if baseline is not None and run.job == "qpsam automask":
            # per unit area, so that larger slides compare with the baseline's smallest one
            ratio = f"{(baseline.seconds / baseline.size**2) / (run.seconds / run.size**2):.1f}x"
        elif run is baseline:
            ratio = "1.0x"
        lines.append(
            f"| {run.size} | {run.job} | {run.seconds:.1f} | {run.units} | {run.units_per_s:.2f} | {run.objects} "
            f"| {run.objects_per_s:.1f} | {run.rss_mib:.0f} | {run.recall:.3f} | {run.precision:.3f} "
            f"| {run.duplicates} | {run.seconds / ref.seconds:.2f}x ({area:.0f}x) | {run.rss_mib / ref.rss_mib:.2f}x "
            f"| {ratio} |")
    out = "\n".join(lines)
    auto = [r for r in runs if r.job == "qpsam automask"]
    timed = [(r, r.extra["automask"]) for r in auto if "automask" in r.extra]
    if timed:
        out += ("\n\n| size | tiles | skipped as background | engine s (encoder, decoder, SAM filters) | read s | tissue test s "
                "| masks to polygons s | merge s | outside the engine | most pieces held |\n"
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r, st in timed:
            out += (f"\n| {r.size} | {st['tiles']:.0f} | {st['skipped']:.0f} | {st['model_seconds']:.1f} "
                    f"| {st['read_seconds']:.1f} | {st['tissue_seconds']:.1f} | {st['pieces_seconds']:.1f} "
                    f"| {st['merge_seconds']:.1f} | {100 * st.get('overhead', 0):.1f} % | {st['peak_pending']:.0f} |")
    if baseline is not None and auto and auto[0].size == baseline.size:
        a = auto[0]
        out += ("\n\n| ratio on the smallest slide (baseline / qpsam automask, same run) | value | target |\n"
                "| --- | ---: | ---: |\n"
                f"| total time | {baseline.seconds / a.seconds:.1f}x | >= 3x |\n"
                f"| peak RSS | {baseline.rss_mib / a.rss_mib:.1f}x | |\n"
                f"| recall, qpsam - baseline | {a.recall - baseline.recall:+.3f} | >= 0 |\n"
                f"| duplicates, qpsam / baseline (across its tiles) | {a.duplicates} / {baseline.duplicates} "
                f"({baseline.extra.get('duplicates_across_tiles', '-')}) | 0 / - |")
    return out


def detect_table(runs: list[Run]) -> str:
    """Detect against its ideal (one encoder pass per window + the decoder on every box), measured in the same run."""
    rows = [r for r in runs if r.job == "qpsam detect" and r.extra.get("ideal")]
    if not rows:
        return ""
    lines = ["| size | boxes | windows | 1024-px tiles to cover | encoder s/window | decoder ms/box | ideal s "
             "| job s | job / ideal | total s | total / ideal | seam dups: one nucleus twice / GT's own pairs |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        i = r.extra["ideal"]
        job = float(r.extra["job_seconds"])
        cover = (-(-r.size // 1024)) ** 2
        lines.append(
            f"| {r.size} | {i['boxes']} | {i['windows']} | {cover} | {i['encoder_s']:.2f} "
            f"| {1000 * i['decoder_s_per_box']:.1f} | {i['ideal_s']:.1f} | {job:.1f} | {job / i['ideal_s']:.2f}x "
            f"| {r.seconds:.1f} | {r.seconds / i['ideal_s']:.2f}x "
            f"| {r.duplicates}: {r.extra['one_nucleus_twice']} / {r.extra['truth_pairs']} |")
    return ("Detect against its ideal, measured in the same run just before the job (target: job / ideal <= 1.2x). "
            "Ideal = encoder s/window x windows + decoder s/box x boxes, each timed on a few of the job's own windows "
            "(encoder: median, cache off; decoder: predict on all their boxes, batched as the job does). Job = the "
            "report's seconds for the image (windows, masks to outlines, objects, commit); total = the subprocess "
            "(start-up and model load too).\n\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4096,8192,16384", help="slide sides in pixels, multiples of 512")
    parser.add_argument("--jobs", default="automask,detect", help="automask, detect or both")
    parser.add_argument("--points-per-side", type=int, default=32, help="automask grid per tile")
    parser.add_argument("--tile", type=int, default=1024, help="automask tile side (qpsam and the baseline)")
    parser.add_argument("--overlap", type=int, default=128, help="automask tile overlap (qpsam and the baseline)")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx", "openvino"], help="qpsam's --engine")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP/torch threads of every child")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiles' flips and rotations")
    parser.add_argument("--blank", type=float, default=0.0,
                        help="share of the 512-pixel tiles left empty (background), to measure tissue skipping")
    parser.add_argument("--tissue", type=float, default=1.0,
                        help="share of the slide covered by one disc of tissue (the rest is empty glass)")
    parser.add_argument("--no-skip-background", action="store_true", help="run qpsam automask on every tile")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument("--work", type=Path, default=None, help="folder for slides and projects (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the slides and projects")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--ideal-windows", type=int, default=3, help="detect windows the ideal is timed on")
    parser.add_argument("--baseline-child", nargs=2, type=Path, metavar=("SLIDE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--ideal-child", nargs=2, type=Path, metavar=("PROJECT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ideal_child:
        ideal_child(*args.ideal_child, args.engine, args.ideal_windows)
        return 0
    if args.baseline_child:
        slide, out = args.baseline_child
        baseline_child(slide, out, args.points_per_side, args.tile, args.overlap, args.threads)
        return 0

    import tifffile

    from qpsam.jobs.demo import sample_paths

    sizes = sorted(int(s) for s in args.sizes.split(","))
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    if any(j not in ("automask", "detect") for j in jobs):
        parser.error("--jobs takes automask and/or detect")
    image_path, labels_path = sample_paths()
    source, labels = tifffile.imread(image_path), tifffile.imread(labels_path)
    for size in sizes:
        make_layout(size, source.shape[0], tissue=args.tissue)  # refuse bad sizes before any work
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-wsi-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    baseline: Run | None = None
    made: list[Path] = []
    try:
        warm_up(args, work)
        for size in sizes:
            folder = work / f"slide-{size}"
            folder.mkdir(exist_ok=True)
            made.append(folder)
            layout = make_layout(size, source.shape[0], args.seed, args.blank, args.tissue)
            slide = folder / f"slide-{size}.ome.tif"
            t0 = time.perf_counter()
            levels = write_slide(slide, source, layout)
            truths = ground_truth(labels, layout)
            say(f"{size}: slide with levels {levels} and {len(truths)} GT nuclei in {time.perf_counter() - t0:.1f} s")
            if size == sizes[0] and not args.no_baseline and "automask" in jobs:
                baseline = run_baseline(size, slide, truths, args, folder)
                runs.append(baseline)
            for job in jobs:
                runs.append(run_qpsam(job, size, slide, truths, args, folder))
                say(f"{size}: {runs[-1].job}: {runs[-1].seconds:.1f} s, {runs[-1].objects} objects, "
                    f"recall {runs[-1].recall:.3f}")
    finally:
        if not args.keep:
            for folder in made:
                shutil.rmtree(folder, ignore_errors=True)
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    info = machine()
    print(f"\nMobileSAM vit_t on CPU, {args.threads} threads per child, engine {args.engine}; {info['cpu']}, "
          f"{info['cores']} cores, Python {info['python']}, onnxruntime {info['onnxruntime']}, torch {info['torch']}, "
          f"commit {info['commit']}, load average {info['load'][0]:.1f}")
    print(f"automask: {args.points_per_side} points per side, tile {args.tile}, overlap {args.overlap}, tissue on "
          f"{args.tissue:.0%} of each slide, background skip {'off' if args.no_skip_background else 'on'}; detect: one "
          "box per GT nucleus. Time = the subprocess's wall time (start-up and model load included); tiles = automask "
          "tiles or detect windows; recall/precision at IoU >= 0.5; seam dups = pairs overlapping > 20 % of the "
          "smaller; growth against the smallest size (its area ratio in brackets); baseline / this = seconds per "
          "pixel, baseline over this row.\n")
    print(tables(runs, baseline))
    if detect_table(runs):
        print("\n" + detect_table(runs))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": [asdict(r) | {"units_per_s": r.units_per_s,
                                                               "objects_per_s": r.objects_per_s} for r in runs]},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
