"""Automatic masks over large images: tiles with overlap, merged so that one cell is one object.

Each tile is segmented on its own. The tiles' cores partition the area (each core reaches halfway into the overlap
with each neighbour), and a mask that lies whole in its tile with its centre in that tile's core is the object's
own version, as in micro-sam's and StarDist's tiling: with an overlap larger than the objects, every object has
one. Other whole masks come next (a neighbour may have missed the object), then pieces cut by a tile side, joined
with the pieces of neighbouring tiles that agree with them where both tiles see the image. Of two nested masks the
inner one is kept by default (a nucleus, not the clump it belongs to). A mask that repeats one already kept is
dropped, and a mask that overlaps kept ones loses the overlap (and is dropped when little is left), so no two objects
overlap.

Tiles stream: :class:`SeamMerger` merges and releases the pieces of a group as soon as every tile that can add to
it is done, with exactly the result of merging everything at the end; tiles that the tissue test
(:func:`is_background`) finds empty are skipped.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import shapely
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

__all__ = ["AutomaskOptions", "AutomaskStats", "Piece", "SeamMerger", "TileResult", "automask_region", "automask_tile",
           "is_background", "iter_automask_region", "merge_pieces", "plan_tiles", "tile_cores", "tile_pieces"]



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
    nested: str = "inner"  # of two nested masks keep the inner one, or the better scored ("score"); see merge_pieces
    backend: str = "auto"  # how the project is opened: native, paquo (QuPath) or auto
    keep_version: bool | None = None  # paquo: keep a project's QuPath version (see open_project)
    clip: bool = True  # objects of an area annotation are cut at its outline (else kept whole if centred inside)
    skip_background: bool = True  # tiles that fail the tissue test (see is_background) are not segmented
    background_contrast: float = 10.0  # the tissue test's threshold, in 8-bit levels

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_type", ObjectType(self.object_type))
        if self.nested not in NESTED:
            raise JobError(f"nested must be one of {', '.join(NESTED)}, got {self.nested!r}")
        if not self.background_contrast >= 0:
            raise JobError(f"background contrast must be >= 0, got {self.background_contrast}")
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
                "clip": self.clip, "nested": self.nested, "skip_background": self.skip_background,
                "background_contrast": self.background_contrast}


@dataclass(frozen=True)
class Piece:
    """One mask of one tile, in image coordinates; ``cut`` when it touches a side shared with another tile,
    ``centred`` when its centre lies in its tile's core."""

    geometry: Polygon | MultiPolygon
    score: float
    cut: bool
    centred: bool = True
    tile: tuple[float, float, float, float] | None = None  # the bounds of the tile that saw it


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
        pieces.append(Piece(geometry, float(mask.score), cut, _in_core(geometry, core), tile.bounds))
    return pieces


def _iou(a: BaseGeometry, b: BaseGeometry) -> float:
    inter = a.intersection(b).area
    return inter / (a.area + b.area - inter) if inter else 0.0


NESTED = ("inner", "score")
NESTED_SHARE = 0.8  # a mask with more than this share of its area inside another one lies in it


def merge_pieces(pieces: Sequence[Piece], duplicate_iou: float = 0.5, nested: str = "inner") -> list[Piece]:
    """One object per object seen by the tiles, no two overlapping (see the module's description).

    ``nested`` decides between two whole masks of which one lies in the other (more than 80 % of the smaller one's
    area): SAM answered at two scales, e.g. a nucleus and a clump of nuclei, or the same object seen from two tiles.
    ``"inner"`` keeps the smaller one (every mask that holds a smaller one is dropped), ``"score"`` the one with the
    higher predicted quality.
    """
    if nested not in NESTED:
        raise JobError(f"nested must be one of {', '.join(NESTED)}, got {nested!r}")

    def order(group: Sequence[Piece]) -> list[Piece]:
        return sorted(group, key=lambda p: (-p.score, -p.geometry.area))

    whole = [p for p in pieces if not p.cut]
    if nested == "inner":
        whole = _drop_containers(whole)
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
            hits = np.sort(kept_tree.query(piece.geometry, predicate="intersects"))  # sums in one order
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
            if j != i and _same_object(piece, uncovered[j], duplicate_iou):
                parent[find(i)] = find(int(j))
    groups: dict[int, list[Piece]] = {}
    for i, piece in enumerate(uncovered):
        groups.setdefault(find(i), []).append(piece)
    joined = []
    for members in groups.values():
        geometry = _polygonal(unary_union([m.geometry for m in members]))
        if geometry is not None:
            joined.append(Piece(geometry, max(m.score for m in members), cut=False))
    if nested == "inner":
        joined = _drop_containers(joined)
    _place_all(order(joined), kept, duplicate_iou)
    return kept


