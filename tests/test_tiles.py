"""Tiled automask merging: objects across tile borders come out whole and once.

The masks per tile here are the exact objects of a drawn label image as a tile sees them (cut by its border), so
the test checks the tiling and merging logic alone; the model's part is tested with real weights elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely import union_all
from shapely.geometry import box

from qpsam.errors import JobError
from qpsam.geometry import Region, mask_to_geometry
from qpsam.jobs.automask import merge_pieces, plan_tiles, tile_pieces
from qpsam.sam import Mask


def _labels(size: int = 600) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    # Tiles of 256 with overlap 64 start at 0, 192, 344: put discs on and around those borders.
    centres = [(100, 100), (256, 100), (192, 300), (250, 250), (400, 344), (540, 540), (300, 560)]
    for i, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 20**2] = i
    labels[150:190, 20:560] = len(centres) + 1  # a long object, larger than the overlap, across three tiles
    return labels


def _tile_masks(labels: np.ndarray, tile: Region) -> list[Mask]:
    x, y, w, h = (int(v) for v in (tile.x, tile.y, tile.width, tile.height))
    crop = labels[y:y + h, x:x + w]
    return [Mask(crop == v, score=0.9) for v in np.unique(crop) if v]


def test_tiles_cover_the_region_with_overlap() -> None:
    tiles = plan_tiles((0, 0, 600, 600), 256, 64)
    assert [t.x for t in tiles[:3]] == [0, 192, 344]
    assert all(t.width == 256 and t.height == 256 for t in tiles)
    assert box(0, 0, 600, 600).difference(union_all([box(*t.bounds) for t in tiles])).is_empty
    assert plan_tiles((10, 10, 100, 60), 256, 64) == [Region(10, 10, 90, 50)]
    with pytest.raises(JobError, match="empty"):
        plan_tiles((5, 5, 5, 9), 256, 64)


def test_objects_across_tile_borders_come_out_whole_and_once() -> None:
    labels = _labels()
    bounds = (0, 0, 600, 600)
    pieces = []
    for tile in plan_tiles(bounds, 256, 64):
        pieces += tile_pieces(_tile_masks(labels, tile), tile, bounds)
    assert any(p.cut for p in pieces)  # the borders really cut some masks
    merged = merge_pieces(pieces)
    truth = [mask_to_geometry(labels == v) for v in np.unique(labels) if v]
    assert len(merged) == len(truth)
    for geometry in truth:
        best = max(merged, key=lambda p: p.geometry.intersection(geometry).area)
        iou = best.geometry.intersection(geometry).area / best.geometry.union(geometry).area
        assert iou > 0.999


def test_downsampled_tiles_map_back_to_image_coordinates() -> None:
    labels = _labels()
    bounds = (0, 0, 600, 600)
    tiles = plan_tiles(bounds, 128, 32, downsample=2)
    assert all(t.width == 256 for t in tiles[:2])
    pieces = []
    for tile in tiles:
        x, y, w, h = (int(v) for v in (tile.x, tile.y, tile.width, tile.height))
        crop = labels[y:y + h:2, x:x + w:2]
        pieces += tile_pieces([Mask(crop == v, 0.9) for v in np.unique(crop) if v], tile, bounds)
    merged = merge_pieces(pieces)
    assert len(merged) == len(np.unique(labels)) - 1
