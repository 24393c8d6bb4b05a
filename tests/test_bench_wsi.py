"""The model-free parts of benchmarks/bench_wsi.py: slides with ground truth, IoU matching, seam duplicates.

Small synthetic arrays only; the benchmark itself (models, subprocesses, large slides) is never run here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Point, box

from qpsam.geometry import Region, mask_to_geometry
from qpsam.project.pixels import open_image

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_wsi.py"
_spec = importlib.util.spec_from_file_location("bench_wsi", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_wsi"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)


def _source(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric image (every flip/rotation differs) and a label image of a few discs and a square."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4000, size=(n, n)).astype(np.uint16)
    labels = np.zeros((n, n), np.uint16)
    yy, xx = np.mgrid[:n, :n]
    for value, (cy, cx, r) in enumerate([(12, 14, 6), (40, 20, 8), (20, 45, 5)], start=3):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value
    labels[50:60, 44:58] = 9  # ids need not be contiguous
    return image, labels


def test_dihedral_gives_eight_distinct_transforms() -> None:
    image, _ = _source()
    views = [bench.dihedral(image, k) for k in range(8)]
    assert len({v.tobytes() for v in views}) == 8
    assert np.array_equal(bench.dihedral(image, 0), image)


def test_layout_refuses_sizes_that_do_not_tile() -> None:
    with pytest.raises(ValueError, match="multiple"):
        bench.make_layout(1000, 512)
    layout = bench.make_layout(256, 64, seed=3)
    assert layout.transforms.shape == (4, 4)
    assert np.array_equal(layout.transforms, bench.make_layout(256, 64, seed=3).transforms)


def test_gt_label_ids_are_unique_across_tiles_and_match_the_outlines() -> None:
    image, labels = _source()
    layout = bench.make_layout(192, 64, seed=5)
    truths = bench.ground_truth(labels, layout)
    per_tile = [set(np.unique(bench.tile_labels(labels, layout, r, c))) - {0}
                for r in range(layout.rows) for c in range(layout.cols)]
    assert all(len(ids) == 4 for ids in per_tile)
    everything = set().union(*per_tile)
    assert len(everything) == 4 * 9  # no id is shared by two tiles
    assert {t.id for t in truths} == everything
    # Each outline is its label's pixels, in slide coordinates.
    whole = np.block([[bench.tile_labels(labels, layout, r, c) for c in range(layout.cols)]
                      for r in range(layout.rows)])
    for t in truths[::5]:
        expected = mask_to_geometry(whole == t.id, Region(0, 0, 192, 192))
        assert t.geometry.symmetric_difference(expected).area == 0


def test_slide_is_a_pyramidal_ome_tiff_that_qpsam_reads(tmp_path: Path) -> None:
    image, _ = _source()
    layout = bench.make_layout(256, 64, seed=7)
    path = tmp_path / "slide.ome.tif"
    downsamples = bench.write_slide(path, image, layout, tile=64)
    assert downsamples == [1, 2, 4]
    reader = open_image(path)
    assert (reader.width, reader.height) == (256, 256)
    assert reader.downsamples == (1.0, 2.0, 4.0)
    assert reader.level_sizes() == [(256, 256), (128, 128), (64, 64)]
    full = reader.read_level(0, 0, 0, 256, 256)[:, :, 0]
    for r in range(4):
        for c in range(4):
            tile = full[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64]
            assert np.array_equal(tile, bench.dihedral(image, int(layout.transforms[r, c])))
    for level, d in ((1, 2), (2, 4)):
        assert np.array_equal(reader.read_level(level, 0, 0, 256 // d, 256 // d)[:, :, 0], bench.pool(full, d))
    import tifffile

    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.pages[0].is_tiled and tif.pages[0].compression == 8  # zlib (deflate)


def test_recall_and_precision_of_a_known_matching() -> None:
    truths = [box(x, 0, x + 10, 10) for x in range(0, 100, 20)]  # 5 squares of 100 px²
    found = [
        box(0, 0, 10, 10),  # exact
        box(21, 0, 31, 10),  # IoU 90 / 110 = 0.82
        box(40, 0, 45, 10),  # IoU 0.5: counted
        box(60, 0, 64, 10),  # IoU 0.4: not counted
        box(0, 0, 10, 10),  # a duplicate of the first: one-to-one, so not counted twice
        box(500, 500, 510, 510),  # nowhere near
    ]
    m = bench.match(found, truths)
    assert (m.found, m.truths, m.matched) == (6, 5, 3)
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(0.6)
    assert bench.match([], truths).recall == 0.0


def test_seam_duplicates_of_a_naive_tiled_merge() -> None:
    # Discs on a 100x100 canvas; two tiles [0, 60) and [40, 100) in x overlap in [40, 60).
    yy, xx = np.mgrid[:100, :100]
    centres = [(20, 20), (50, 50), (80, 52), (30, 85)]  # two of them lie whole in the overlap
    discs = [(yy - cy) ** 2 + (xx - cx) ** 2 <= 36 for cy, cx in centres]
    objects = []
    for x0 in bench.tile_origins(100, 60, 20):
        for disc in discs:
            part = disc[:, x0 : x0 + 60]
            if part.any():
                objects.append(mask_to_geometry(part, Region(x0, 0, 60, 100)))
    assert bench.tile_origins(100, 60, 20) == [0, 40]
    pairs = bench.seam_duplicates(objects)
    assert len(pairs) == 2
    assert all(objects[i].equals(objects[j]) for i, j in pairs)
    # Neighbours that only touch, or overlap by less than 20 % of the smaller one, are not duplicates.
    assert len(bench.seam_duplicates([box(0, 0, 10, 10), box(10, 0, 20, 10), box(19, 0, 29, 10)])) == 0
    assert len(bench.seam_duplicates([Point(0, 0).buffer(5), Point(3, 0).buffer(5)])) == 1


def test_tile_origins_cover_the_slide() -> None:
    assert bench.tile_origins(1024, 1024, 128) == [0]
    origins = bench.tile_origins(4096, 1024, 128)
    assert origins[0] == 0 and origins[-1] == 4096 - 1024
    assert all(b - a <= 1024 - 128 for a, b in zip(origins, origins[1:]))


def test_blank_tiles_hold_background_and_no_ground_truth(tmp_path: Path) -> None:
    image, labels = _source()
    layout = bench.make_layout(256, 64, seed=2, blank=0.5)
    empty = [(r, c) for r in range(4) for c in range(4) if layout.transforms[r, c] < 0]
    assert 0 < len(empty) < 16
    truths = bench.ground_truth(labels, layout)
    assert len(truths) == 4 * (16 - len(empty))
    r, c = empty[0]
    assert not bench.tile_labels(labels, layout, r, c).any()
    bench.write_slide(tmp_path / "s.ome.tif", image, layout, tile=64)
    block = open_image(tmp_path / "s.ome.tif").read_level(0, c * 64, r * 64, c * 64 + 64, r * 64 + 64)
    assert len(np.unique(block)) == 1


def test_duplicate_kinds_tells_one_nucleus_twice_from_neighbours_that_spill() -> None:
    truths = [box(0, 0, 10, 10), box(10, 0, 20, 10), box(20, 0, 30, 10)]  # nuclei that touch
    found = [box(0, 0, 10, 10), box(1, 0, 11, 10),  # the first one twice
             box(10, 0, 20, 10), box(17, 0, 30, 10)]  # the second, and the third spilling into it
    dups = bench.seam_duplicates(found)
    assert dups.tolist() == [[0, 1], [2, 3]] and len(bench.seam_duplicates(truths)) == 0
    assert bench.duplicate_kinds(found, truths, dups) == 1


def test_layout_with_tissue_on_part_of_the_slide() -> None:
    layout = bench.make_layout(32 * 64, 64, seed=2, tissue=0.3)
    held = layout.transforms >= 0
    assert abs(held.mean() - 0.3) < 0.03  # one disc of about that share of the slide
    assert held[16, 16] and not held[0, 0] and not held[-1, -1]
    assert (bench.make_layout(256, 64, tissue=1.0).transforms >= 0).all()
    with pytest.raises(ValueError, match="tissue"):
        bench.make_layout(256, 64, tissue=0)
