"""The object model: value semantics and validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
from shapely.geometry import LineString, MultiPoint, Point, box

from qpsam.objects import ObjectType, PathClass, PathObject, walk


def test_objects_are_values() -> None:
    a = PathObject(box(0, 0, 2, 2), measurements={"x": math.nan})
    b = a.replace()
    assert a == b  # NaN measurements compare equal
    assert a.replace(name="other") != a
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "x"  # type: ignore[misc]


def test_roi_kinds() -> None:
    assert PathObject(box(0, 0, 2, 3)).roi_kind == "rectangle"
    assert PathObject(Point(0, 0).buffer(2), ellipse=True).roi_kind == "ellipse"
    assert PathObject(Point(0, 0).buffer(2)).roi_kind == "polygon"
    assert PathObject(MultiPoint([(0, 0), (1, 1)])).roi_kind == "points"
    assert PathObject(LineString([(0, 0), (1, 1)])).roi_kind == "line"
    assert PathObject(LineString([(0, 0), (1, 1), (2, 0)])).roi_kind == "polyline"


def test_classes_and_ignored_classes() -> None:
    assert PathClass("Ignore*").is_ignored and not PathClass("Tumor").is_ignored
    assert PathClass.from_names(["Tumor", "Positive"]).names == ("Tumor", "Positive")
    with pytest.raises(ValueError, match="class name"):
        PathClass(" ")
    with pytest.raises(ValueError, match="0..255"):
        PathClass("x", (256, 0, 0))


def test_validation() -> None:
    with pytest.raises(ValueError, match="only cells have a nucleus"):
        PathObject(box(0, 0, 1, 1), nucleus=box(0, 0, 1, 1))
    with pytest.raises(TypeError, match="geometry must be"):
        PathObject("POLYGON")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PathObject(box(0, 0, 1, 1), object_type="blob")  # type: ignore[arg-type]
    assert PathObject(box(0, 0, 1, 1), object_type="cell").object_type is ObjectType.CELL  # type: ignore[arg-type]


def test_walk_is_depth_first() -> None:
    leaf = PathObject(Point(1, 1), name="leaf")
    mid = PathObject(box(0, 0, 5, 5), name="mid", children=(leaf,))
    top = PathObject(box(0, 0, 9, 9), name="top", children=(mid,))
    assert [o.name for o in walk([top])] == ["top", "mid", "leaf"]
