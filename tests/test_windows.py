"""Context windows for prompt detection: shared where prompts are close, downsampled for big objects."""

from __future__ import annotations

import pytest
from shapely.geometry import Point, box

from qpsam.errors import JobError
from qpsam.jobs.windows import plan_windows
from qpsam.objects import ImagePlane, PathObject


def test_nearby_prompts_share_one_window_at_full_resolution() -> None:
    prompts = [PathObject(box(100 + 40 * i, 100, 120 + 40 * i, 120)) for i in range(5)]
    (window,) = plan_windows(prompts, 5000, 5000)
    assert window.region.downsample == 1 and len(window.prompts) == 5
    assert window.region.x <= 100 and window.region.x + window.region.width >= 280


def test_far_apart_prompts_get_their_own_windows() -> None:
    prompts = [PathObject(box(100, 100, 120, 120)), PathObject(box(40000, 30000, 40020, 30020))]
    windows = plan_windows(prompts, 50000, 50000)
    assert len(windows) == 2
    assert all(w.region.width <= 1024 and w.region.height <= 1024 for w in windows)


def test_big_objects_are_read_downsampled_and_never_larger_than_the_model_input() -> None:
    (window,) = plan_windows([PathObject(box(0, 0, 6000, 3000))], 100000, 100000)
    assert window.region.downsample == 16  # 6000 px must fit in half of 1024 px
    assert window.region.shape[1] <= 1024


def test_windows_are_clipped_to_the_image_and_split_by_plane() -> None:
    prompts = [PathObject(Point(5, 5), plane=ImagePlane(z=0)), PathObject(Point(5, 5), plane=ImagePlane(z=1))]
    windows = plan_windows(prompts, 50, 40)
    assert sorted(w.region.plane.z for w in windows) == [0, 1]
    assert all(w.region.bounds == (0, 0, 50, 40) for w in windows)


def test_fixed_downsample_and_bad_input() -> None:
    (window,) = plan_windows([PathObject(box(0, 0, 10, 10))], 100, 100, downsample=4)
    assert window.region.downsample == 4
    with pytest.raises(JobError, match="outside the image"):
        plan_windows([PathObject(box(500, 500, 510, 510))], 100, 100)
    with pytest.raises(JobError, match="downsample must be > 0"):
        plan_windows([PathObject(box(0, 0, 10, 10))], 100, 100, downsample=0)
