"""QuPath projects through qpsam.project.open_project: one contract, run on every backend that can run here.

The paquo backend needs QuPath (the harness that `tests/run.sh` installs); without it those tests skip here and fail
in CI (the native backend runs everywhere).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import shapely
import tifffile
from conftest import SAMPLES
from shapely.geometry import Polygon

from qpsam import geojson
from qpsam.errors import ImageReadError, ProjectError
from qpsam.geometry import Region
from qpsam.objects import ObjectType, PathClass, PathObject
from qpsam.project import open_project


@pytest.fixture(params=["native", pytest.param("paquo", marks=pytest.mark.paquo)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "paquo":
        request.getfixturevalue("paquo_version")  # skips here, fails in CI, without a QuPath
    return request.param


def copy_project(src: Path, dst: Path) -> Path:
    """A writable copy of a (read-only) sample project."""
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = Path(root) / name
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    dst.chmod(dst.stat().st_mode | stat.S_IWUSR)
    return dst


def make_ome_pyramid(path: Path, shape: tuple[int, int, int] = (3, 768, 1024), levels: int = 5) -> np.ndarray:
    """A multichannel pyramidal OME-TIFF (downsamples 1, 2, 4, ...) with smooth, channel-specific content."""
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    data = np.stack([((xx * (i + 1) + yy * (3 - i)) * 7 % 4096) for i in range(c)]).astype(np.uint16)
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(data, subifds=levels - 1, tile=(128, 128), photometric="minisblack",
                 metadata={"axes": "CYX", "Channel": {"Name": [f"ch{i}" for i in range(c)]},
                           "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        level = data
        for _ in range(levels - 1):
            level = level.reshape(c, level.shape[1] // 2, 2, level.shape[2] // 2, 2).mean(axis=(2, 4)).astype(
                np.uint16)
            tw.write(level, subfiletype=1, tile=(128, 128), photometric="minisblack")
    return data


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["qupath-0.4.0-foci", "qupath-0.6.0-lmd"])
def test_read_samples_counts_equal_summary(backend: str, sample: str) -> None:
    project_dir = SAMPLES / sample
    with open_project(project_dir, "r", backend=backend, keep_version=True) as project:
        raw = json.loads((project_dir / "project.qpproj").read_text())
        assert [e.id for e in project.images] == [i["entryID"] for i in raw["images"]]
        assert project.version == raw["version"]
        for entry, item in zip(project.images, raw["images"]):
            assert entry.name == item["imageName"]
            assert entry.width == item["serverBuilder"]["metadata"]["width"]
            summary = json.loads((entry.data_dir / "summary.json").read_text())
            assert entry.counts() == summary["hierarchy"]
            assert entry.image_type == summary["imageType"]
    assert not (project_dir / "project.qpproj.lock").exists()


def test_entry_metadata(backend: str, lmd: Path) -> None:
    with open_project(lmd, "r", backend=backend, keep_version=True) as project:
        entry = project.entry("TD_01_verysmall_mIF.ome.tif")
        assert entry is project.entry(1) and entry is project.entry("1")
        assert (entry.width, entry.height, entry.n_channels, entry.size_z, entry.size_t) == (1000, 1000, 15, 1, 1)
        assert entry.pixel_size == pytest.approx((0.34571008852182383,) * 2)
        assert entry.channels[4].name == "DAPI_bg" and entry.channels[0].color == (255, 0, 0)
        assert entry.uri == "file:/Volumes/RD_Coscia/Jose/__TestDatasets/TD_01_verysmall_mIF.ome.tif"
        assert len(entry.all_objects()) == 131
        with pytest.raises(ProjectError, match="no image with id or name"):
            project.entry("nope")


def test_read_only_mode_refuses_changes(backend: str, lmd: Path) -> None:
    with open_project(lmd, "r", backend=backend, keep_version=True) as project:
        entry = project.images[0]
        with pytest.raises(ProjectError, match="read-only"):
            entry.add_objects([PathObject(Polygon([(0, 0), (1, 0), (1, 1)]))])
        with pytest.raises(ProjectError, match="read-only"):
            project.save()


def test_modes(backend: str, tmp_path: Path, lmd: Path, qupath_check: Any) -> None:
    target = tmp_path / "new"
    with pytest.raises(ProjectError, match="no such project"):
        open_project(target, "r", backend=backend, keep_version=True)
    with pytest.raises(ProjectError, match="no such project"):
        open_project(target, "r+", backend=backend, keep_version=True)
    with open_project(target, "x", backend=backend, keep_version=True) as project:
        assert len(project) == 0
    assert json.loads((target / "project.qpproj").read_text())["images"] == []
    with pytest.raises(ProjectError, match="already exists"):
        open_project(target, "x", backend=backend, keep_version=True)
    with open_project(target, "a", backend=backend, keep_version=True) as project:
        assert len(project) == 0
    with open_project(tmp_path / "created", "a", backend=backend, keep_version=True) as project:
        assert project.path == tmp_path / "created"
    with pytest.raises(ProjectError, match="mode must be"):
        open_project(target, "rw", backend=backend, keep_version=True)
    # 'w' truncates, after zipping the old project next to its folder.
    copy = copy_project(lmd, tmp_path / "lmd")
    with open_project(copy, "w", backend=backend, keep_version=True) as project:
        assert len(project) == 0
    backups = list(tmp_path.glob("lmd-backup-*.zip"))
    assert len(backups) == 1
    with zipfile.ZipFile(backups[0]) as zf:
        assert "data/1/data.qpdata" in zf.namelist() and "project.qpproj" in zf.namelist()
    with open_project(copy, "r", backend=backend, keep_version=True) as project:
        assert len(project) == 0
    for written in (target, tmp_path / "created", copy):
        assert qupath_check(written) == {}


# QuPath keeps a GeometryROI on its 0.01 px precision grid, so what QuPath reads of a polygon that is not a
# float32 PolygonROI moves by up to 0.005 px per coordinate; and QuPath's MeasurementList.put stores new values
# as floats (values it read keep their precision: the paquo backend edits QuPath's objects in place).
QUPATH_GRID = 0.01
FLOAT32 = 1e-7


def assert_same_objects(got: list[PathObject], expected: list[PathObject], backend: str) -> None:
    """``got == expected``; through QuPath (paquo), geometries within QuPath's precision grid."""
    if backend == "native":
        assert got == expected
        return
    assert [o.id for o in got] == [o.id for o in expected]
    for a, b in zip(got, expected):
        assert shapely.hausdorff_distance(a.geometry, b.geometry) <= QUPATH_GRID, (a.id, a.geometry, b.geometry)
        assert (a.nucleus is None) == (b.nucleus is None)
        if a.nucleus is not None:
            assert shapely.hausdorff_distance(a.nucleus, b.nucleus) <= QUPATH_GRID
        assert_same_objects(list(a.children), list(b.children), backend)
        for name in ("object_type", "path_class", "name", "color", "locked", "plane", "ellipse"):
            assert getattr(a, name) == getattr(b, name), (a.id, name, getattr(a, name), getattr(b, name))
        assert list(a.measurements) == list(b.measurements), (a.id, "measurement names")
        assert dict(a.measurements) == pytest.approx(dict(b.measurements), rel=FLOAT32, nan_ok=True), a.id
        assert dict(a.metadata) == dict(b.metadata), (a.id, "metadata")


