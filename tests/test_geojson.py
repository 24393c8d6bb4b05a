"""QuPath GeoJSON: QuPath's own exports read, written and read back without loss; bad input named."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from pathlib import Path

import pytest
from shapely.geometry import MultiPoint, Point, Polygon, box

from qpsam import geojson
from qpsam.errors import GeoJSONError
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject


def _raw_features(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Single_cells.geojson", {"annotation": 10, "cell": 121}),
        ("TD_01_verysmall_mIF.geojson", {"annotation": 9}),
    ],
)
def test_qupath_export_round_trip(lmd: Path, tmp_path: Path, name: str, expected: dict) -> None:
    source = lmd / name
    objects = geojson.read(source)
    assert Counter(o.object_type.value for o in objects) == expected

    # Ids, classes and measurements are exactly those in QuPath's file.
    raw = _raw_features(source)
    for obj, feature in zip(objects, raw):
        assert str(obj.id) == feature["id"]
        cls = feature["properties"].get("classification")
        assert obj.class_name == (cls["name"] if cls else None)
        if cls:
            assert obj.path_class.color == tuple(cls["color"])
        measurements = feature["properties"].get("measurements", {})
        assert list(obj.measurements) == list(measurements)
        assert all(obj.measurements[k] == pytest.approx(float(v), nan_ok=True) for k, v in measurements.items())

    out = geojson.write(tmp_path / name, objects)
    again = geojson.read(out)
    assert again == objects  # ids, classes, names, locks, measurements, exact geometry


def test_cells_with_nucleus_planes_children_and_nan_round_trip(tmp_path: Path) -> None:
    nucleus = box(2, 2, 6, 6)
    cell = PathObject(
        box(0, 0, 10, 10),
        ObjectType.CELL,
        PathClass("Tumor: Positive", (200, 0, 0)),
        nucleus=nucleus,
        measurements={"Nucleus: Area": 16.0, "Missing": math.nan, "Big": math.inf},
        plane=ImagePlane(c=-1, z=3, t=2),
    )
    parent = PathObject(
        Polygon([(0, 0), (50, 0), (50, 50), (0, 50)], holes=[[(20, 20), (30, 20), (30, 30), (20, 30)]]),
        name="tissue",
        color=(1, 2, 3),
        locked=True,
        children=(cell,),
        metadata={"source": "qpsam"},
    )
    points = PathObject(MultiPoint([(1.5, 2.5), (3.25, 4.0)]), path_class=PathClass("Ignore*", (180, 180, 180)))
    path = geojson.write(tmp_path / "objects.geojson", [parent, points])
    text = path.read_text()
    assert '"NaN"' in text and '"Infinity"' in text  # as QuPath 0.5+ writes non-finite numbers
    back = geojson.read(path)
    assert back == [parent, points]
    feature = json.loads(text)["features"][0]["properties"]["childObjects"][0]
    assert "nucleusGeometry" in feature  # top level, as QuPath writes it
    assert feature["geometry"]["plane"] == {"c": -1, "z": 3, "t": 2}
    assert feature["properties"]["classification"] == {"names": ["Tumor", "Positive"], "color": [200, 0, 0]}


def test_default_plane_and_unlocked_are_not_written() -> None:
    feature = geojson.to_feature(PathObject(Point(1, 2)))
    assert "plane" not in feature["geometry"]
    assert "isLocked" not in feature["properties"]
    assert feature["properties"]["objectType"] == "annotation"


def test_class_without_colour_is_written_as_a_bare_string() -> None:
    # QuPath 0.4-0.7 throw on {"name": ...} without a colour.
    feature = geojson.to_feature(PathObject(Point(1, 2), path_class=PathClass("Tumor")))
    assert feature["properties"]["classification"] == "Tumor"


def test_older_spellings_are_read() -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [1, 2]},
            "properties": {
                "object_type": "detection",
                "classification": {"name": "Stroma", "colorRGB": -16711936},
                "measurements": [{"name": "Area", "value": 3}, {"name": "Odd", "value": "nan"}],
                "color": -65536,
            },
        }
    ]
    (obj,) = geojson.from_data(features)
    assert obj.object_type is ObjectType.DETECTION
    assert obj.path_class == PathClass("Stroma", (0, 255, 0))
    assert obj.color == (255, 0, 0)
    assert obj.measurements["Area"] == 3.0 and math.isnan(obj.measurements["Odd"])
    assert isinstance(obj.id, uuid.UUID)


@pytest.mark.parametrize(
    "feature, message",
    [
        ({"type": "Feature", "properties": {}}, "feature 1: has no geometry"),
        (
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}},
            "feature 1: geometry of type 'Polygon' is malformed",
        ),
        (
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}},
            "feature 1: geometry is invalid (Self-intersection",
        ),
        (
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"objectType": "blob"}},
            "feature 1: unknown object type 'blob'",
        ),
        (
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"measurements": {"a": [1]}}},
            "feature 1: measurement 'a' must be a number",
        ),
        (
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"color": [300, 0, 0]}},
            "feature 1: colour must be [r, g, b]",
        ),
        ({"type": "Feature", "geometry": {"type": "GeometryCollection", "geometries": []}}, "feature 1: geometry of type GeometryCollection"),
        ("not a feature", "feature 1: expected a GeoJSON Feature object"),
    ],
)
def test_bad_features_name_their_index_and_problem(feature: object, message: str) -> None:
    good = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {}}
    with pytest.raises(GeoJSONError) as info:
        geojson.from_data([good, feature])
    assert message in str(info.value)


def test_invalid_polygons_can_be_kept_or_fixed() -> None:
    bowtie = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}}
    (kept,) = geojson.from_data([bowtie], on_invalid="keep")
    assert not kept.geometry.is_valid
    (fixed,) = geojson.from_data([bowtie], on_invalid="fix")
    assert fixed.geometry.is_valid and fixed.geometry.area == pytest.approx(2.0)


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(GeoJSONError, match="bad.geojson: not valid JSON"):
        geojson.read(bad)
    with pytest.raises(GeoJSONError, match="missing.geojson: cannot read"):
        geojson.read(tmp_path / "missing.geojson")


def test_write_is_atomic_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.geojson"
    target.write_text("previous")
    with pytest.raises(ValueError):  # NaN coordinates cannot be written as JSON
        geojson.write(target, [PathObject(Point(float("nan"), 0))])
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.geojson"]  # no temporary file left behind


def test_precision_rounds_like_qupath() -> None:
    feature = geojson.to_feature(PathObject(Point(1.23456, 2.0)), precision=2)
    assert feature["geometry"]["coordinates"] == [1.23, 2]