def _same_object(a: Piece, b: Piece, duplicate_iou: float) -> bool:
    """Whether two cut pieces are views of one object: pieces of two tiles that agree where both tiles see the image
    (IoU above ``duplicate_iou`` inside the tiles' shared rectangle). Two masks of one tile are two answers, never
    one object; a mask as large as a tile overlaps every cell cut nearby, which must not be joined into it. Pieces
    of no known tile are joined when they overlap at all."""
    if a.tile is None or b.tile is None:
        return a.geometry.intersection(b.geometry).area > 0
    if a.tile == b.tile:
        return False
    x0, y0 = max(a.tile[0], b.tile[0]), max(a.tile[1], b.tile[1])
    x1, y1 = min(a.tile[2], b.tile[2]), min(a.tile[3], b.tile[3])
    if x1 <= x0 or y1 <= y0:
        return False
    shared = box(x0, y0, x1, y1)
    return _iou(a.geometry.intersection(shared), b.geometry.intersection(shared)) > duplicate_iou


def _drop_containers(whole: Sequence[Piece]) -> list[Piece]:
    """``whole`` less each mask that holds a smaller one (see :func:`merge_pieces`)."""
    if len(whole) < 2:
        return list(whole)
    geoms = np.asarray([p.geometry for p in whole], dtype=object)
    a, b = STRtree(geoms).query(geoms, predicate="intersects")
    areas = shapely.area(geoms)
    smaller = areas[b] < areas[a]
    a, b = a[smaller], b[smaller]
    inter = shapely.area(shapely.intersection(geoms[a], geoms[b]))
    holds = inter > NESTED_SHARE * areas[b]
    dropped = set(a[holds].tolist())
    return [p for i, p in enumerate(whole) if i not in dropped]


def _place_all(candidates: Sequence[Piece], kept: list[Piece], duplicate_iou: float) -> None:
    """Add ``candidates`` (best first) to ``kept``: repeats of a kept object are dropped, overlaps cut away."""
    if not candidates:
        return
    tree = STRtree([c.geometry for c in candidates] + [k.geometry for k in kept])
    final: dict[int, BaseGeometry] = {len(candidates) + i: k.geometry for i, k in enumerate(kept)}
    for i, piece in enumerate(candidates):
        geometry = piece.geometry
        # in index order, so that the union below (and its rounding) does not depend on the tree's layout
        others = [final[int(j)] for j in np.sort(tree.query(geometry, predicate="intersects")) if int(j) in final]
        overlaps = [o for o in others if geometry.intersection(o).area > 0]
        if any(_iou(geometry, o) > duplicate_iou
               or geometry.intersection(o).area > NESTED_SHARE * min(geometry.area, o.area) for o in overlaps):
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


BACKGROUND_READ = 8.0  # the tissue test reads a tile at 1/8 of its resolution (from the pyramid where there is one)


