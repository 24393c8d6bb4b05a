"""Whole slides at a known cost: tiles stream through the seam merge, background tiles are skipped, nested masks
keep the objects rather than the clumps they form.

The merge tests use the exact objects of a drawn label image as each tile sees them, plus the clumps and near-repeats
that SAM also answers with; the tissue test and the run's bookkeeping use the real MobileSAM weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, box

from qpsam.engines import load_engine
from qpsam.errors import JobError
from qpsam.geometry import Region, mask_to_geometry
from qpsam.jobs import ArraySource
from qpsam.jobs.automask import (
    AutomaskOptions,
    AutomaskStats,
    Piece,
    SeamMerger,
    automask_region,
    is_background,
    iter_automask_region,
    merge_pieces,
    plan_tiles,
    tile_cores,
    tile_pieces,
)
from qpsam.sam import AutomaskParams, Mask


def _labels(size: int = 900, seed: int = 3) -> np.ndarray:
    """Discs of radius 12-22 scattered over the image, some touching, many on tile borders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for value in range(1, 121):
        cy, cx, r = rng.integers(20, size - 20), rng.integers(20, size - 20), rng.integers(12, 23)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (labels == 0)] = value
    return labels


def _tile_masks(labels: np.ndarray, tile: Region, rng: np.random.Generator) -> list[Mask]:
    """Each object as the tile sees it, plus what SAM adds: clumps of two neighbours (often scored higher) and
    slightly grown repeats."""
    import cv2

    x, y, w, h = (int(v) for v in (tile.x, tile.y, tile.width, tile.height))
    crop = labels[y:y + h, x:x + w]
    values = [int(v) for v in np.unique(crop) if v]
    masks = [Mask(crop == v, score=float(rng.uniform(0.85, 0.95))) for v in values]
    for v in values[::3]:
        grown = cv2.dilate((crop == v).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        masks.append(Mask(grown, score=float(rng.uniform(0.85, 0.95))))
    for a, b in zip(values[::4], values[1::4]):
        masks.append(Mask((crop == a) | (crop == b), score=0.97))
    return masks


def _pieces_by_tile(labels: np.ndarray, tile_size: int = 256, overlap: int = 64) -> tuple[list[Region], list[list[Piece]]]:
    size = labels.shape[0]
    bounds = (0.0, 0.0, float(size), float(size))
    tiles = plan_tiles(bounds, tile_size, overlap)
    rng = np.random.default_rng(0)
    pieces = [tile_pieces(_tile_masks(labels, t, rng), t, bounds, core=c) for t, c in zip(tiles, tile_cores(tiles, bounds))]
    return tiles, pieces


def _key(pieces: list[Piece]) -> list[tuple[bytes, float]]:
    return sorted((p.geometry.wkb, p.score) for p in pieces)


def test_nested_masks_keep_the_objects_not_the_clump() -> None:
    # A clump mask holding two nuclei, scored higher than either (SAM often does this): the objects are the nuclei.
    a, b = Point(50, 50).buffer(10), Point(72, 50).buffer(10)
    clump = a.union(b).buffer(2)
    pieces = [Piece(clump, 0.98, False), Piece(a, 0.90, False), Piece(b, 0.91, False)]
    inner = merge_pieces(pieces)
    assert sorted(round(p.geometry.area) for p in inner) == sorted(round(g.area) for g in (a, b))
    # the former rule, still available: the better-scored mask of two nested ones
    assert [p.geometry for p in merge_pieces(pieces, nested="score")] == [clump]
    with pytest.raises(JobError, match="nested"):
        merge_pieces(pieces, nested="outer")
    with pytest.raises(JobError, match="nested"):
        AutomaskOptions(nested="outer")


def test_a_tile_sized_mask_does_not_swallow_the_cells_cut_near_it() -> None:
    # Tile A sees a nucleus cut by its right side and a mask of most of the tile (SAM's "tissue" answer) that holds
    # it; tile B, which overlaps A, missed the nucleus. Two masks of one tile are two answers: they must not be joined
    # into one object (which used to make the nucleus vanish into the large mask).
    tile_a, tile_b = (0.0, 0.0, 256.0, 256.0), (192.0, 0.0, 448.0, 256.0)
    nucleus = Point(250, 128).buffer(10)
    large = Piece(box(0, 0, 256, 256).difference(box(0, 0, 40, 40)), 0.99, True, True, tile_a)
    cut = Piece(nucleus.intersection(box(*tile_a)), 0.90, True, False, tile_a)
    other = Piece(Point(300, 60).buffer(10), 0.9, False, True, tile_b)
    merged = merge_pieces([large, cut, other])
    assert any(p.geometry.equals(cut.geometry) for p in merged)
    assert not any(p.geometry.area > 10_000 for p in merged)  # the inner masks win over the large one
    # the same object cut by the two tiles' sides is still joined: the pieces agree where both tiles see it
    wide = box(150, 100, 300, 120)
    joined = merge_pieces([Piece(wide.intersection(box(*tile_a)), 0.9, True, True, tile_a),
                           Piece(wide.intersection(box(*tile_b)), 0.9, True, False, tile_b)])
    assert len(joined) == 1 and joined[0].geometry.equals(wide)


def test_nested_rule_recovers_clumped_objects_across_tiles() -> None:
    labels = _labels()
    _, by_tile = _pieces_by_tile(labels)
    pieces = [p for tile in by_tile for p in tile]
    truths = [mask_to_geometry(labels == v) for v in np.unique(labels) if v]

    def found(merged: list[Piece]) -> int:
        return sum(any(m.geometry.intersection(t).area > 0.9 * m.geometry.union(t).area for m in merged)
                   for t in truths)

    inner, scored = merge_pieces(pieces), merge_pieces(pieces, nested="score")
    assert found(inner) == len(truths)  # every object, whole, and none of the clumps
    assert found(scored) < len(truths)  # the clumps won over their members
    for i, p in enumerate(inner):  # still no two objects overlap
        for q in inner[i + 1:]:
            assert p.geometry.intersection(q.geometry).area < 1e-6


def test_streaming_merge_gives_the_same_objects_as_merging_at_the_end() -> None:
    labels = _labels()
    tiles, by_tile = _pieces_by_tile(labels)
    everything = [p for tile in by_tile for p in tile]
    for nested in ("inner", "score"):
        merger = SeamMerger(tiles, nested=nested)
        streamed: list[Piece] = []
        released_before_end = 0
        for i, pieces in enumerate(by_tile):
            out = merger.add(i, pieces)
            if i < len(tiles) - 1:
                released_before_end += len(out)
            streamed += out
        streamed += merger.finish()
        assert _key(streamed) == _key(merge_pieces(everything, nested=nested))
        # pieces are released as their neighbours finish: most objects are out before the last tile, and the merger
        # never held more than about two rows of tiles' pieces
        assert released_before_end > 0.4 * len(streamed)
        assert merger.peak_pending < 0.6 * len(everything)
        assert not merger.pending


def test_streaming_merge_does_not_depend_on_tile_order() -> None:
    labels = _labels(seed=5)
    tiles, by_tile = _pieces_by_tile(labels)
    order = np.random.default_rng(1).permutation(len(tiles))
    merger = SeamMerger(tiles)
    streamed = [p for i in order for p in merger.add(int(i), by_tile[i])] + merger.finish()
    assert _key(streamed) == _key(merge_pieces([p for tile in by_tile for p in tile]))


def _disc_image(size: tuple[int, int], centre: tuple[int, int], background: int, value: int,
                noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(2)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    image = np.full((h, w), float(background)) + rng.normal(0, noise, (h, w))
    image[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < 6**2] = value
    return np.clip(image, 0, 255).astype(np.uint8)


def test_tissue_test_skips_flat_background_and_keeps_a_lone_cell() -> None:
    tile = Region(0, 0, 512, 512)
    # fluorescence: a dark field with camera noise is background; one small bright nucleus is not
    dark = _disc_image((512, 512), (-100, -100), background=8, value=8, noise=6)
    assert is_background(ArraySource(dark), tile)
    assert not is_background(ArraySource(_disc_image((512, 512), (300, 200), 8, 180, noise=6)), tile)
    # brightfield: flat white glass is background; a faint stained cell is not
    glass = np.repeat(_disc_image((512, 512), (-100, -100), 235, 235, noise=4)[:, :, None], 3, axis=2)
    assert is_background(ArraySource(glass), tile)
    cell = np.repeat(_disc_image((512, 512), (40, 470), 235, 170, noise=4)[:, :, None], 3, axis=2)
    assert not is_background(ArraySource(cell), tile)
    # the threshold is the documented one: a contrast of 30 levels passes at 10 and fails at 40
    step = np.full((512, 512), 100, np.uint8)
    step[:, 256:] = 130
    assert not is_background(ArraySource(step), tile) and is_background(ArraySource(step), tile, contrast=40)
    # arrays that are not 8-bit have no known display range: never called background
    assert not is_background(ArraySource(np.zeros((512, 512), np.uint16)), tile)
    with pytest.raises(JobError, match="contrast"):
        AutomaskOptions(background_contrast=-1)


@pytest.mark.weights
def test_background_tiles_are_skipped_and_the_switch_turns_it_off(mobile_sam, nuclei) -> None:
    image, _ = nuclei
    lo, hi = np.percentile(image, (0.1, 99.9))
    cells = (np.clip((image[:128, :192].astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    slide = np.full((128, 448), int(np.percentile(cells, 5)), np.uint8)  # cells on the left, empty on the right
    slide[:, :192] = cells
    source = ArraySource(slide, "half-empty")
    params = AutomaskParams(points_per_side=8, pred_iou_thresh=0.8, stability_score_thresh=0.85)
    on = AutomaskOptions(params, tile_size=128, overlap=32)
    stats, stats_off = AutomaskStats(), AutomaskStats()
    done: list[tuple[int, int]] = []
    model = load_engine("vit_t", engine="torch", device="cpu", cache=False)  # every tile it sees is encoded
    runs = model.encoder_runs
    kept = automask_region(model, source, options=on, stats=stats, progress=lambda d, t: done.append((d, t)))
    encoded_on, runs = model.encoder_runs - runs, model.encoder_runs
    tiles = plan_tiles((0, 0, 448, 128), 128, 32)
    empty = [t for t in tiles if t.x >= 192]
    assert stats.tiles == len(tiles) == 5 and stats.skipped == len(empty) == 3
    assert encoded_on == 2  # the empty tiles never reach the model
    assert done[-1] == (5, 5)  # skipped tiles still count as done
    automask_region(model, source, options=AutomaskOptions(params, tile_size=128, overlap=32, skip_background=False),
                    stats=stats_off)
    assert stats_off.skipped == 0 and stats_off.tiles == 5 and model.encoder_runs - runs == 5
    assert kept and all(o.geometry.centroid.x < 224 for o in kept)  # nothing from the skipped tiles (x >= 224 alone)
    # the run's own time is accounted for: the model's share and the rest
    assert 0 < stats.model_seconds < stats.total_seconds and 0 <= stats.overhead < 1
    assert stats.objects == len(kept) and stats.pieces >= len(kept)


@pytest.mark.weights
def test_objects_stream_out_before_the_last_tile(mobile_sam, nuclei) -> None:
    image, _ = nuclei
    source = ArraySource(image[:, :448], "strip")
    options = AutomaskOptions(AutomaskParams(points_per_side=6, pred_iou_thresh=0.8, stability_score_thresh=0.85),
                              tile_size=128, overlap=32)
    done = 0
    seen_before_last = 0

    def progress(d: int, total: int) -> None:
        nonlocal done
        done = d

    stream = iter_automask_region(mobile_sam, source, options=options, progress=progress)
    total = len(plan_tiles((0, 0, 448, 512), 128, 32))
    objects = []
    for obj in stream:
        if done < total:
            seen_before_last += 1
        objects.append(obj)
    assert objects and seen_before_last > len(objects) // 2
