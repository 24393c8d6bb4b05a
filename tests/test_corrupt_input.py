"""Files that lie: damaged data.qpdata, project.qpproj, GeoJSON and history files give a warning or one clear
error naming the file (and the object), never a traceback, a silent coercion or impossible values."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from shapely.geometry import box

from qpsam import geojson, history
from qpsam.errors import DataWarning, GeoJSONError, ProjectError
from qpsam.objects import ImagePlane, PathObject
from qpsam.project import open_project
from qpsam.project.qpdata import read_qpdata, write_qpdata


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qpsam.cli", *args], capture_output=True, text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A 512x512 image with one z-slice and one time point, and a rectangle at distinctive coordinates."""
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((512, 512), np.uint8))
    with open_project(tmp_path / "project", "x", backend="native") as p:
        entry = p.add_image(tmp_path / "img.tif")
        entry.add_objects([PathObject(box(123.25, 77.5, 200.75, 150.125), name="box"),
                           PathObject(box(10, 10, 20, 20), name="small")])
    return tmp_path / "project"


def _patch_double(path: Path, old: float, new: float) -> None:
    """Overwrite a stored coordinate in place (as a double, or as a float where the ROI keeps floats)."""
    data = path.read_bytes()
    for fmt in (">d", ">f"):
        packed = struct.pack(fmt, old)
        if packed in data:
            path.write_bytes(data.replace(packed, struct.pack(fmt, new)))
            return
    raise AssertionError(f"coordinate {old} not found in {path}")


def test_a_corrupt_coordinate_warns_on_read_and_is_refused_on_write(project: Path, tmp_path: Path) -> None:
    data_file = project / "data" / "1" / "data.qpdata"
    _patch_double(data_file, 123.25, 3.45e35)  # a damaged file that still parses
    with open_project(project, "r", backend="native") as p:
        with pytest.warns(DataWarning, match=r"data\.qpdata.*'box'.*coordinates beyond 2\^31"):
            objects = p.images[0].objects
        assert len(objects) == 2

    out = cli("info", str(project), "--backend", "native")
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("qpsam: warning: ") and "'box'" in out.stderr and "Traceback" not in out.stderr

    before = data_file.read_bytes()
    p = open_project(project, "r+", backend="native")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            p.images[0].add_objects([PathObject(box(1, 1, 5, 5))])
        with pytest.raises(ProjectError, match=r"refusing to write image 1.*'box'.*coordinates beyond"):
            p.save()
    finally:
        p.close()  # without saving
    assert data_file.read_bytes() == before
    geo = tmp_path / "new.geojson"
    geojson.write(geo, [PathObject(box(1, 1, 5, 5))])
    one_line_error(cli("import", str(project), str(geo), "--image", "1", "--backend", "native"),
                   str(data_file), "'box'")
    assert data_file.read_bytes() == before


@pytest.mark.parametrize("plane, what", [(ImagePlane(-1, 0, 25088), "time point 25088"),
                                         (ImagePlane(-1, 7, 0), "z-slice 7"),
                                         (ImagePlane(5, 0, 0), "channel 5")])
def test_planes_beyond_the_image_warn(project: Path, plane: ImagePlane, what: str) -> None:
    data_file = project / "data" / "1" / "data.qpdata"
    data = read_qpdata(data_file)
    data.objects = [*data.objects, PathObject(box(1, 1, 9, 9), name="off", plane=plane)]
    write_qpdata(data_file, data)  # what a file may say; qpsam's own writer is not the one under test here
    with open_project(project, "r", backend="native") as p, pytest.warns(DataWarning, match=what):
        p.images[0].objects  # noqa: B018


def test_non_finite_coordinates_are_refused(project: Path) -> None:
    p = open_project(project, "r+", backend="native")
    try:
        entry = p.images[0]
        entry.add_objects([PathObject(box(1, 1, 5, 5), name="fine", plane=ImagePlane(-1, 0, 0))])
        entry.add_objects([PathObject(box(1, 1, 5, 5), name="huge").replace(geometry=box(1, 1, 5, 1e300))])
        with pytest.raises(ProjectError, match="'huge'"):
            p.save()
    finally:
        p.close()


