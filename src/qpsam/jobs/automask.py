"""Automatic masks over large images: tiles with overlap, merged so that one cell is one object.

Each tile is segmented on its own. A mask that touches a side the tile shares with a neighbour may be cut by the
tile border; masks that are not cut are deduplicated across tiles (the same cell seen in the overlap of two tiles),
and cut pieces that no whole mask covers are joined with the overlapping pieces from neighbouring tiles. With an
overlap larger than the objects, every object is whole in at least one tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from shapely import STRtree, unary_union
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from qpsam.engines.base import AutomaskParams, Engine
from qpsam.errors import JobError
from qpsam.geometry import Region, mask_to_geometry
from qpsam.jobs.detect import QUALITY
from qpsam.jobs.executors import EngineSpec, Executor, LocalExecutor, engine_for
from qpsam.jobs.sources import ImageSource
from qpsam.objects import DEFAULT_PLANE, ImagePlane, ObjectType, PathClass, PathObject

__all__ = ["AutomaskOptions", "Piece", "automask_region", "automask_tile", "merge_pieces", "plan_tiles", "tile_pieces"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AutomaskOptions:
    """Tiling and output choices of an automask run (SAM's own parameters are in ``params``)."""

    params: AutomaskParams = AutomaskParams()
    tile_size: int = 1024
    overlap: int = 128
    downsample: float = 1.0
    object_type: ObjectType = ObjectType.DETECTION
    path_class: str | None = None
    min_area: float = 0.0
    simplify: float | None = None
    duplicate_iou: float = 0.5
    clip: bool = True  # objects of an area annotation are cut at its outline (else kept whole if centred inside)

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_type", ObjectType(self.object_type))
        if self.tile_size < 64:
            raise JobError(f"tile size must be >= 64 pixels, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size // 2:
            raise JobError(f"overlap must be in [0, tile size / 2), got {self.overlap} for tiles of {self.tile_size}")
        if not self.downsample > 0:
            raise JobError(f"downsample must be > 0, got {self.downsample}")

    def as_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        params = asdict(self.params)
        params["output"] = self.params.output.value
        return {"params": params, "tile_size": self.tile_size, "overlap": self.overlap,
                "downsample": self.downsample, "object_type": self.object_type.value,
                "path_class": self.path_class, "min_area": self.min_area, "simplify": self.simplify,
                "clip": self.clip}


@dataclass(frozen=True)
class Piece:
    """One mask of one tile, in image coordinates; ``cut`` when it touches a side shared with another tile."""

    geometry: Polygon | MultiPolygon
    score: float
    cut: bool


def plan_tiles(bounds: tuple[float, float, float, float], tile_size: int, overlap: int, downsample: float = 1.0,
               plane: ImagePlane = DEFAULT_PLANE) -> list[Region]:
    """Regions covering ``bounds`` (image pixels) with tiles of ``tile_size`` pixels at ``downsample``."""
    x0, y0, x1, y1 = bounds
    size, step = tile_size * downsample, (tile_size - overlap) * downsample
    if x1 <= x0 or y1 <= y0:
        raise JobError(f"automask region {bounds} is empty")

    def starts(lo: float, hi: float) -> list[float]:
        if hi - lo <= size:
            return [lo]
        n = math.ceil((hi - lo - size) / step) + 1
        return [min(lo + i * step, hi - size) for i in range(n)]

    return [Region(x, y, min(size, x1 - x), min(size, y1 - y), downsample, plane)
            for y in starts(y0, y1) for x in starts(x0, x1)]


def _inner_sides(tile: Region, all_bounds: tuple[float, float, float, float]) -> list[BaseGeometry]:
    """The tile's sides that lie inside the processed area (where a neighbour continues the image)."""
    x0, y0, x1, y1 = tile.bounds
    ax0, ay0, ax1, ay1 = all_bounds
    eps = tile.downsample
    sides = []
    if x0 > ax0:
        sides.append(box(x0, y0, x0 + eps, y1))
    if y0 > ay0:
        sides.append(box(x0, y0, x1, y0 + eps))
    if x1 < ax1:
        sides.append(box(x1 - eps, y0, x1, y1))
    if y1 < ay1:
        sides.append(box(x0, y1 - eps, x1, y1))
    return sides


def tile_pieces(masks: Sequence, tile: Region, all_bounds: tuple[float, float, float, float],
                min_area: float = 0.0, simplify: float | None = None) -> list[Piece]:
    """Masks of one tile as :class:`Piece` objects in image coordinates."""
    sides = _inner_sides(tile, all_bounds)
    pieces = []
    for mask in masks:
        geometry = mask_to_geometry(mask.mask, tile, min_area=min_area, simplify=simplify)
        if geometry is None:
            continue
        cut = any(geometry.intersects(side) and geometry.intersection(side).area > 0 for side in sides)
        pieces.append(Piece(geometry, float(mask.score), cut))
    return pieces


def _iou(a: BaseGeometry, b: BaseGeometry) -> float:
    inter = a.intersection(b).area
    return inter / (a.area + b.area - inter) if inter else 0.0


def merge_pieces(pieces: Sequence[Piece], duplicate_iou: float = 0.5) -> list[Piece]:
    """Whole masks deduplicated across tiles, plus cut pieces joined where no whole mask covers them."""
    whole = sorted((p for p in pieces if not p.cut), key=lambda p: (-p.score, -p.geometry.area))
    kept: list[Piece] = []
    for piece in whole:
        if kept:
            tree = STRtree([k.geometry for k in kept])
            hits = tree.query(piece.geometry, predicate="intersects")
            if any(_iou(piece.geometry, kept[i].geometry) > duplicate_iou
                   or piece.geometry.intersection(kept[i].geometry).area > 0.8 * min(piece.geometry.area, kept[i].geometry.area)
                   for i in hits):
                continue
        kept.append(piece)
    cut = [p for p in pieces if p.cut]
    if not cut:
        return kept
    kept_tree = STRtree([k.geometry for k in kept]) if kept else None
    uncovered = []
    for piece in cut:
        if kept_tree is not None:
            hits = kept_tree.query(piece.geometry, predicate="intersects")
            if any(piece.geometry.intersection(kept[i].geometry).area > 0.5 * piece.geometry.area for i in hits):
                continue
        uncovered.append(piece)
    # Join cut pieces that overlap (connected components over the overlap graph).
    tree = STRtree([p.geometry for p in uncovered])
    parent = list(range(len(uncovered)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, piece in enumerate(uncovered):
        for j in tree.query(piece.geometry, predicate="intersects"):
            if j != i and piece.geometry.intersection(uncovered[j].geometry).area > 0:
                parent[find(i)] = find(int(j))
    groups: dict[int, list[Piece]] = {}
    for i, piece in enumerate(uncovered):
        groups.setdefault(find(i), []).append(piece)
    for members in groups.values():
        geometry = unary_union([m.geometry for m in members])
        if isinstance(geometry, (Polygon, MultiPolygon)) and not geometry.is_empty:
            kept.append(Piece(geometry, max(m.score for m in members), cut=False))
    return kept


def _polygonal(geometry: BaseGeometry) -> Polygon | MultiPolygon | None:
    """The areas of a clipped shape (an intersection may add lines and points where outlines touch)."""
    if isinstance(geometry, (Polygon, MultiPolygon)):
        return None if geometry.is_empty else geometry
    parts = [g for g in getattr(geometry, "geoms", ()) if isinstance(g, (Polygon, MultiPolygon)) and not g.is_empty]
    if not parts:
        return None
    merged = unary_union(parts)
    return merged if isinstance(merged, (Polygon, MultiPolygon)) else None


def automask_tile(engine: "Engine | EngineSpec", source: ImageSource, tile: Region, params: AutomaskParams,
                  bounds: tuple[float, float, float, float], min_area: float = 0.0,
                  simplify: float | None = None) -> list[Piece]:
    """One unit of work: segment everything in one tile; runs in any process (see :func:`detect_window`)."""
    model = engine_for(engine) if isinstance(engine, EngineSpec) else engine
    return tile_pieces(model.automask(source.read_region(tile), params), tile, bounds, min_area, simplify)


def automask_region(
    engine: "Engine | EngineSpec",
    source: ImageSource,
    bounds: tuple[float, float, float, float] | None = None,
    options: AutomaskOptions = AutomaskOptions(),
    plane: ImagePlane = DEFAULT_PLANE,
    within: BaseGeometry | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> list[PathObject]:
    """Segment everything in ``bounds`` of an image (the whole image by default), tile by tile.

    With ``within`` (e.g. a tissue annotation), the objects that lie inside it are kept whole, and those whose
    centre lies inside it are cut at its outline (``options.clip``, the default) or kept whole.
    """
    if bounds is None:
        bounds = (0.0, 0.0, float(source.width), float(source.height))
    x0, y0, x1, y1 = bounds
    bounds = (max(0.0, x0), max(0.0, y0), min(float(source.width), x1), min(float(source.height), y1))
    tiles = plan_tiles(bounds, options.tile_size, options.overlap, options.downsample, plane)
    jobs = [(engine, source, tile, options.params, bounds, options.min_area, options.simplify) for tile in tiles]
    results: list[list[Piece]] = [[] for _ in tiles]
    executor = executor or LocalExecutor()
    # an in-process engine that encodes several images per call (torch on a GPU) gets each group of tiles
    # encoded together first; the tiles' automask then finds their embeddings in the cache
    group = int(getattr(engine, "encode_batch_size", 1)) if isinstance(executor, LocalExecutor) else 1
    batched = group > 1 and getattr(engine, "cache", None) is not None
    step = group if batched else max(1, len(jobs))  # other executors get every unit at once
    done = 0
    for start in range(0, len(jobs), step):
        part = jobs[start : start + step]
        if batched:
            engine.encode_batch([source.read_region(job[2]) for job in part])  # type: ignore[union-attr]
        for i, result in executor.run(automask_tile, part):
            if isinstance(result, Exception):
                raise result
            results[start + i] = result
            done += 1
            if progress:
                progress(done, len(tiles))
    merged = merge_pieces([p for r in results for p in r], options.duplicate_iou)
    path_class = PathClass(options.path_class) if options.path_class else None
    objects = []
    for piece in merged:
        geometry = piece.geometry
        if within is not None:
            if not within.contains(geometry.representative_point()):
                continue
            if options.clip and not within.contains(geometry):
                geometry = _polygonal(geometry.intersection(within))
                if geometry is None or geometry.area <= options.min_area:
                    continue
        objects.append(PathObject(geometry, options.object_type, path_class=path_class,
                                  measurements={QUALITY: piece.score}, plane=plane))
    return objects
