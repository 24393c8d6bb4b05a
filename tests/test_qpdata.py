"""data.qpdata: QuPath's objects read exactly, written back byte for byte, new objects written and read back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import shapely
from conftest import SAMPLES
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from qpsam import geojson
from qpsam.errors import ProjectError
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject, walk
from qpsam.project import javaser as J
from qpsam.project import qpdata as Q
from qpsam.project.qpdata.values import Pool, hashmap

QPDATA = sorted(SAMPLES.glob("*/data/*/data.qpdata"))


@pytest.mark.parametrize("path", QPDATA, ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}")
def test_counts_equal_qupath_summary_and_file_reencodes_exactly(path: Path) -> None:
    data = path.read_bytes()
    q = Q.parse_qpdata(data, str(path))
    summary = json.loads((path.parent / "summary.json").read_text())
    assert Q.summarize(q.objects) == summary["hierarchy"]
    assert q.image_type == summary["imageType"]
    # Every object goes through the object encoder; unchanged objects must come out as QuPath wrote them.
    assert q.to_bytes() == data


def test_objects_equal_qupaths_geojson_export(lmd: Path) -> None:
    q = Q.read_qpdata(lmd / "data" / "1" / "data.qpdata")
    ours = {o.id: o for o in walk(q.objects)}
    exported = geojson.read(lmd / "Single_cells.geojson")
    assert len(exported) == len(ours) == 131
    for ref in exported:
        obj = ours[ref.id]
        assert (obj.object_type, obj.path_class, obj.name, obj.locked, obj.ellipse) == \
               (ref.object_type, ref.path_class, ref.name, ref.locked, ref.ellipse)
        assert dict(obj.measurements) == dict(ref.measurements)
        # QuPath's export rounds coordinates to 2 decimals; ellipses are polygonised the same way.
        assert len(shapely.get_coordinates(obj.geometry)) == len(shapely.get_coordinates(ref.geometry))
        assert obj.geometry.hausdorff_distance(ref.geometry) <= 0.01
    types = [o.object_type for o in ours.values()]
    assert types.count(ObjectType.CELL) == 121 and types.count(ObjectType.ANNOTATION) == 10
    # Cells are the children of the locked rectangle annotation, as in QuPath.
    parent = next(o for o in q.objects if o.locked)
    assert parent.roi_kind == "rectangle" and len(parent.children) == 121


def test_display_settings_and_entry_id_are_read_as_properties(lmd: Path) -> None:
    q = Q.read_qpdata(lmd / "data" / "1" / "data.qpdata")
    assert q.properties["PROJECT_ENTRY_ID"].endswith("project.qpproj::1")
    display = json.loads(q.properties["qupath.lib.display.ImageDisplay"])
    assert len(display) == 15 and display[4]["selected"] is True
    assert q.qupath_version == "0.6.0" and q.server["metadata"]["width"] == 1000


def _variety() -> list[PathObject]:
    """One object of every kind qpsam writes (some with coordinates that are not 32-bit floats, one rectangle
    whose corners are not in QuPath's order)."""
    tumor = PathClass("Tumor", (200, 0, 0))
    positive = PathClass("Tumor: Positive", (250, 62, 62))
    cell = PathObject(Polygon([(10, 10), (30, 10), (30, 30), (10, 30.5)]), ObjectType.CELL, positive,
                      nucleus=Polygon([(15, 15), (25, 15), (25, 25)]), measurements={"Nucleus: Area": 50.25,
                                                                                      "NaN one": math.nan})
    return [
        PathObject(Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(10, 10), (20, 10), (20, 20)]]),
                   name="with a hole", path_class=tumor, metadata={"ANNOTATION_DESCRIPTION": "notes"},
                   children=(cell, PathObject(box(40, 40, 50, 50), ObjectType.TILE))),
        PathObject(MultiPolygon([box(200, 200, 210, 210), box(220, 220, 230, 230)]), locked=True,
                   color=(1, 2, 3)),
        PathObject(Polygon([(300, 300), (300, 310), (320, 310), (320, 300), (300, 300)])),  # QuPath's rectangle
        PathObject(Polygon([(0.1, 0.2), (5.3, 0.1), (3.3, 7.7)])),  # doubles: QuPath keeps them as floats
        PathObject(Polygon([(1.5, 2.5), (9.25, 2.5), (4.125, 8)]), ObjectType.DETECTION, PathClass("Other"),
                   plane=ImagePlane(c=1, z=2, t=3), color=(10, 20, 30, 128)),
        PathObject(Point(5.5, 6.5), name="ünïcode\x00 and NUL"),
        PathObject(MultiPoint([(1, 1), (2, 2), (3.75, 4)]), path_class=PathClass("Ignore*", (180, 180, 180))),
        PathObject(LineString([(0, 0), (10.1, 20.2)])),
        PathObject(LineString([(0, 0), (10, 20), (30, 5.5)])),
        PathObject(LineString([(0, 0), (10.1, 20), (30, 5.5)])),
        PathObject(Q.ellipse_polygon(10, 20, 50, 80), ellipse=True),
        PathObject(Q.ellipse_polygon(500, 500, 600, 600), ObjectType.TMA_CORE, name="A-1", ellipse=True),
    ]