def test_array_counts_beyond_the_file_are_clean_errors(project: Path) -> None:
    data_file = project / "data" / "1" / "data.qpdata"
    data = bytearray(data_file.read_bytes())
    # Every object array (ur[Ljava.lang.Object;) count set to 2^31-1: far more than the file can hold.
    marker = b"[Ljava.lang.Object;"
    at = data.find(marker)
    assert at > 0
    # The count follows the class descriptor; find the first TC_ARRAY use after it and its 4-byte count.
    changed = 0
    for i in range(at, len(data) - 5):
        if data[i] == 0x75 and data[i + 1] in (0x71, 0x72):  # TC_ARRAY, then a reference or a descriptor
            j = i + 6 if data[i + 1] == 0x71 else None
            if j is not None:
                data[j:j + 4] = struct.pack(">i", 2**31 - 1)
                changed += 1
                break
    assert changed
    data_file.write_bytes(bytes(data))
    with pytest.raises(ProjectError, match=str(data_file)):
        read_qpdata(data_file)


# ---------------------------------------------------------------------------------------------------------------
# project.qpproj


def _edit_project(project: Path, change) -> None:
    path = project / "project.qpproj"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("value", ["1", 1.5, True, -3, 2**31, None])
def test_entry_ids_are_not_coerced(project: Path, value) -> None:
    _edit_project(project, lambda d: d["images"][0].__setitem__("entryID", value))
    with pytest.raises(ProjectError, match=r"project\.qpproj: images\[0\] has entryID"):
        open_project(project, "r", backend="native")
    one_line_error(cli("info", str(project), "--backend", "native"), "project.qpproj", "entryID")


def test_duplicate_entries_are_refused(project: Path) -> None:
    _edit_project(project, lambda d: d["images"].append(dict(d["images"][0])))
    with pytest.raises(ProjectError, match=r"images\[0\] and images\[1\] have the same entryID 1"):
        open_project(project, "r", backend="native")


@pytest.mark.parametrize("key, value", [("serverBuilder", "file.tif"), ("imageName", 7), ("metadata", [1]),
                                        ("tags", "x")])
def test_wrong_types_in_project_file_name_it(project: Path, key: str, value) -> None:
    _edit_project(project, lambda d: d["images"][0].__setitem__(key, value))
    one_line_error(cli("info", str(project), "--backend", "native"), "project.qpproj", key)


@pytest.mark.parametrize("content", [b"\xff\xfe{\"images\": []}", b"[" * 200_000 + b"]" * 200_000,
                                     b'{"images": [], "version": 6}'])
def test_unreadable_project_files_give_one_line(project: Path, content: bytes) -> None:
    (project / "project.qpproj").write_bytes(content)
    one_line_error(cli("info", str(project), "--backend", "native"), "project.qpproj")
    one_line_error(cli("export", str(project), "--backend", "native"), "project.qpproj")


# ---------------------------------------------------------------------------------------------------------------
# GeoJSON: one validator for check and import


def _feature(plane: dict | None = None, fid: str | None = None) -> dict:
    geometry = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    if plane is not None:
        geometry["plane"] = plane
    feature = {"type": "Feature", "geometry": geometry, "properties": {"objectType": "annotation"}}
    if fid:
        feature["id"] = fid
    return feature


