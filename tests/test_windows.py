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
    with pytest.raises(JobError, match="span"):
        plan_windows([PathObject(box(0, 0, 10, 10))], 100, 100, span=1.5)
    (window,) = plan_windows([PathObject(box(0, 0, 10, 10))], 100, 100, downsample=4)
    assert window.region.downsample == 4
    with pytest.raises(JobError, match="outside the image"):
        plan_windows([PathObject(box(500, 500, 510, 510))], 100, 100)
    with pytest.raises(JobError, match="downsample must be > 0"):
        plan_windows([PathObject(box(0, 0, 10, 10))], 100, 100, downsample=0)


# ------------------------------------------------------------------ whole slides: one encoder pass per window


def _owners(windows):
    """The windows each prompt (by identity) is in."""
    out: dict[int, list] = {}
    for w in windows:
        for p in w.prompts:
            out.setdefault(id(p), []).append(w)
    return out


def _owner(windows, obj):
    return _owners(windows).get(id(obj), [])


def _check_plan(windows, prompts, width, height, model_input=1024, context=32.0):
    """Every prompt in exactly one window, its box inside that window with ``context`` pixels around it where the
    slide has them, and no window larger than the model input at its downsample or outside the slide."""
    for w in windows:
        x0, y0, x1, y1 = w.region.bounds
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert max(w.region.shape) <= model_input
    owners = _owners(windows)
    for obj in prompts:
        (w,) = owners.get(id(obj), [])
        x0, y0, x1, y1 = w.region.bounds
        bx0, by0, bx1, by1 = obj.geometry.bounds
        pad = context * w.region.downsample
        assert x0 <= max(0, bx0 - pad) and y0 <= max(0, by0 - pad)
        assert x1 >= min(width, bx1 + pad) and y1 >= min(height, by1 + pad)


def _grid(width: int, height: int, step: int = 64, side: int = 30, offset: int = 10) -> list[PathObject]:
    return [PathObject(box(x, y, x + side, y + side))
            for y in range(offset, height - side, step) for x in range(offset, width - side, step)]


def test_a_dense_slide_needs_about_one_window_per_model_input_not_one_per_group() -> None:
    prompts = _grid(4096, 4096)  # 4,096 nuclei-sized boxes over the whole slide
    windows = plan_windows(prompts, 4096, 4096, span=1.0)
    _check_plan(windows, prompts, 4096, 4096)
    # 4096 = 4 x 1024, and windows must overlap by a box and its context: 5 x 5 is the least a grid can do
    assert len(windows) <= 25
    # by default a window spans 768 pixels, which SAM enlarges to 1024: 6 x 6, as 4096 / (768 - 94) rounds up
    default = plan_windows(prompts, 4096, 4096)
    _check_plan(default, prompts, 4096, 4096)
    assert len(default) <= 36 and all(max(w.region.shape) <= 768 for w in default)
    assert all(w.region.downsample == 1 for w in windows)
    assert sum(len(w.prompts) for w in windows) == len(prompts)


def test_the_window_count_grows_with_the_area() -> None:
    counts = {}
    for size in (1024, 2048, 8192):
        prompts = _grid(size, size, step=128)
        windows = plan_windows(prompts, size, size, span=1.0)
        _check_plan(windows, prompts, size, size)
        counts[size] = len(windows)
    assert counts[1024] == 1
    assert counts[2048] <= 9
    assert counts[8192] <= 81  # 9 x 9: (8192 - 1024) / 9 steps leave 1024 - 896 = 128 px of overlap


def test_boxes_on_the_slide_edges_and_corners_lie_inside_their_windows() -> None:
    w, h = 3000, 2000
    prompts = [PathObject(box(0, 0, 20, 20)), PathObject(box(w - 25, h - 25, w, h)), PathObject(box(0, h - 30, 40, h)),
               PathObject(box(w - 40, 0, w, 35)), PathObject(box(1490, 0, 1510, 15)), PathObject(box(-10, 900, 20, 930))]
    windows = plan_windows(prompts, w, h)
    assert len(windows) <= len(prompts)
    for obj in prompts:
        (window,) = _owner(windows, obj)
        clipped = obj.geometry.intersection(box(0, 0, w, h))
        assert box(*window.region.bounds).contains(clipped)
    _check_plan(windows, prompts[:-1], w, h)


