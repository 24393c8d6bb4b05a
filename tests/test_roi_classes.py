"""Issue 13.4: the ROI classes qpsam writes into ``data.qpdata`` are the ones QuPath's own GeoJSON import makes.

One GeoJSON file holds every geometry kind (rectangles in every corner order, polygons whose coordinates are not
32-bit floats, holes, multipolygons, ellipses, points, lines, polylines, repeated vertices, cells with nuclei, other
planes). ``qpsam import`` puts it into a project written for QuPath 0.5.1, 0.6.0 and 0.7.0; each version's own
reader then reads qpsam's file, and its own GeoJSON import (``PathIO.readObjects``) reads the same file: every object
must have the same ROI class (nucleus too), the same number of vertices, the same plane, and geometry within 1e-4 px.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import shapely
from click.testing import CliRunner
from conftest import REPO
from qupath_judge import VERSIONS

from qpsam import geojson
from qpsam.cli import cli
from qpsam.project import open_project
from qpsam.project import qpdata as Q

pytestmark = pytest.mark.qupath

NUCLEI = REPO / "examples" / "data" / "nuclei.tif"


@functools.cache
def _image() -> Path:
    """The nuclei image as an ImageJ hyperstack of 4 time points, 3 z-slices and 2 channels, so that the objects on
    other planes are on planes the image has (qpsam refuses to write objects on planes an image lacks)."""
    import numpy as np
    import tifffile

    plane = tifffile.imread(NUCLEI)
    path = Path(tempfile.mkdtemp(prefix="qpsam-roi-")) / "nuclei_tzc.tif"
    tifffile.imwrite(path, np.broadcast_to(plane, (4, 3, 2) + plane.shape), imagej=True,
                     metadata={"axes": "TZCYX"})
    return path


def _ring(*points: tuple[float, float]) -> list[list[float]]:
    return [list(p) for p in points] + [list(points[0])]


def _polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def _ellipse_ring(cx: float, cy: float, rx: float, ry: float, n: int = 100) -> list[list[float]]:
    return _ring(*[(cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n))
                   for i in range(n)])


x, y, x2, y2 = 10, 20, 110, 70
# (name, geometry, extra feature members). Coordinates lie on QuPath 0.6+'s 0.01 px grid (see test_fine_coordinates).
KINDS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("rectangle in QuPath's order", _polygon(_ring((x, y), (x, y2), (x2, y2), (x2, y))), {}),
    ("rectangle counter-clockwise", _polygon(_ring((x, y), (x2, y), (x2, y2), (x, y2))), {}),
    ("rectangle from bottom right", _polygon(_ring((x2, y2), (x, y2), (x, y), (x2, y))), {}),
    ("rectangle from top right", _polygon(_ring((x2, y), (x2, y2), (x, y2), (x, y))), {}),
    ("rectangle not float32", _polygon(_ring((10.01, 20.03), (110.07, 20.03), (110.07, 70.11), (10.01, 70.11))), {}),
    # Far from the origin, but within the overhang qpsam accepts for the 512 x 512 image (one image size).
    ("rectangle far from origin", _polygon(_ring((823.01, 765.03), (923.07, 765.03),
                                                 (923.07, 865.11), (823.01, 865.11))), {}),
    ("rectangle, extra top vertex", _polygon(_ring((x, y), (60, y), (x2, y), (x2, y2), (x, y2))), {}),
    ("rectangle, extra side vertex", _polygon(_ring((0, 0), (50, 0), (50, 20), (50, 40), (0, 40))), {}),
    ("rectangle, repeated corner", _polygon(_ring((0, 0), (50, 0), (50, 0), (50, 40), (0, 40))), {}),
    ("triangle float32", _polygon(_ring((0, 0), (50.5, 0), (25.25, 40))), {}),
    ("polygon not float32", _polygon(_ring((100.01, 100.03), (150.07, 101.09), (160.13, 150.17), (110.19, 140.23),
                                           (105.29, 120.31))), {}),
    ("polygon far from origin", _polygon(_ring((823.01, 765.03), (923.07, 767.09),
                                               (900.13, 865.11))), {}),
    ("concave polygon", _polygon(_ring((0, 0), (40, 0), (40, 40), (20, 10), (0, 40))), {}),
    ("L shape", _polygon(_ring((0, 0), (50, 0), (50, 20), (20, 20), (20, 40), (0, 40))), {}),
    ("polygon, repeated vertex", _polygon(_ring((0, 0), (30, 0), (30, 0), (15, 20))), {}),
    ("polygon with holes", _polygon(_ring((300, 300), (400, 300), (400, 400), (300, 400)),
                                    _ring((320, 320), (340, 320), (340, 340), (320, 340)),
                                    _ring((350.01, 350.01), (380.03, 350.01), (365.05, 380.07))), {}),
    ("rectangle with a hole", _polygon(_ring((0, 500), (100, 500), (100, 600), (0, 600)),
                                       _ring((10, 510), (20, 510), (20, 520), (10, 520))), {}),
    ("multipolygon", {"type": "MultiPolygon", "coordinates": [
        [_ring((500, 500), (550, 500), (525, 540))], [_ring((600, 600), (650, 600), (650, 650), (600, 650))]]}, {}),
    ("multipolygon of one polygon", {"type": "MultiPolygon", "coordinates": [
        [_ring((700, 700), (750, 700), (725, 740.01))]]}, {}),
    ("multipolygon of one rectangle", {"type": "MultiPolygon", "coordinates": [
        [_ring((700, 800), (750, 800), (750, 840), (700, 840))]]}, {}),
    ("ellipse", dict(_polygon(_ellipse_ring(900.5, 300.25, 40.25, 20.5)), isEllipse=True), {}),
    ("point", {"type": "Point", "coordinates": [12.5, 13.25]}, {}),
    ("point not float32", {"type": "Point", "coordinates": [12.01, 13.03]}, {}),
    ("multipoint", {"type": "MultiPoint", "coordinates": [[1, 2], [3.01, 4.03], [5, 6]]}, {}),
    ("line", {"type": "LineString", "coordinates": [[0, 0], [100.01, 50.03]]}, {}),
    ("polyline", {"type": "LineString", "coordinates": [[0, 0], [10, 20], [30, 5.01], [40, 40]]}, {}),
    ("closed polyline", {"type": "LineString", "coordinates": [[0, 0], [10, 0], [10, 10], [0, 0]]}, {}),
    ("polyline, repeated vertex", {"type": "LineString", "coordinates": [[0, 0], [10, 0], [10, 0], [20, 5]]}, {}),
    ("line after a repeated end", {"type": "LineString", "coordinates": [[0, 0], [10, 5], [10, 5]]}, {}),
    ("rectangle on z 2, t 1", dict(_polygon(_ring((x, y), (x2, y), (x2, y2), (x, y2))),
                                   plane={"c": -1, "z": 2, "t": 1}), {}),
    ("polygon on c 1, t 3", dict(_polygon(_ring((0, 0), (50.01, 0), (25, 40))), plane={"c": 1, "z": 0, "t": 3}), {}),
    ("points on z 1", dict({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}, plane={"c": -1, "z": 1, "t": 0}),
     {}),
    ("cell", _polygon(_ring((0, 0), (40, 0), (40, 40), (0, 40))),
     {"objectType": "cell", "nucleusGeometry": _polygon(_ring((10.01, 10), (30, 10), (20, 30.03)))}),
    ("cell with a rectangular nucleus", _polygon(_ring((100, 0), (140, 0), (135, 40), (100, 40))),
     {"objectType": "cell", "nucleusGeometry": _polygon(_ring((110, 10), (120, 10), (120, 20), (110, 20)))}),
    ("detection", _polygon(_ring((0, 0), (40.01, 0), (40, 40))), {"objectType": "detection"}),
    ("tile", _polygon(_ring((0, 0), (64, 0), (64, 64), (0, 64))), {"objectType": "tile"}),
]
# QuPath 0.5.1's own import fails on these (NullPointerException in its shape conversion): no reference there.
NOT_IN_051 = {"multipolygon of one polygon", "multipolygon of one rectangle"}


def _feature(name: str, geometry: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    extra = dict(extra)
    props = {"objectType": extra.pop("objectType", "annotation"), "name": name}
    return {"type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "geometry": geometry,
            "properties": props, **extra}


def _write(path: Path, kinds: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [_feature(*k) for k in kinds]}))
    return path


def _new_project(folder: Path, version: str) -> Path:
    with open_project(folder, "x", backend="native", version=version) as project:
        project.add_image(_image())
    return folder


def _import(project: Path, file: Path, *options: str) -> Any:
    return CliRunner().invoke(cli, ["import", str(project), str(file), "--image", "1", "--backend", "native",
                                    *options])


def _shape(wkb: str) -> Any:
    return shapely.from_wkb(bytes.fromhex(wkb))


def _differences(ours: dict[str, Any], theirs: dict[str, Any], tolerance: float) -> list[str]:
    """What differs between QuPath's reading of qpsam's object and QuPath's own import of the same feature."""
    out = []
    for key in ("type", "roi", "nucleus_roi", "plane", "points"):
        if ours.get(key) != theirs.get(key):
            out.append(f"{key}: qpsam {ours.get(key)!r}, QuPath's import {theirs.get(key)!r}")
    for key in ("wkb", "nucleus_wkb"):
        if key not in theirs or key not in ours:
            continue
        a, b = _shape(ours[key]), _shape(theirs[key])
        if len(shapely.get_coordinates(a)) != len(shapely.get_coordinates(b)):
            out.append(f"{key}: {len(shapely.get_coordinates(a))} vertices, QuPath's import "
                       f"{len(shapely.get_coordinates(b))}")
        if theirs["roi"] == "EllipseROI" and key == "wkb":
            distance = max(abs(p - q) for p, q in zip(ours["bounds"], theirs["bounds"]))
        else:
            distance = shapely.hausdorff_distance(a, b)
        if distance > tolerance:
            out.append(f"{key}: {distance:.3g} px apart")
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_every_geometry_kind_gets_qupaths_own_roi_class(version: str, qupath_judges, qupath_check,
                                                        tmp_path: Path) -> None:
    kinds = [k for k in KINDS if version != "0.5.1" or k[0] not in NOT_IN_051]
    file = _write(tmp_path / "kinds.geojson", KINDS)
    reference = _write(tmp_path / "reference.geojson", kinds)
    project = _new_project(tmp_path / "project", version)
    result = _import(project, file)
    assert result.exit_code == 0, result.output

    judge = qupath_judges[version]
    theirs = {o["name"]: o for o in judge.geojson(reference)}
    ours = {o["name"]: o for o in judge.hierarchy(project / "data" / "1" / "data.qpdata")}
    assert len(theirs) == len(kinds) and len(ours) == len(KINDS)
    problems = [f"{name}: {why}" for name, obj in theirs.items() for why in _differences(ours[name], obj, 1e-4)]
    assert not problems, f"QuPath {version}:\n" + "\n".join(problems)
    # The classes the import covers are all there: the file is a test of every kind.
    assert {o["roi"] for o in theirs.values()} == {"RectangleROI", "PolygonROI", "GeometryROI", "EllipseROI",
                                                    "PointsROI", "LineROI", "PolylineROI"}
    # And qpsam's Python API names the class QuPath's import makes, before anything is written.
    for obj in geojson.read(reference):
        assert Q.roi_class(obj.geometry, obj.ellipse, version) == theirs[obj.name]["roi"], obj.name
        if obj.nucleus is not None:
            assert Q.roi_class(obj.nucleus, False, version) == theirs[obj.name]["nucleus_roi"], obj.name
    # The Python API writes the same file content as the command.
    by_python = _new_project(tmp_path / "by_python", version)
    with open_project(by_python, "r+", backend="native") as opened:
        opened.entry(1).add_objects(geojson.read(file))
    assert judge.hierarchy(by_python / "data" / "1" / "data.qpdata") == list(ours.values())
    # Every QuPath version reads the file as qpsam does, and as the objects that were imported (in 32-bit floats).
    qupath_check(project, {1: [_as_floats(o) for o in geojson.read(file)]})