BAD_GEOJSON = {
    "duplicate ids": ([_feature(fid="6c3c1f5e-2b1a-4c4e-9d7e-0a1b2c3d4e5f"),
                       _feature(fid="6c3c1f5e-2b1a-4c4e-9d7e-0a1b2c3d4e5f")], "already used"),
    "plane 2^31": ([_feature({"c": -1, "z": 2**31, "t": 0})], "plane z=2147483648"),
    "plane z=2.7": ([_feature({"c": -1, "z": 2.7, "t": 0})], "plane z must be a whole number"),
    "plane t=true": ([_feature({"c": -1, "z": 0, "t": True})], "plane t must be a whole number"),
    "plane t=-1": ([_feature({"c": -1, "z": 0, "t": -1})], "plane t=-1"),
}


@pytest.mark.parametrize("case", sorted(BAD_GEOJSON))
def test_geojson_check_and_import_reject_the_same_files(project: Path, tmp_path: Path, case: str) -> None:
    features, message = BAD_GEOJSON[case]
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(GeoJSONError, match=message):
        geojson.read(path)
    one_line_error(cli("geojson", "check", str(path)), str(path), message)
    before = (project / "data" / "1" / "data.qpdata").read_bytes()
    one_line_error(cli("import", str(project), str(path), "--image", "1", "--backend", "native"), str(path), message)
    assert (project / "data" / "1" / "data.qpdata").read_bytes() == before


def test_whole_float_planes_are_accepted() -> None:
    (obj,) = geojson.loads(json.dumps([_feature({"c": -1.0, "z": 2.0, "t": 0})]))
    assert obj.plane == ImagePlane(-1, 2, 0)


def test_on_invalid_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "ok.geojson"
    path.write_text(json.dumps([_feature()]))
    for call in (lambda: geojson.read(path, on_invalid="bogus"), lambda: geojson.loads("[]", on_invalid="bogus"),
                 lambda: geojson.from_data([], on_invalid="bogus")):
        with pytest.raises(GeoJSONError, match="on_invalid must be one of"):
            call()


@pytest.mark.parametrize("content", [b"\xff\xfe[]", b"[" * 200_000, b"\x1f\x8b\x08\x00garbage"])
def test_unreadable_geojson_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.geojson"
    path.write_bytes(content)
    with pytest.raises(GeoJSONError, match=str(path)):
        geojson.read(path)
    one_line_error(cli("geojson", "check", str(path)), str(path))


# ---------------------------------------------------------------------------------------------------------------
# History


def test_a_non_utf8_history_line_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    with open_project(folder, "x", backend="native"):
        pass
    history.append(folder, history.make_record("qpsam", "1", run_key="key-a"))
    with history.history_path(folder).open("ab") as fh:
        fh.write(b'{"format":1,"kind":"\xff\xfe broken"}\n')
    history.append(folder, history.make_record("qpsam", "2", run_key="key-b"))
    with pytest.warns(UserWarning, match="skipped unreadable lines 2"):
        records = history.read(folder)
    assert [(r.run_key, r.image_id) for r in records] == [("key-a", "1"), ("key-b", "2")]
    assert "Skipped unreadable lines of the history: 2" in history.history_script(folder, "1")


def test_damaged_data_files_read_or_fail_cleanly(project: Path) -> None:
    """Seeded bit flips, truncations and overwritten numbers: every variant reads (maybe with a warning) or fails
    with a ProjectError naming the file, and a write either succeeds or is refused the same way."""
    import random

    rng = random.Random(7)
    data_file = project / "data" / "1" / "data.qpdata"
    original = data_file.read_bytes()
    outcomes = {"read": 0, "refused": 0}
    for n in range(120):
        data = bytearray(original)
        if n % 3 == 0:
            data = data[:rng.randrange(len(data))]
        elif n % 3 == 1:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            at = rng.randrange(len(data) - 8)
            data[at:at + 8] = struct.pack(">d", rng.choice([3.45e35, float("nan"), float("inf"), -1e20]))
        data_file.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            try:
                with open_project(project, "r+", backend="native") as p:
                    p.images[0].add_objects([PathObject(box(1, 1, 2, 2))])
                outcomes["read"] += 1
            except ProjectError as exc:
                assert str(data_file) in str(exc), exc
                outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"], outcomes
