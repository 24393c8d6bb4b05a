"""Automatic masks over large images: tiles with overlap, merged so that one cell is one object.

Each tile is segmented on its own. The tiles' cores partition the area (each core reaches halfway into the overlap
with each neighbour), and a mask that lies whole in its tile with its centre in that tile's core is the object's
own version, as in micro-sam's and StarDist's tiling: with an overlap larger than the objects, every object has
one. Other whole masks come next (a neighbour may have missed the object), then pieces cut by a tile side, joined
with the overlapping pieces of neighbouring tiles. A mask that repeats one already kept is dropped, and a mask that
overlaps kept ones loses the overlap (and is dropped when little is left), so no two objects overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from shapely import STRtree, unary_union
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from qpsam.engines.base import BatchEncoder, Engine
from qpsam.errors import JobError
from qpsam.geometry import Region, mask_to_geometry
from qpsam.jobs.detect import QUALITY
from qpsam.jobs.executors import EngineSpec, Executor, LocalExecutor, engine_for
from qpsam.jobs.sources import ImageSource
from qpsam.objects import DEFAULT_PLANE, ImagePlane, ObjectType, PathClass, PathObject
from qpsam.sam import AutomaskParams
from qpsam.types import Progress

__all__ = ["AutomaskOptions", "Piece", "automask_region", "automask_tile", "merge_pieces", "plan_tiles", "tile_cores",
           "tile_pieces"]



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
    backend: str = "auto"  # how the project is opened: native, paquo (QuPath) or auto
    keep_version: bool | None = None  # paquo: keep a project's QuPath version (see open_project)
    clip: bool = True  # objects of an area annotation are cut at its outline (else kept whole if centred inside)

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_type", ObjectType(self.object_type))
        if self.backend not in ("auto", "native", "paquo"):
            raise JobError(f"backend must be 'auto', 'native' or 'paquo', got {self.backend!r}")
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
    """One mask of one tile, in image coordinates; ``cut`` when it touches a side shared with another tile,
    ``centred`` when its centre lies in its tile's core."""

    geometry: Polygon | MultiPolygon
    score: float
    cut: bool
    centred: bool = True


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


def tile_cores(tiles: Sequence[Region], all_bounds: tuple[float, float, float, float]
               ) -> list[tuple[float, float, float, float]]:
    """Each tile's core: the tile less half of each overlap with a neighbour; the cores partition the area."""
    ax0, ay0, ax1, ay1 = all_bounds

    def edges(spans: set[tuple[float, float]], lo: float, hi: float) -> dict[tuple[float, float], tuple[float, float]]:
        ordered = sorted(spans)
        out = {}
        for i, (a, b) in enumerate(ordered):
            left = lo if i == 0 else (ordered[i - 1][1] + a) / 2
            right = hi if i == len(ordered) - 1 else (b + ordered[i + 1][0]) / 2
            out[(a, b)] = (left, right)
        return out

    xs = edges({(t.bounds[0], t.bounds[2]) for t in tiles}, ax0, ax1)
    ys = edges({(t.bounds[1], t.bounds[3]) for t in tiles}, ay0, ay1)
    cores = []
    for t in tiles:
        x0, y0, x1, y1 = t.bounds
        (cx0, cx1), (cy0, cy1) = xs[(x0, x1)], ys[(y0, y1)]
        cores.append((cx0, cy0, cx1, cy1))
    return cores


def _in_core(geometry: BaseGeometry, core: tuple[float, float, float, float] | None) -> bool:
    if core is None:
        return True
    x0, y0, x1, y1 = geometry.bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # the bounding box's centre: the same for two views of one object
    return core[0] <= cx < core[2] and core[1] <= cy < core[3]


def _inner_sides(tile: Region, all_bounds: tuple[float, float, float, float]) -> list[BaseGeometry]:
    """The tile's sides that lie inside the processed area (where a neighbour continues the image)."""
    x0, y0, x1, y1 = tile.bounds
    ax0, ay0, ax1, ay1 = all_bounds
    eps = tile.downsample
    sides: list[BaseGeometry] = []
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
                min_area: float = 0.0, simplify: float | None = None,
                core: tuple[float, float, float, float] | None = None) -> list[Piece]:
    """Masks of one tile as :class:`Piece` objects in image coordinates (``core``: see :func:`tile_cores`)."""
    sides = _inner_sides(tile, all_bounds)
    pieces = []
    for mask in masks:
        geometry = mask_to_geometry(mask.mask, tile, min_area=min_area, simplify=simplify)
        if geometry is None:
            continue
        cut = any(geometry.intersects(side) and geometry.intersection(side).area > 0 for side in sides)
        pieces.append(Piece(geometry, float(mask.score), cut, _in_core(geometry, core)))
    return pieces