@pytest.mark.parametrize("version", ["0.4.0", "0.6.0"])
def test_new_objects_of_every_kind_round_trip_exactly(tmp_path: Path, version: str) -> None:
    objects = _variety()
    q = Q.new_qpdata({"builderType": "uri", "uri": "file:/x.tif"}, "FLUORESCENCE", version, "/p.qpproj::1")
    q.objects = objects
    back = Q.write_qpdata(tmp_path / "data.qpdata", q)
    stored = [_as_qupath_keeps(o, version) for o in objects]
    assert back.objects == stored
    again = Q.read_qpdata(tmp_path / "data.qpdata")
    assert again.objects == stored and again.image_type == "FLUORESCENCE"
    assert again.properties == {"PROJECT_ENTRY_ID": "/p.qpproj::1"}
    # Re-encoding what was read changes nothing, and GeoJSON carries the same objects.
    assert again.to_bytes() == (tmp_path / "data.qpdata").read_bytes()
    assert geojson.loads(geojson.dumps(again.objects)) == stored


def _as_qupath_keeps(obj: PathObject, version: str) -> PathObject:
    """``obj`` as QuPath's ROIs hold it: 32-bit float coordinates, a rectangle as its corners from the top left
    going down first (the order ``RectangleROI`` gives back)."""
    def kept(geometry: shapely.Geometry | None) -> shapely.Geometry | None:
        if geometry is None or obj.ellipse:
            return geometry
        kind = Q.roi_class(geometry, False, version)
        if kind == "RectangleROI":
            x, y, x2, y2 = geometry.bounds
            geometry = Polygon([(x, y), (x, y2), (x2, y2), (x2, y)])
        if kind != "GeometryROI":
            geometry = shapely.transform(geometry, lambda xy: xy.astype("float32").astype("float64"))
        return geometry

    return obj.replace(geometry=kept(obj.geometry), nucleus=kept(obj.nucleus),
                       children=tuple(_as_qupath_keeps(c, version) for c in obj.children))


def test_polygons_and_rectangles_are_written_as_qupath_imports_them(tmp_path: Path) -> None:
    """Issue 13.4: not a GeometryROI for coordinates that are not 32-bit floats, and a RectangleROI whatever the
    order of a rectangle's corners."""
    rectangles = [Polygon([(0, 0), (9.01, 0), (9.01, 5.03), (0, 5.03)]), box(40, 40, 50, 50),
                  Polygon([(50, 50), (40, 50), (40, 40), (50, 40)])]
    objects = [PathObject(r) for r in rectangles] + [
        PathObject(Polygon([(0.1, 0.2), (5.3, 0.1), (3.3, 7.7)])), PathObject(LineString([(0, 0), (1.1, 2), (3, 4)]))]
    q = Q.new_qpdata(None, "OTHER", "0.6.0")
    q.objects = objects
    kinds = [o.class_name.split(".")[-1] for o in _walk_java(J.loads(q.to_bytes()).contents)
             if o.class_name.startswith("qupath.lib.roi.")]
    assert sorted(kinds) == sorted(["RectangleROI$SerializationProxy"] * 3 + ["PolygonROI$SerializationProxy",
                                                                             "PolylineROI$SerializationProxy"])


def test_rois_are_the_ones_qupath_makes(tmp_path: Path) -> None:
    q = Q.new_qpdata(None, "OTHER", "0.6.0")
    q.objects = _variety()
    stream = J.loads(q.to_bytes())
    found = set()
    for obj in _walk_java(stream.contents):
        if obj.class_name.startswith("qupath.lib.roi."):
            found.add(obj.class_name.split(".")[-1])
    assert found >= {"GeometryROI$WKBSerializationProxy", "PolygonROI$SerializationProxy",
                     "RectangleROI$SerializationProxy", "EllipseROI$SerializationProxy",
                     "PointsROI$SerializationProxy", "LineROI$SerializationProxy",
                     "PolylineROI$SerializationProxy"}