def _polygons(n: int, seed: int = 0) -> list[PathObject]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        polygon = Polygon()
        while not polygon.is_valid or polygon.is_empty:
            cx, cy = rng.uniform(20, 980, 2)
            k = int(rng.integers(3, 12))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = rng.uniform(2, 15, k)
            pts = np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]
            if i % 2:
                pts = np.round(pts * 4) / 4  # quarter pixels: exact in QuPath's float polygons
            polygon = Polygon(pts)
        # Not a class QuPath predefines with another colour: QuPath keeps one colour per class name and JVM.
        cls = [None, PathClass("Tumor", (200, 0, 0)), PathClass("Fibrous", (0, 150, 0))][i % 3]
        out.append(PathObject(polygon, path_class=cls, name=f"poly {i}",
                              measurements={"score": float(rng.uniform())}))
    return out


def test_thousand_polygons_save_and_reopen_exactly(backend: str, tmp_path: Path, lmd: Path,
                                                   qupath_check: Any) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    with open_project(copy, "r", backend=backend, keep_version=True) as project:
        original = project.images[0].objects
    new = _polygons(1000)
    with open_project(copy, "r+", backend=backend, keep_version=True) as project:
        project.images[0].add_objects(new)
    # QuPath's polygon ROIs hold 32-bit floats, and its import drops repeated vertices: that is what comes back.
    kept = [o.replace(geometry=shapely.remove_repeated_points(
        shapely.transform(o.geometry, lambda xy: xy.astype(np.float32).astype(np.float64)), 0.0)) for o in new]
    with open_project(copy, "r", backend=backend, keep_version=True) as project:
        entry = project.images[0]
        assert_same_objects(entry.objects, original + kept, backend)
        counts = entry.counts()
        assert counts["objectTypeCounts"]["Annotations"] == 1010
        assert counts["annotationClassificationCounts"]["Tumor"] == 333
        summary = json.loads((entry.data_dir / "summary.json").read_text())
        assert summary["hierarchy"] == counts
        # What was written also round-trips through QuPath GeoJSON.
        assert geojson.loads(geojson.dumps(entry.objects)) == entry.objects
    assert (copy / "data" / "1" / "data.qpdata.backup").exists()
    assert qupath_check(copy) == {1: 1131}

    # Removing: some new polygons, one original annotation and one cell inside the rectangle.
    rect = original[0]
    gone = [new[0], new[500], new[999], original[-1], rect.children[5]]
    with open_project(copy, "r+", backend=backend, keep_version=True) as project:
        assert project.images[0].remove_objects(gone) == 5
    with open_project(copy, "r", backend=backend, keep_version=True) as project:
        entry = project.images[0]
        kept_ids = {o.id for o in gone}
        expected = [o for o in original + kept if o.id not in kept_ids]
        expected[0] = rect.replace(children=tuple(c for c in rect.children if c.id not in kept_ids))
        assert_same_objects(entry.objects, expected, backend)
        assert len(entry.all_objects()) == 131 + 1000 - 5
    assert qupath_check(copy) == {1: 1126}