def _as_floats(obj: Any) -> Any:
    def floats(geometry: Any) -> Any:
        return None if geometry is None else shapely.transform(geometry, lambda xy: xy.astype("f4").astype("f8"))

    return obj.replace(geometry=floats(obj.geometry), nucleus=floats(obj.nucleus))


@pytest.mark.parametrize("version", VERSIONS)
def test_fine_coordinates_keep_the_class_and_float_precision(version: str, qupath_judges, tmp_path: Path) -> None:
    """Coordinates off QuPath's 0.01 px grid: QuPath 0.6+ snaps its GeoJSON import to that grid, qpsam keeps them
    (as the 32-bit floats QuPath's ROIs hold). The ROI class is the same; the shapes differ by up to 0.005 px."""
    kinds = [("fine polygon", _polygon(_ring((200.123456, 200.654321), (250.5, 201.25), (240.75, 260.125))), {}),
             ("fine rectangle", _polygon(_ring((1.234567, 2.345678), (1.234567, 9.876543), (8.765432, 9.876543),
                                               (8.765432, 2.345678))), {}),
             ("fine polyline", {"type": "LineString", "coordinates": [[0.123456, 0], [5.654321, 5], [9, 1.000001]]},
              {})]
    file = _write(tmp_path / "fine.geojson", kinds)
    project = _new_project(tmp_path / "project", version)
    assert _import(project, file).exit_code == 0
    judge = qupath_judges[version]
    theirs = {o["name"]: o for o in judge.geojson(file)}
    ours = {o["name"]: o for o in judge.hierarchy(project / "data" / "1" / "data.qpdata")}
    grid = 1e-4 if version == "0.5.1" else 0.005 * math.sqrt(2) + 1e-4
    problems = [f"{name}: {why}" for name, obj in theirs.items() for why in _differences(ours[name], obj, grid)]
    assert not problems, f"QuPath {version}:\n" + "\n".join(problems)
    for obj in geojson.read(file):  # qpsam's file: the coordinates as 32-bit floats
        mine = _shape(ours[obj.name]["wkb"])
        assert shapely.hausdorff_distance(mine, obj.geometry) < 1e-5