def test_big_boxes_get_a_downsample_and_small_ones_stay_at_full_resolution() -> None:
    small = _grid(2048, 2048, step=256)
    big = [PathObject(box(100, 100, 1900, 1500)), PathObject(box(300, 300, 900, 800))]
    windows = plan_windows(small + big, 2048, 2048)
    _check_plan(windows, small + big, 2048, 2048)
    (w_big,) = _owner(windows, big[0])
    assert w_big.region.downsample == 4  # 1800 px in at most half of 1024 px
    (w_mid,) = _owner(windows, big[1])
    assert w_mid.region.downsample == 2
    assert {w.region.downsample for w in windows if any(p in small for p in w.prompts)} == {1}


def test_a_box_larger_than_a_window_at_a_fixed_downsample_gets_a_window_centred_on_it() -> None:
    huge = PathObject(box(1000, 1000, 4000, 1500))
    near = PathObject(box(2500, 1200, 2530, 1230))  # at its centre: may share its window
    windows = plan_windows([huge, near], 8000, 8000, downsample=1, span=1.0)
    (window,) = _owner(windows, huge)
    assert max(window.region.shape) <= 1024 and window.region.width >= 1000  # as much of it as a window takes
    x0, y0, x1, y1 = window.region.bounds
    assert x0 <= 2500 - 400 and x1 >= 2500 + 400  # around the box's centre, not its corner
    assert y0 <= 1000 and y1 >= 1500
    _check_plan(windows, [near], 8000, 8000)


def test_fixed_downsample_makes_windows_cover_more_of_the_slide() -> None:
    prompts = _grid(8192, 8192, step=128)
    windows = plan_windows(prompts, 8192, 8192, downsample=4, span=1.0)
    _check_plan(windows, prompts, 8192, 8192)
    assert all(w.region.downsample == 4 for w in windows)
    assert len(windows) <= 9  # 4096 px a window: 2 x 2 would leave no overlap


def test_random_boxes_each_land_in_exactly_one_window_that_holds_them() -> None:
    import random

    rng = random.Random(3)
    prompts = []
    for _ in range(3000):
        s = rng.choice([8, 20, 40, 90, 300, 700])
        x, y = rng.uniform(-s / 2, 6000 - s / 2), rng.uniform(-s / 2, 5000 - s / 2)
        plane = ImagePlane(z=rng.choice([0, 0, 0, 1]))
        prompts.append(PathObject(box(x, y, x + s, y + s * rng.uniform(0.5, 1.5)), plane=plane))
    prompts.append(PathObject(Point(3000, 2500)))
    windows = plan_windows(prompts, 6000, 5000)
    assert sum(len(w.prompts) for w in windows) == len(prompts)
    owners = _owners(windows)
    for obj in prompts:
        (window,) = owners.get(id(obj), [])
        assert window.region.plane.z == obj.plane.z
        clipped = obj.geometry.intersection(box(0, 0, 6000, 5000)).bounds if obj.roi_kind != "point" else None
        if clipped:
            x0, y0, x1, y1 = window.region.bounds
            assert x0 <= clipped[0] and y0 <= clipped[1] and x1 >= clipped[2] and y1 >= clipped[3]
    assert all(max(w.region.shape) <= 1024 for w in windows)


def test_detection_plan_gives_each_window_its_prompts_in_window_pixels_with_the_background() -> None:
    from qpsam.jobs.detect import DetectOptions, detection_plan
    from qpsam.prompts import PromptSet

    boxes = _grid(2048, 2048, step=200)
    background = PathObject(Point(1000, 1000))
    plan = detection_plan(PromptSet(tuple(boxes), (background,)), 2048, 2048, DetectOptions())
    assert sorted(p.key for _, prompts in plan for p in prompts) == sorted(b.id for b in boxes)
    for window, prompts in plan:
        assert [p.key for p in prompts] == [o.id for o in window.prompts]
        x0, y0 = window.region.x, window.region.y
        for prompt, obj in zip(prompts, window.prompts):
            bx0, by0, bx1, by1 = obj.geometry.bounds
            assert prompt.box == (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0)  # downsample 1: pixels shifted
            inside = window.region.x <= 1000 <= window.region.x + window.region.width and \
                window.region.y <= 1000 <= window.region.y + window.region.height
            assert prompt.labels == ((0,) if inside else ())