def _iou(a: BaseGeometry, b: BaseGeometry) -> float:
    inter = a.intersection(b).area
    return inter / (a.area + b.area - inter) if inter else 0.0


def merge_pieces(pieces: Sequence[Piece], duplicate_iou: float = 0.5) -> list[Piece]:
    """One object per object seen by the tiles, no two overlapping (see the module's description)."""
    def order(group: Sequence[Piece]) -> list[Piece]:
        return sorted(group, key=lambda p: (-p.score, -p.geometry.area))

    whole = [p for p in pieces if not p.cut]
    kept: list[Piece] = []
    _place_all(order([p for p in whole if p.centred]) + order([p for p in whole if not p.centred]), kept,
               duplicate_iou)
    cut = [p for p in pieces if p.cut]
    if not cut:
        return kept
    kept_tree = STRtree([k.geometry for k in kept]) if kept else None
    uncovered = []
    for piece in cut:
        if kept_tree is not None:
            hits = kept_tree.query(piece.geometry, predicate="intersects")
            covered = sum(piece.geometry.intersection(kept[i].geometry).area for i in hits)
            if covered > 0.5 * piece.geometry.area:
                continue  # a piece of an object kept whole
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
    joined = []
    for members in groups.values():
        geometry = _polygonal(unary_union([m.geometry for m in members]))
        if geometry is not None:
            joined.append(Piece(geometry, max(m.score for m in members), cut=False))
    _place_all(order(joined), kept, duplicate_iou)
    return kept


def _place_all(candidates: Sequence[Piece], kept: list[Piece], duplicate_iou: float) -> None:
    """Add ``candidates`` (best first) to ``kept``: repeats of a kept object are dropped, overlaps cut away."""
    if not candidates:
        return
    tree = STRtree([c.geometry for c in candidates] + [k.geometry for k in kept])
    final: dict[int, BaseGeometry] = {len(candidates) + i: k.geometry for i, k in enumerate(kept)}
    for i, piece in enumerate(candidates):
        geometry = piece.geometry
        others = [final[int(j)] for j in tree.query(geometry, predicate="intersects") if int(j) in final]
        overlaps = [o for o in others if geometry.intersection(o).area > 0]
        if any(_iou(geometry, o) > duplicate_iou
               or geometry.intersection(o).area > 0.8 * min(geometry.area, o.area) for o in overlaps):
            continue  # the same object, or one nested in the other
        if overlaps:
            rest = _polygonal(geometry.difference(unary_union(overlaps)))
            if rest is None or rest.area < 0.5 * geometry.area:
                continue
            if isinstance(rest, MultiPolygon):  # slivers left by the cut are not the object
                rest = max(rest.geoms, key=lambda g: g.area)
            geometry = rest
        final[i] = geometry
        kept.append(Piece(geometry, piece.score, False, piece.centred))


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
                  simplify: float | None = None, core: tuple[float, float, float, float] | None = None) -> list[Piece]:
    """One unit of work: segment everything in one tile; runs in any process (see :func:`detect_window`)."""
    model = engine_for(engine) if isinstance(engine, EngineSpec) else engine
    return tile_pieces(model.automask(source.read_region(tile), params), tile, bounds, min_area, simplify, core)


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
    cores = tile_cores(tiles, bounds)
    jobs = [(engine, source, tile, options.params, bounds, options.min_area, options.simplify, core)
            for tile, core in zip(tiles, cores)]
    results: list[list[Piece]] = [[] for _ in tiles]
    executor = executor or LocalExecutor()
    # an in-process engine that encodes several images per call (torch on a GPU) gets each group of tiles
    # encoded together first; the tiles' automask then finds their embeddings in the cache
    encoder = engine if isinstance(engine, BatchEncoder) and isinstance(executor, LocalExecutor) else None
    if encoder is not None and (int(encoder.encode_batch_size) <= 1 or encoder.cache is None):
        encoder = None
    step = int(encoder.encode_batch_size) if encoder is not None else max(1, len(jobs))  # others: every unit at once
    done = 0
    for start in range(0, len(jobs), step):
        part = jobs[start : start + step]
        if encoder is not None:
            encoder.encode_batch([source.read_region(job[2]) for job in part])
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
                clipped = _polygonal(geometry.intersection(within))
                if clipped is None or clipped.area <= options.min_area:
                    continue
                geometry = clipped
        objects.append(PathObject(geometry, options.object_type, path_class=path_class,
                                  measurements={QUALITY: piece.score}, plane=plane))
    return objects