def test_edit_objects(backend: str, tmp_path: Path, lmd: Path, qupath_check: Any) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    with open_project(copy, "r+", backend=backend, keep_version=True) as project:
        entry = project.images[0]
        rect = entry.objects[0]
        cell = rect.children[0]
        edited = cell.replace(path_class=PathClass("class_1", (3, 128, 17)), name="edited",
                              measurements={**cell.measurements, "extra": 1.5})
        entry.replace_objects([edited])
        child = PathObject(Polygon([(300, 10), (310, 10), (305, 20)]), ObjectType.DETECTION)
        entry.add_objects([child], parent=rect)
        with pytest.raises(ProjectError, match="already in the hierarchy"):
            entry.add_objects([child])
        with pytest.raises(ProjectError, match="not in the hierarchy"):
            entry.remove_objects([uuid.uuid4()])
    with open_project(copy, "r", backend=backend, keep_version=True) as project:
        rect2 = project.images[0].objects[0]
        # Through QuPath 0.5.1 a new polygon comes back as QuPath builds it (from an Area: another vertex order).
        assert_same_objects([rect2.children[0], rect2.children[-1]], [edited, child], backend)
        assert rect2.children[0].geometry.equals_exact(edited.geometry, 0.0)  # an unchanged outline stays
        assert len(rect2.children) == 122
    qupath_check(copy)