def _walk_java(items):  # type: ignore[no-untyped-def]
    seen = set()
    stack = list(items)
    while stack:
        item = stack.pop()
        if id(item) in seen or not isinstance(item, (J.JavaObject, J.JavaArray)):
            continue
        seen.add(id(item))
        if isinstance(item, J.JavaArray):
            stack.extend(item.values if isinstance(item.values, list) else [])
            continue
        yield item
        stack.extend(item.external or [])
        for data in item.class_data:
            stack.extend(data.values.values())
            stack.extend(data.annotation or [])


def test_edit_keeps_untouched_objects_byte_identical(lmd: Path, tmp_path: Path) -> None:
    original = (lmd / "data" / "1" / "data.qpdata").read_bytes()
    q = Q.parse_qpdata(original)
    rect = q.objects[0]
    first_cell = rect.children[0]
    renamed = first_cell.replace(name="renamed", path_class=PathClass("class_1", (3, 128, 17)))
    q.objects = [rect.replace(children=(renamed,) + rect.children[1:])] + q.objects[1:]
    data = q.to_bytes()
    back = Q.parse_qpdata(data)
    assert back.objects == q.objects
    # The edit changes little: other cells keep their exact encoding.
    assert abs(len(data) - len(original)) < 200
    # Putting the original object back gives the original file again.
    back.objects = [back.objects[0].replace(children=(first_cell,) + back.objects[0].children[1:])] + \
        back.objects[1:]
    assert back.to_bytes() == original


def test_truncated_or_corrupt_files_fail_clearly(lmd: Path, tmp_path: Path) -> None:
    data = (lmd / "data" / "1" / "data.qpdata").read_bytes()
    cases = {
        "truncated.qpdata": data[: len(data) // 3],
        "no_eof.qpdata": data[:-6],
        "corrupt.qpdata": data[:5000] + bytes([0x42]) * 64 + data[5064:],
        "not_java.qpdata": b"{\"json\": true}",
        "empty.qpdata": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ProjectError) as info:
            Q.read_qpdata(path)
        assert name in str(info.value)


def test_failed_write_leaves_the_old_file(tmp_path: Path, lmd: Path) -> None:
    target = tmp_path / "data.qpdata"
    original = (lmd / "data" / "1" / "data.qpdata").read_bytes()
    target.write_bytes(original)
    q = Q.read_qpdata(target)
    duplicate = q.objects[1]
    q.objects = q.objects + [duplicate]  # the same id twice cannot be written
    with pytest.raises(ProjectError, match="appears twice"):
        Q.write_qpdata(target, q)
    assert target.read_bytes() == original
    assert not (tmp_path / "data.qpdata.backup").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.qpdata"]


def test_write_keeps_a_backup_and_updates_summary(tmp_path: Path, lmd: Path) -> None:
    target = tmp_path / "data.qpdata"
    original = (lmd / "data" / "1" / "data.qpdata").read_bytes()
    target.write_bytes(original)
    q = Q.read_qpdata(target)
    q.objects = q.objects[1:]
    server = {"width": 1000, "height": 1000, "sizeC": 15, "sizeZ": 1, "sizeT": 1}
    back = Q.write_qpdata(target, q, summary=server)
    assert (tmp_path / "data.qpdata.backup").read_bytes() == original
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["hierarchy"]["nObjects"] == 132 - 122  # the rectangle and its 121 cells are gone
    assert summary["server"] == server and summary["imageType"] == "FLUORESCENCE"
    assert back.objects == q.objects


def test_property_map_is_written_in_javas_hashmap_order() -> None:
    # Java's HashMap iteration order decides the order QuPath writes properties; rebuild a real file's map.
    stream = J.loads((SAMPLES / "qupath-0.6.0-lmd" / "data" / "1" / "data.qpdata").read_bytes())
    original = next(i for i in stream.contents if isinstance(i, J.JavaObject) and i.class_name == "java.util.HashMap")
    props = Q.java_to_python(original)
    assert list(props) == ["PROJECT_ENTRY_ID", "qupath.lib.display.ImageDisplay"]
    rebuilt = hashmap(Pool(), {k: props[k] for k in reversed(list(props))})
    assert J.dumps(J.JavaStream([rebuilt])) == J.dumps(J.JavaStream([original]))