def test_what_qpsam_refuses_and_qupath_accepts(qupath_judges, tmp_path: Path) -> None:
    """Empty and invalid geometries: QuPath makes empty or repaired ROIs of them; qpsam's import stops with an error
    naming the feature and writes nothing (``--fix-invalid`` repairs invalid polygons)."""
    empty = [("empty polygon", {"type": "Polygon", "coordinates": []}, {})]
    bowtie = [("bowtie", _polygon(_ring((0, 0), (10, 10), (10, 0), (0, 10))), {})]
    project = _new_project(tmp_path / "project", "0.6.0")
    data = project / "data" / "1" / "data.qpdata"
    before = data.read_bytes() if data.exists() else None

    empty_file = _write(tmp_path / "empty.geojson", empty)
    assert [o["roi"] for o in qupath_judges["0.6.0"].geojson(empty_file)] == ["RectangleROI"]  # QuPath: empty ROI
    result = _import(project, empty_file)
    assert result.exit_code == 1 and "feature 0" in result.output and "empty" in result.output

    bowtie_file = _write(tmp_path / "bowtie.geojson", bowtie)
    result = _import(project, bowtie_file)
    assert result.exit_code == 1 and "feature 0" in result.output and "invalid" in result.output
    assert (data.read_bytes() if data.exists() else None) == before
    # QuPath 0.5.1 keeps the two triangles as one GeometryROI (0.6+ refuses to reduce the invalid polygon);
    # qpsam's repair gives the same.
    assert [o["roi"] for o in qupath_judges["0.5.1"].geojson(bowtie_file)] == ["GeometryROI"]
    result = _import(project, bowtie_file, "--fix-invalid")
    assert result.exit_code == 0, result.output
    (obj,) = qupath_judges["0.6.0"].hierarchy(data)
    assert obj["roi"] == "GeometryROI" and _shape(obj["wkb"]).area == pytest.approx(50.0)