def test_unknown_fields_are_kept(backend: str, tmp_path: Path, lmd: Path, qupath_check: Any) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    qpproj = copy / "project.qpproj"
    raw = json.loads(qpproj.read_text())
    raw["futureField"] = {"nested": [1, 2, {"x": None}]}
    raw["images"][0]["futureEntryField"] = "kept"
    raw["images"][0]["serverBuilder"]["futureBuilderField"] = 42
    qpproj.write_text(json.dumps(raw, indent=2))
    (copy / "classifiers").mkdir()
    (copy / "classifiers" / "classes.json").write_text(json.dumps(
        {"pathClasses": [{"name": "Tumor", "color": -3670016, "futureClassField": True}], "futureTop": 1}))
    with open_project(copy, "r+", backend=backend, keep_version=True) as project:
        project.images[0].name = "renamed"
        project.images[0].metadata["key"] = "value"
        project.path_classes = project.path_classes + [PathClass("New", (1, 2, 3))]
    after = json.loads(qpproj.read_text())
    assert after["futureField"] == raw["futureField"]
    assert after["images"][0]["futureEntryField"] == "kept"
    assert after["images"][0]["serverBuilder"]["futureBuilderField"] == 42
    assert after["images"][0]["imageName"] == "renamed" and after["images"][0]["metadata"] == {"key": "value"}
    assert after["modifyTimestamp"] >= raw["modifyTimestamp"]
    assert json.loads((copy / "project.qpproj.backup").read_text())["images"][0]["imageName"] != "renamed"
    classes = json.loads((copy / "classifiers" / "classes.json").read_text())
    assert classes["futureTop"] == 1 and classes["pathClasses"][0]["futureClassField"] is True
    assert classes["pathClasses"][1] == {"name": "New", "color": -16711165}
    qupath_check(copy)


def test_missing_image_names_entry_and_uri(backend: str, lmd: Path) -> None:
    with open_project(lmd, "r", backend=backend, keep_version=True) as project:
        entry = project.images[0]
        with pytest.raises(ImageReadError) as info:
            entry.read_region(Region(0, 0, 10, 10))
        message = str(info.value)
        assert "entry 1" in message and "TD_01_verysmall_mIF.ome.tif" in message
        assert entry.uri in message


def make_imagej_tiff(path: Path, shape: tuple[int, int, int] = (3, 200, 300)) -> np.ndarray:
    """A multichannel ImageJ hyperstack TIFF (what QuPath's ImageJ server, the one the harness has, opens)."""
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    data = np.stack([((xx * (i + 1) + yy * (3 - i)) * 7 % 4096) for i in range(c)]).astype(np.uint16)
    tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0), metadata={"axes": "CYX", "unit": "um"})
    return data


def test_new_project_from_imagej_tiff(backend: str, tmp_path: Path, qupath_check: Any) -> None:
    image = tmp_path / "images" / "stack.tif"
    image.parent.mkdir()
    data = make_imagej_tiff(image)
    with open_project(tmp_path / "proj", "x", backend=backend) as project:
        entry = project.add_image(image, image_type="FLUORESCENCE")
        assert entry.id == 1 and entry.name == "stack.tif"
        entry.add_objects([PathObject(Polygon([(10, 10), (50, 10), (30, 40)]), name="tri"),
                           PathObject(Polygon([(60, 10), (90, 10), (70, 40)]), ObjectType.DETECTION,
                                      measurements={"m": 1.5})])
    with open_project(tmp_path / "proj", "r", backend=backend) as project:
        entry = project.images[0]
        assert (entry.width, entry.height, entry.n_channels, entry.size_z) == (300, 200, 3, 1)
        assert entry.image_type == "FLUORESCENCE"
        assert [o.name for o in entry.objects] == ["tri", None]
        assert entry.objects[1].measurements == {"m": 1.5}
        np.testing.assert_array_equal(entry.read_region(Region(10, 20, 30, 40)),
                                      np.moveaxis(data[:, 20:60, 10:40], 0, -1))
        np.testing.assert_array_equal(entry.read_region(Region(0, 0, 300, 200), channels=[2])[..., 0], data[2])
    qupath_check(tmp_path / "proj")


