"""SAM prompts from QuPath objects: each ROI kind, background points and the region transform."""

from __future__ import annotations

from shapely.geometry import LineString, MultiPoint, Point, box

from qpsam import geojson
from qpsam.geometry import Region
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject
from qpsam.prompts import box_in_region, prompts_from_objects, select_prompt_objects

IGNORE = PathClass("Ignore*", (180, 180, 180))


def test_rectangle_becomes_a_box_in_region_pixels() -> None:
    rect = PathObject(box(110.4, 60.2, 130.6, 81.5))
    (prompt,) = prompts_from_objects([rect], Region(100, 50, 200, 200, downsample=2))
    # integer bounds [110, 60, 131, 82]; x1 = trunc(10/2), y1 = trunc(10/2), x2 = round(31/2), y2 = round(32/2)
    assert prompt.box == (5, 5, 16, 16)
    assert prompt.points == () and prompt.key == rect.id


def test_box_rounding_follows_javas_math_round() -> None:
    # 29 / 2 = 14.5: Java's Math.round gives 15, Python's round() would give 14.
    assert box_in_region(box(0, 0, 29, 29), Region(0, 0, 100, 100, downsample=2))[2:] == (15, 15)


def test_points_become_foreground_points_in_one_prompt() -> None:
    pts = PathObject(MultiPoint([(10.9, 20.2), (30.5, 40.7), (1000, 1000)]))
    (prompt,) = prompts_from_objects([pts], Region(0, 0, 100, 100))
    assert prompt.points == ((10, 20), (30, 40))  # floor; the point outside the region is dropped
    assert prompt.labels == (1, 1)


def test_line_vertices_become_points() -> None:
    line = PathObject(LineString([(4, 4), (8, 12), (20, 2)]))
    (prompt,) = prompts_from_objects([line], Region(0, 0, 40, 40, downsample=4))
    assert prompt.points == ((1, 1), (2, 3), (5, 0))
    assert prompts_from_objects([line], Region(0, 0, 40, 40), permit_lines=False) == []


def test_ignored_class_points_are_background_for_every_prompt() -> None:
    rect = PathObject(box(0, 0, 10, 10))
    fg = PathObject(Point(20, 20))
    bg = PathObject(MultiPoint([(5, 5), (6, 6)]), path_class=IGNORE)
    prompts = prompts_from_objects([rect, fg, bg], Region(0, 0, 50, 50))
    assert len(prompts) == 2
    boxed, pointed = prompts
    assert boxed.box == (0, 0, 10, 10)
    assert boxed.points == ((5, 5), (6, 6)) and boxed.labels == (0, 0)
    assert pointed.points == ((5, 5), (6, 6), (20, 20))  # background first, as the extension sends them
    assert pointed.labels == (0, 0, 1)


def test_only_annotation_prompts_of_prompt_kinds_are_used() -> None:
    objects = [
        PathObject(box(0, 0, 5, 5), object_type=ObjectType.DETECTION),  # detections are never prompts
        PathObject(Point(1, 1).buffer(3)),  # polygons are not prompts
        PathObject(box(0, 0, 5, 5), path_class=IGNORE),  # ignored rectangles are neither (SAM1/2)
        PathObject(box(1, 1, 4, 4)),
    ]
    found = select_prompt_objects(objects)
    assert found.foreground == (objects[3],) and found.background == ()


def test_prompts_on_other_planes_are_left_out_unless_asked() -> None:
    here = PathObject(Point(5, 5), plane=ImagePlane(z=2))
    there = PathObject(Point(6, 6), plane=ImagePlane(z=3))
    region = Region(0, 0, 10, 10, plane=ImagePlane(z=2))
    assert [p.key for p in prompts_from_objects([here, there], region)] == [here.id]
    assert len(prompts_from_objects([here, there], region, match_plane=False)) == 2


def test_prompts_from_qupath_export(lmd) -> None:
    objects = geojson.read(lmd / "TD_01_verysmall_mIF.geojson")
    prompts = prompts_from_objects(objects, Region(0, 0, 1000, 1000, downsample=4))
    kinds = sorted("box" if p.box else "points" for p in prompts)
    # rectangles and the three calibration points of QuPath's export
    assert kinds.count("points") == 3 and kinds.count("box") == sum(o.roi_kind == "rectangle" for o in objects)
    assert all(0 <= c < 250 for p in prompts for xy in p.points for c in xy)