def is_background(source: ImageSource, tile: Region, contrast: float = 10.0) -> bool:
    """The tissue test: True when ``tile`` holds nothing to segment.

    The tile is read at 1/8 of its resolution (at least 16 pixels a side); it is background when, in every
    channel, its brightest and darkest pixels differ by less than ``contrast`` 8-bit levels. Empty glass in
    brightfield (flat white) and an empty field in fluorescence (flat dark) are both flat, while a cell or a tissue
    edge in the tile raises the spread; averaging over 8x8 pixels keeps camera noise below the threshold. The test
    runs on 8-bit views (every project image is rendered to 8-bit RGB with its display range); tiles of other
    arrays are never called background.
    """
    side = min(tile.width, tile.height) / tile.downsample
    factor = max(1.0, min(BACKGROUND_READ, side / 16))
    low = np.asarray(source.read_region(Region(tile.x, tile.y, tile.width, tile.height, tile.downsample * factor,
                                               tile.plane)))
    if low.dtype != np.uint8 or low.size == 0:
        return False
    flat = low.reshape(-1, low.shape[2] if low.ndim == 3 else 1)
    spread = flat.max(axis=0).astype(np.int32) - flat.min(axis=0)
    return bool(np.all(spread < contrast))


@dataclass
class AutomaskStats:
    """Where an automask run's time went, and how much it held at once (see :func:`automask_region`).

    ``model_seconds`` is the engine's own time: ``engine.automask`` (encoder, decoder and SAM's filters and NMS on
    their output) and batched encoding; the other times are qpsam's work around it per tile: reading pixels, the
    tissue test, masks to polygons, the seam merge.
    """

    tiles: int = 0
    skipped: int = 0  # tiles the tissue test called background
    pieces: int = 0
    objects: int = 0
    read_seconds: float = 0.0
    tissue_seconds: float = 0.0
    model_seconds: float = 0.0
    pieces_seconds: float = 0.0
    merge_seconds: float = 0.0
    total_seconds: float = 0.0
    peak_pending: int = 0  # most pieces held at once, waiting for a neighbouring tile

    @property
    def overhead(self) -> float:
        """Share of the run spent outside the model."""
        return 1.0 - self.model_seconds / self.total_seconds if self.total_seconds > 0 else 0.0

    def add(self, other: AutomaskStats) -> None:
        for name in ("tiles", "skipped", "pieces", "objects", "read_seconds", "tissue_seconds", "model_seconds",
                     "pieces_seconds", "merge_seconds", "total_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.peak_pending = max(self.peak_pending, other.peak_pending)


@dataclass(frozen=True)
class TileResult:
    """What one tile's unit of work hands back: its pieces and its timings."""

    pieces: list[Piece]
    read_seconds: float
    model_seconds: float
    pieces_seconds: float


def automask_tile(engine: "Engine | EngineSpec", source: ImageSource, tile: Region, params: AutomaskParams,
                  bounds: tuple[float, float, float, float], min_area: float = 0.0,
                  simplify: float | None = None, core: tuple[float, float, float, float] | None = None) -> list[Piece]:
    """One unit of work: segment everything in one tile; runs in any process (see :func:`detect_window`)."""
    return _tile_unit(engine, source, tile, params, bounds, min_area, simplify, core).pieces


def _tile_unit(engine: "Engine | EngineSpec", source: ImageSource, tile: Region, params: AutomaskParams,
               bounds: tuple[float, float, float, float], min_area: float = 0.0, simplify: float | None = None,
               core: tuple[float, float, float, float] | None = None) -> TileResult:
    model = engine_for(engine) if isinstance(engine, EngineSpec) else engine
    t0 = time.perf_counter()
    pixels = source.read_region(tile)
    t1 = time.perf_counter()
    masks = model.automask(pixels, params)
    del pixels
    t2 = time.perf_counter()
    pieces = tile_pieces(masks, tile, bounds, min_area, simplify, core)
    del masks
    return TileResult(pieces, t1 - t0, t2 - t1, time.perf_counter() - t2)


class SeamMerger:
    """:func:`merge_pieces` as tiles come in: pieces are merged, and released, as soon as every tile they can
    touch is done.

    The merge only lets pieces that intersect act on each other, so it splits over the groups of pieces connected
    by intersection, and a group is final once no tile still to come can add a piece to it: every tile whose
    bounds meet a piece of the group is done. Merging group by group gives the very same objects as merging all
    pieces at the end; tiles done row by row keep about two rows of tiles' pieces in memory.
    """

    def __init__(self, tiles: Sequence[Region], duplicate_iou: float = 0.5, nested: str = "inner") -> None:
        self.duplicate_iou = duplicate_iou
        self.nested = nested
        self.tile_tree = STRtree([box(*t.bounds) for t in tiles])
        self.done = np.zeros(len(tiles), dtype=bool)
        self.pending: list[Piece] = []
        self.peak_pending = 0

    def add(self, index: int, pieces: Sequence[Piece]) -> list[Piece]:
        """Record tile ``index`` done with its ``pieces``; returns the merged objects now final."""
        self.done[index] = True
        self.pending.extend(pieces)
        self.peak_pending = max(self.peak_pending, len(self.pending))
        return self._release(final=False)

    def finish(self) -> list[Piece]:
        """The objects still held (all tiles done)."""
        self.done[:] = True
        return self._release(final=True)

    def _release(self, final: bool) -> list[Piece]:
        if not self.pending:
            return []
        geoms = np.asarray([p.geometry for p in self.pending], dtype=object)
        n = len(geoms)
        parent = np.arange(n)

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = int(parent[i])
            return i

        a, b = STRtree(geoms).query(geoms, predicate="intersects")
        for i, j in zip(a.tolist(), b.tolist()):
            if i < j:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
        roots = np.asarray([find(i) for i in range(n)])
        ready = np.ones(n, dtype=bool)
        if not final:
            # a piece waits while a tile its bounding box meets is still to come
            envelopes = np.asarray([box(*g.bounds) for g in geoms], dtype=object)
            pi, ti = self.tile_tree.query(envelopes, predicate="intersects")
            waiting = np.zeros(n, dtype=bool)
            waiting[pi[~self.done[ti]]] = True
            ready = ~np.isin(roots, roots[waiting])
        out: list[Piece] = []
        for root in np.unique(roots[ready]):
            members = np.flatnonzero(roots == root)  # in arrival order, as merge_pieces sees them
            out += merge_pieces([self.pending[i] for i in members], self.duplicate_iou, self.nested)
        self.pending = [p for p, r in zip(self.pending, ready) if not r]
        return out


def automask_region(
    engine: "Engine | EngineSpec",
    source: ImageSource,
    bounds: tuple[float, float, float, float] | None = None,
    options: AutomaskOptions = AutomaskOptions(),
    plane: ImagePlane = DEFAULT_PLANE,
    within: BaseGeometry | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    stats: AutomaskStats | None = None,
) -> list[PathObject]:
    """Segment everything in ``bounds`` of an image (the whole image by default), tile by tile.

    With ``within`` (e.g. a tissue annotation), the objects that lie inside it are kept whole, and those whose
    centre lies inside it are cut at its outline (``options.clip``, the default) or kept whole. Tiles run row by
    row and their masks are merged and released as soon as their neighbours are done (see :class:`SeamMerger`);
    tiles the tissue test calls background are skipped (``options.skip_background``, see :func:`is_background`).
    ``stats``, when given, receives the run's timings and counts.
    """
    return list(iter_automask_region(engine, source, bounds, options, plane, within, progress, executor, stats))


def iter_automask_region(
    engine: "Engine | EngineSpec",
    source: ImageSource,
    bounds: tuple[float, float, float, float] | None = None,
    options: AutomaskOptions = AutomaskOptions(),
    plane: ImagePlane = DEFAULT_PLANE,
    within: BaseGeometry | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    stats: AutomaskStats | None = None,
) -> Iterator[PathObject]:
    """:func:`automask_region`, handing each object over as soon as it is final (so a caller can write results
    in chunks while the tiles still run)."""
    started = time.perf_counter()
    run = AutomaskStats()
    if bounds is None:
        bounds = (0.0, 0.0, float(source.width), float(source.height))
    x0, y0, x1, y1 = bounds
    bounds = (max(0.0, x0), max(0.0, y0), min(float(source.width), x1), min(float(source.height), y1))
    tiles = plan_tiles(bounds, options.tile_size, options.overlap, options.downsample, plane)
    cores = tile_cores(tiles, bounds)
    run.tiles = len(tiles)
    executor = executor or LocalExecutor()
    local = isinstance(executor, LocalExecutor)
    # an in-process engine that encodes several images per call (torch on a GPU) gets each group of tiles
    # encoded together first; the tiles' automask then finds their embeddings in the cache
    encoder = engine if isinstance(engine, BatchEncoder) and local else None
    if encoder is not None and (int(encoder.encode_batch_size) <= 1 or encoder.cache is None):
        encoder = None
    # local units run in groups (one encoder batch, or one tile) so that tiles stream; other executors get every
    # unit at once to spread them over their workers
    step = int(encoder.encode_batch_size) if encoder is not None else (1 if local else max(1, len(tiles)))
    merger = SeamMerger(tiles, options.duplicate_iou, options.nested)
    path_class = PathClass(options.path_class) if options.path_class else None
    done = 0

    def finished(pieces: Sequence[Piece]) -> Iterator[PathObject]:
        for piece in pieces:
            obj = _to_object(piece, options, within, path_class, plane)
            if obj is not None:
                run.objects += 1
                yield obj

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(tiles))

    try:
        for start in range(0, len(tiles), step):
            indices = list(range(start, min(start + step, len(tiles))))
            if options.skip_background:
                t0 = time.perf_counter()
                empty = [i for i in indices if is_background(source, tiles[i], options.background_contrast)]
                run.tissue_seconds += time.perf_counter() - t0
                run.skipped += len(empty)
                for i in empty:
                    t0 = time.perf_counter()
                    released = merger.add(i, [])
                    run.merge_seconds += time.perf_counter() - t0
                    yield from finished(released)
                    tick()
                indices = [i for i in indices if i not in empty]
            if not indices:
                continue
            if encoder is not None:
                t0 = time.perf_counter()
                images = [source.read_region(tiles[i]) for i in indices]
                t1 = time.perf_counter()
                encoder.encode_batch(images)
                del images
                run.read_seconds += t1 - t0
                run.model_seconds += time.perf_counter() - t1
            jobs = [(engine, source, tiles[i], options.params, bounds, options.min_area, options.simplify, cores[i])
                    for i in indices]
            for k, result in executor.run(_tile_unit, jobs):
                if isinstance(result, Exception):
                    raise result
                run.pieces += len(result.pieces)
                run.read_seconds += result.read_seconds
                run.model_seconds += result.model_seconds
                run.pieces_seconds += result.pieces_seconds
                t0 = time.perf_counter()
                released = merger.add(indices[k], result.pieces)
                run.merge_seconds += time.perf_counter() - t0
                del result
                yield from finished(released)
                tick()
        t0 = time.perf_counter()
        released = merger.finish()
        run.merge_seconds += time.perf_counter() - t0
        yield from finished(released)
    finally:
        run.peak_pending = merger.peak_pending
        run.total_seconds = time.perf_counter() - started
        if stats is not None:
            stats.add(run)
        _log_stats(run)


def _to_object(piece: Piece, options: AutomaskOptions, within: BaseGeometry | None, path_class: PathClass | None,
               plane: ImagePlane) -> PathObject | None:
    geometry = piece.geometry
    if within is not None:
        if not within.contains(geometry.representative_point()):
            return None
        if options.clip and not within.contains(geometry):
            clipped = _polygonal(geometry.intersection(within))
            if clipped is None or clipped.area <= options.min_area:
                return None
            geometry = clipped
    return PathObject(geometry, options.object_type, path_class=path_class,
                      measurements={QUALITY: piece.score}, plane=plane)


STATS_ENV = "QPSAM_AUTOMASK_STATS"  # a file that each automask region appends its AutomaskStats to, as JSON


def _log_stats(run: AutomaskStats) -> None:
    """Append the run's stats to the file named by ``QPSAM_AUTOMASK_STATS`` (for benchmarks and profiling)."""
    path = os.environ.get(STATS_ENV)
    if not path:
        return
    import json
    from dataclasses import asdict

    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({**asdict(run), "overhead": run.overhead}) + "\n")
