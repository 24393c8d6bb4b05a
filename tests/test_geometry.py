"""Masks to polygons: QuPath's pixel-edge convention, holes, pieces and the region transform."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from qpsam.errors import GeometryError
from qpsam.geometry import Region, mask_to_geometry, masks_to_geometries, to_image, to_region
from qpsam.objects import ImagePlane


def test_one_pixel_at_origin_is_the_unit_square() -> None:
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    geometry = mask_to_geometry(mask)
    assert geometry.equals(box(0, 0, 1, 1))


def test_ring_keeps_its_hole() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    mask[4:6, 4:6] = False
    geometry = mask_to_geometry(mask)
    assert isinstance(geometry, Polygon)
    assert len(geometry.interiors) == 1
    assert geometry.area == 36 - 4
    assert Polygon(geometry.interiors[0]).equals(box(4, 4, 6, 6))


def test_separate_pieces_become_a_multipolygon_and_small_ones_can_be_dropped() -> None:
    mask = np.zeros((20, 20), bool)
    mask[1:6, 1:6] = True  # 25 px
    mask[10:12, 10:12] = True  # 4 px
    geometry = mask_to_geometry(mask)
    assert isinstance(geometry, MultiPolygon) and len(geometry.geoms) == 2
    assert geometry.area == 29
    assert mask_to_geometry(mask, min_area=5).equals(box(1, 1, 6, 6))
    assert mask_to_geometry(mask, min_area=100) is None


def test_small_holes_are_dropped_with_min_area() -> None:
    mask = np.ones((10, 10), bool)
    mask[5, 5] = False
    assert len(mask_to_geometry(mask).interiors) == 1
    assert len(mask_to_geometry(mask, min_area=2).interiors) == 0


def test_pixels_touching_at_a_corner_give_valid_geometry() -> None:
    mask = np.array([[1, 0], [0, 1]], bool)
    geometry = mask_to_geometry(mask)
    assert geometry.is_valid and geometry.area == 2


def test_random_masks_trace_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random((24, 31)) > 0.5
        geometry = mask_to_geometry(mask)
        assert geometry.is_valid
        assert geometry.area == mask.sum()


def test_empty_mask_gives_none() -> None:
    assert mask_to_geometry(np.zeros((5, 5), bool)) is None


@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_region_transform_with_downsample_and_offset(downsample: float) -> None:
    region = Region(x=100, y=50, width=64 * downsample, height=32 * downsample, downsample=downsample)
    assert region.shape == (32, 64)
    mask = np.zeros(region.shape, bool)
    mask[3:5, 10:13] = True  # rows 3-4, columns 10-12 of the region image
    geometry = mask_to_geometry(mask, region)
    expected = box(100 + 10 * downsample, 50 + 3 * downsample, 100 + 13 * downsample, 50 + 5 * downsample)
    assert geometry.equals(expected)
    assert geometry.area == 6 * downsample**2
    assert to_region(geometry, region).equals(box(10, 3, 13, 5))
    assert to_image(to_region(expected, region), region).equals(expected)


def test_simplify_reduces_vertices_within_tolerance() -> None:
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 80**2
    full = mask_to_geometry(disc)
    simple = mask_to_geometry(disc, simplify=1.0)
    assert len(simple.exterior.coords) < len(full.exterior.coords) / 2
    assert abs(simple.area - full.area) / full.area < 0.01


def test_bad_masks_and_regions_are_named() -> None:
    with pytest.raises(GeometryError, match="mask must be 2-D"):
        mask_to_geometry(np.zeros((2, 2, 2)))
    with pytest.raises(GeometryError, match="transpose"):
        mask_to_geometry(np.zeros((64, 32), bool), Region(0, 0, 64, 32))
    with pytest.raises(GeometryError, match="downsample must be > 0"):
        Region(0, 0, 10, 10, downsample=0)
    with pytest.raises(GeometryError, match="stack of shape"):
        masks_to_geometries(np.zeros((4, 4), bool))


def test_region_keeps_its_plane() -> None:
    region = Region(0, 0, 10, 10, plane=ImagePlane(z=2, t=1))
    assert region.plane.z == 2 and region.plane.t == 1