def test_new_project_from_pyramidal_ome_tiff(tmp_path: Path) -> None:
    backend = "native"  # QuPath's ImageJ server (all the harness has) cannot open it: see test_paquo.py
    image = tmp_path / "images" / "multi.ome.tif"
    image.parent.mkdir()
    data = make_ome_pyramid(image)
    with open_project(tmp_path / "proj", "x", backend=backend, keep_version=True) as project:
        entry = project.add_image(image)
        assert entry.id == 1 and entry.name == "multi.ome.tif"
    with open_project(tmp_path / "proj", "r", backend=backend, keep_version=True) as project:
        entry = project.images[0]
        assert (entry.width, entry.height, entry.n_channels) == (1024, 768, 3)
        assert [c.name for c in entry.channels] == ["ch0", "ch1", "ch2"]
        assert entry.pixel_size == pytest.approx((0.25, 0.25))
        assert entry.downsamples == pytest.approx([1, 2, 4, 8, 16])
        for ds, (x, y, w, h) in [(1, (100, 60, 300, 200)), (4, (128, 64, 512, 256)), (16, (0, 0, 1024, 768))]:
            level = tifffile.imread(image, level={1: 0, 4: 2, 16: 4}[ds])
            direct = np.moveaxis(level[:, y // ds:(y + h) // ds, x // ds:(x + w) // ds], 0, -1)
            region = entry.read_region(Region(x, y, w, h, ds))
            assert region.shape == direct.shape and np.array_equal(region, direct)
        np.testing.assert_array_equal(entry.read_region(Region(10, 20, 30, 40), channels=[2])[..., 0],
                                      data[2, 20:60, 10:40])
        rgb = entry.read_rgb(Region(0, 0, 1024, 768, 8))
        assert rgb.dtype == np.uint8 and rgb.shape == (96, 128, 3) and rgb.max() > 0
    assert (tmp_path / "proj" / "data" / "1" / "server.json").exists()


def test_relocating_images(backend: str, tmp_path: Path, qupath_check: Any) -> None:
    image = tmp_path / "a" / "img.ome.tif"
    image.parent.mkdir()
    make_imagej_tiff(image, (2, 256, 256))
    with open_project(tmp_path / "proj", "x", backend=backend, keep_version=True) as project:
        project.add_image(image)
    moved = tmp_path / "b" / "img.ome.tif"
    moved.parent.mkdir()
    image.rename(moved)
    with open_project(tmp_path / "proj", "r+", backend=backend, keep_version=True) as project:
        entry = project.images[0]
        with pytest.raises(ImageReadError, match="image not found"):
            entry.read_region(Region(0, 0, 8, 8))
        assert project.relocate({(tmp_path / "a").as_uri().replace("file:///", "file:/"):
                                 (tmp_path / "b").as_uri().replace("file:///", "file:/")}) == 1
        assert entry.read_region(Region(0, 0, 8, 8)).shape == (8, 8, 2)
    with open_project(tmp_path / "proj", "r", backend=backend, keep_version=True) as project:
        assert project.images[0].uri.endswith("/b/img.ome.tif")
    qupath_check(tmp_path / "proj")


def test_moved_project_finds_images_beside_it(tmp_path: Path) -> None:
    # QuPath resolves images relative to the project when the project folder moved with them.
    (tmp_path / "old").mkdir()
    image = tmp_path / "old" / "images" / "img.ome.tif"
    image.parent.mkdir()
    make_ome_pyramid(image, (2, 128, 128), 1)
    with open_project(tmp_path / "old" / "proj", "x", backend="native") as project:
        project.add_image(image)
    shutil.move(tmp_path / "old", tmp_path / "new")
    with open_project(tmp_path / "new" / "proj", "r", backend="native") as project:
        entry = project.images[0]
        assert "/old/" in entry.uri
        assert entry.image_path == tmp_path / "new" / "images" / "img.ome.tif"
        assert entry.read_region(Region(0, 0, 4, 4)).shape == (4, 4, 2)


def test_a_second_writer_is_refused(backend: str, tmp_path: Path, lmd: Path) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    first = open_project(copy, "r+", backend=backend, keep_version=True)
    try:
        lock = copy / "project.qpproj.lock"
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(ProjectError, match="open for writing by process"):
            open_project(copy, "r+", backend=backend, keep_version=True)
        with open_project(copy, "r", backend=backend, keep_version=True) as reader:  # readers are not blocked
            assert len(reader) == 1
    finally:
        first.close()
    assert not (copy / "project.qpproj.lock").exists()
    # A lock left behind by a process that is gone is taken over.
    (copy / "project.qpproj.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    with open_project(copy, "r+", backend=backend, keep_version=True) as project:
        assert len(project) == 1


def test_truncated_data_file_fails_clearly_and_nothing_is_written(backend: str, tmp_path: Path,
                                                                  lmd: Path) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    data_file = copy / "data" / "1" / "data.qpdata"
    truncated = data_file.read_bytes()[:100_000]
    data_file.write_bytes(truncated)
    with open_project(copy, "r+", backend=backend, keep_version=True) as project:
        with pytest.raises(ProjectError) as info:
            _ = project.images[0].objects
        assert str(data_file) in str(info.value)
    assert data_file.read_bytes() == truncated
    assert not (copy / "data" / "1" / "data.qpdata.backup").exists()


def _as_unprivileged(fn: Callable[[], Any]) -> str:
    """Run ``fn`` in a forked child that cannot write where its user may not (root ignores file modes);
    returns 'ok' or the error text."""
    if os.geteuid() != 0:
        try:
            fn()
            return "ok"
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            fn()
            result = "ok"
        except BaseException as exc:  # noqa: BLE001
            result = f"{type(exc).__name__}: {exc}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_read_only_folders(tmp_path: Path, lmd: Path) -> None:
    base = tmp_path / "shared"
    base.mkdir()
    for p in (tmp_path, base):
        p.chmod(0o755)
    tmp_path.parent.chmod(tmp_path.parent.stat().st_mode | 0o055)
    tmp_path.parent.parent.chmod(tmp_path.parent.parent.stat().st_mode | 0o055)
    copy = copy_project(lmd, base / "lmd")
    for root, dirs, files in os.walk(copy):
        for name in files:
            (Path(root) / name).chmod(0o644)
        for name in dirs:
            (Path(root) / name).chmod(0o755)
    original = (copy / "data" / "1" / "data.qpdata").read_bytes()

    # A project folder that cannot be written: opening for writing fails on the lock file.
    copy.chmod(0o555)
    message = _as_unprivileged(lambda: open_project(copy, "r+", backend="native"))
    assert "ProjectError" in message and "lock file" in message, message

    # A writable project whose image data folder is read-only: saving fails, nothing changes.
    copy.chmod(0o777)
    (copy / "data" / "1").chmod(0o555)

    def edit() -> None:
        with open_project(copy, "r+", backend="native") as project:
            entry = project.images[0]
            entry.remove_objects([entry.objects[-1]])

    message = _as_unprivileged(edit)
    assert message.startswith(("ProjectError", "FileWriteError")) and "cannot write" in message \
        and "data.qpdata" in message, message
    assert (copy / "data" / "1" / "data.qpdata").read_bytes() == original
    assert sorted(p.name for p in (copy / "data" / "1").iterdir()) == \
        ["data.qpdata", "server.json", "summary.json", "thumbnail.jpg"]
    (copy / "data" / "1").chmod(0o755)
    (copy / "project.qpproj.lock").unlink(missing_ok=True)


def test_saved_display_settings_render_the_rgb_view(tmp_path: Path) -> None:
    image = tmp_path / "multi.ome.tif"
    data = make_ome_pyramid(image, (3, 128, 128), 1)
    display = [{"name": f"ch{i} (C{i + 1})", "class": "qupath.lib.display.DirectServerChannelInfo",
                "minDisplay": 0.0, "maxDisplay": 4095.0, "color": color, "selected": i != 1}
               for i, color in enumerate((-65536, -16711936, -16776961))]
    with open_project(tmp_path / "proj", "x", backend="native") as project:
        entry = project.add_image(image)
        entry.properties["qupath.lib.display.ImageDisplay"] = json.dumps(display)
    with open_project(tmp_path / "proj", "r", backend="native") as project:
        rgb = project.images[0].read_rgb(Region(0, 0, 128, 128))
    expected_red = np.clip(data[0].astype(np.float64) / 4095 * 255, 0, 255)
    assert np.abs(rgb[..., 0] - expected_red).max() <= 1
    assert not rgb[..., 1].any()  # channel 2 is not selected in QuPath's display settings
    assert rgb[..., 2].any()


def _write_qpproj(folder: Path, data: dict) -> Path:
    folder.mkdir()
    (folder / "project.qpproj").write_text(json.dumps(data, indent=2))
    return folder


def test_project_files_of_other_qupath_versions(tmp_path: Path) -> None:
    # QuPath 0.3: no 'uri', entries without tags; 0.7: tags and wrapping server builders.
    inner = {"builderType": "uri", "providerClassName": "qupath.lib.images.servers.bioformats.BioFormatsServerBuilder",
             "uri": "file:/data/slide.tif", "args": ["--series", "0"]}
    old = _write_qpproj(tmp_path / "v03", {
        "version": "0.3.2", "createTimestamp": 1, "modifyTimestamp": 2, "lastID": 1,
        "images": [{"serverBuilder": inner, "entryID": 1, "randomizedName": "x", "imageName": "slide.tif",
                    "metadata": {}}]})
    new = _write_qpproj(tmp_path / "v07", {
        "version": "0.7.0", "createTimestamp": 1, "modifyTimestamp": 2, "uri": "file:/x/project.qpproj",
        "lastID": 3, "images": [{"serverBuilder": {"builderType": "rotated", "rotation": "ROTATE_90",
                                                   "builder": inner},
                                 "entryID": 3, "randomizedName": "y", "imageName": "rotated", "metadata": {"a": "b"},
                                 "tags": ["t1"], "description": "about it"}]})
    with open_project(old, "r+", backend="native") as project:
        entry = project.entry(1)
        assert entry.uri == "file:/data/slide.tif" and entry.tags == [] and entry.objects == []
        entry.description = "described"
    saved = json.loads((old / "project.qpproj").read_text())
    assert saved["images"][0]["description"] == "described" and "tags" not in saved["images"][0]
    assert saved["version"] == "0.3.2" and "uri" not in saved
    with open_project(new, "r", backend="native") as project:
        entry = project.entry("rotated")
        assert (entry.uri, entry.tags, entry.description, entry.metadata) == \
            ("file:/data/slide.tif", ["t1"], "about it", {"a": "b"})
        # A rotated entry is read natively now (tests/test_transformed.py): here its image is missing.
        with pytest.raises(ImageReadError, match="entry 3 \\('rotated'\\): image not found at file:/data/slide.tif"):
            entry.read_region(Region(0, 0, 4, 4))
    bad = _write_qpproj(tmp_path / "bad", {"images": [{"imageName": "no id"}], "version": "0.6.0"})
    with pytest.raises(ProjectError, match="images\\[0\\] has no entryID"):
        open_project(bad, "r", backend="native")
    (bad / "project.qpproj").write_text("{ not json")
    with pytest.raises(ProjectError, match="project.qpproj: project file is not valid JSON"):
        open_project(bad, "r", backend="native")


def test_remove_image_and_derived_class_colours(tmp_path: Path) -> None:
    image = tmp_path / "img.ome.tif"
    make_ome_pyramid(image, (2, 64, 64), 1)
    with open_project(tmp_path / "proj", "x", backend="native") as project:
        first = project.add_image(image)
        second = project.add_image(image, name="again", allow_duplicates=True)
        with pytest.raises(ProjectError, match="already in the project"):
            project.add_image(image)
        project.path_classes = [PathClass("Tumor", (200, 0, 0))]
        second.add_objects([PathObject(Polygon([(1, 1), (9, 1), (5, 9)]),
                                       path_class=PathClass("Tumor: Positive", (255, 80, 80)))])
    with open_project(tmp_path / "proj", "r+", backend="native") as project:
        assert [e.name for e in project.images] == ["img.ome.tif", "again"]
        assert project.path_classes == [PathClass("Tumor", (200, 0, 0))]
        (obj,) = project.entry("again").objects
        assert obj.path_class == PathClass("Tumor: Positive", (255, 80, 80))
        project.remove_image(project.entry(first.id))
    with open_project(tmp_path / "proj", "r", backend="native") as project:
        assert [e.id for e in project.images] == [2]
    assert not (tmp_path / "proj" / "data" / "1").exists()
