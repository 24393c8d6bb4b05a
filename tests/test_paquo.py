"""The paquo backend's traps (paquo 0.9.0 and QuPath 0.5.1/0.6.0/0.7.0) kept from users, and the two backends
compared field by field. Runs on the QuPath of this pytest process (``QPSAM_QUPATH_VERSION``); ``tests/run.sh``
runs these tests once per version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from shapely.geometry import Polygon, box
from test_project import assert_same_objects, copy_project, make_imagej_tiff, make_ome_pyramid

from qpsam import geojson
from qpsam.cli import main
from qpsam.errors import ImageReadError, ProjectError
from qpsam.geometry import Region
from qpsam.objects import ObjectType, PathClass, PathObject, walk
from qpsam.project import open_project

pytestmark = pytest.mark.paquo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def qupath(paquo_version: str) -> str:
    return paquo_version


def snapshot(folder: Path) -> dict[str, tuple[Any, ...]]:
    """Every file and folder under ``folder`` with its kind, size, modification time and mode."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def run_cli(*args: Any, env: dict[str, str] | None = None, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """``qpsam ARGS`` in a fresh process (its own JVM), as a user runs it."""
    environment = dict(os.environ, PYTHONPATH=str(REPO / "src"), **(env or {}))
    return subprocess.run([*(prefix or []), sys.executable, "-m", "qpsam.cli", *map(str, args)],
                          capture_output=True, text=True, env=environment, timeout=300)


# ---------------------------------------------------------------------------------------------------------------
# Reading leaves the project as it was


def test_reading_leaves_the_folder_exactly_as_it_was(qupath: str, lmd: Path, samples: Path, tmp_path: Path) -> None:
    for name in ("qupath-0.6.0-lmd", "qupath-0.4.0-foci"):
        copy = copy_project(samples / name, tmp_path / name)
        before = snapshot(copy)
        with open_project(copy, "r", backend="paquo") as project:
            entry = project.images[-1]
            assert entry.counts() == json.loads((entry.data_dir / "summary.json").read_text())["hierarchy"]
            assert entry.width > 0 and entry.image_type
        assert snapshot(copy) == before, f"{name}: QuPath changed the folder"
    assert not list(tmp_path.glob("qpsam-paquo-*"))


def test_info_on_a_read_only_project(qupath: str, lmd: Path, tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to drop root's right to write into read-only folders")
    copy = copy_project(lmd, tmp_path / "lmd")
    for root, dirs, files in os.walk(copy):
        for name in files:
            (Path(root) / name).chmod(0o444)
        for name in dirs:
            (Path(root) / name).chmod(0o555)
    copy.chmod(0o555)
    before = snapshot(copy)
    # Root without CAP_DAC_OVERRIDE obeys file modes, as on a read-only mount or share.
    no_override = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    probe = subprocess.run([*no_override, "touch", str(copy / "x")], capture_output=True)
    assert probe.returncode != 0, "the folder is writable: the test would prove nothing"
    result = run_cli("info", copy, "--json", "--backend", "paquo", prefix=no_override)
    copy.chmod(0o755)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == "paquo" and data["images"][0]["nObjects"] == 131
    assert snapshot(copy) == {k: v for k, v in before.items()}
    assert "Restricted methods" not in result.stderr  # 0.7.0's Java 25 warns unless native access is on
    assert "Traceback" not in result.stderr


def test_truncated_data_file_one_line_error(qupath: str, lmd: Path, tmp_path: Path, capsys: Any) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    data_file = copy / "data" / "1" / "data.qpdata"
    for size in (4, 5000):  # 4 bytes: what QuPath 0.5.1's failed save leaves; QuPath reads it in an endless loop
        data_file.write_bytes((lmd / "data" / "1" / "data.qpdata").read_bytes()[:size])
        before = snapshot(copy)
        capsys.readouterr()
        assert main(["info", str(copy), "--backend", "paquo"]) == 1
        err = capsys.readouterr().err
        assert str(data_file) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert snapshot(copy) == before


# ---------------------------------------------------------------------------------------------------------------
# Writing: never a truncated or stale file, never a skipped entry


def test_unreachable_entry_is_saved_and_never_truncated(qupath: str, lmd: Path, tmp_path: Path,
                                                        qupath_check: Any) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    (copy / "data" / "1" / "server.json").unlink()  # paquo 0.9.0 then crashed reading sizes
    data_file = copy / "data" / "1" / "data.qpdata"
    data_file.chmod(0o640)
    old = data_file.read_bytes()
    added = PathObject(Polygon([(5, 5), (25, 5), (15, 30)]), path_class=PathClass("Unreached", (9, 9, 9)))
    with open_project(copy, "r+", backend="paquo", keep_version=True) as project:
        entry = project.images[0]
        assert (entry.width, entry.height, entry.n_channels) == (1000, 1000, 15)
        entry.add_objects([added])
    assert data_file.stat().st_size > len(old) // 2
    assert (data_file.stat().st_mode & 0o777) == 0o640
    assert (copy / "data" / "1" / "data.qpdata.backup").read_bytes() == old
    assert not (copy / "data" / "1" / "data.qpdata.bkp").exists()
    counts = qupath_check(copy)
    assert counts == {1: 132}
    with open_project(copy, "r", backend="native") as project:
        assert str(added.id) in {str(o.id) for o in project.images[0].all_objects()}


def test_a_save_qupath_refuses_leaves_the_previous_file(qupath: str, tmp_path: Path) -> None:
    image = tmp_path / "stack.tif"
    make_imagej_tiff(image, (2, 64, 64))
    with open_project(tmp_path / "proj", "x", backend="paquo") as project:
        project.add_image(image).add_objects([PathObject(box(1, 1, 9, 9))])
    data_file = tmp_path / "proj" / "data" / "1" / "data.qpdata"
    old = data_file.read_bytes()
    with open_project(tmp_path / "proj", "r+", backend="paquo") as project:
        entry = project.images[0]
        entry.add_objects([PathObject(box(2, 2, 5, 5), ObjectType.TMA_CORE)])
        with pytest.raises(ProjectError, match="entry 1 .*previous file is unchanged"):
            entry.save()
        entry.set_objects(entry.objects[:1])  # as loaded: nothing to save on exit
    assert data_file.read_bytes() == old
    assert sorted(p.name for p in data_file.parent.iterdir()) == \
        sorted(["data.qpdata", "data.qpdata.backup", "server.json", "summary.json", "thumbnail.jpg"]) or \
        sorted(p.name for p in data_file.parent.iterdir()) == sorted(["data.qpdata", "data.qpdata.backup",
                                                                     "summary.json", "thumbnail.jpg"])


def test_new_project_and_import_from_the_cli(qupath: str, lmd: Path, tmp_path: Path, qupath_check: Any) -> None:
    image = tmp_path / "img" / "stack.tif"
    image.parent.mkdir()
    make_imagej_tiff(image)
    project = tmp_path / "proj"
    assert main(["new-project", str(project), str(image), "--backend", "paquo"]) == 0
    saved = json.loads((project / "project.qpproj").read_text())
    assert saved["version"] == qupath and len(saved["images"]) == 1
    objects = [PathObject(Polygon([(10, 10), (60, 12), (30, 50)]), name="imported",
                          path_class=PathClass("Tumor", (200, 0, 0)), measurements={"a": 2.0}),
               PathObject(box(100, 100, 120, 130), ObjectType.DETECTION)]
    geojson.write(tmp_path / "in.geojson", objects)
    # 0.5.1 failed here in paquo ("'PathAnnotationObject' object has no attribute 'setId'").
    assert main(["import", str(project), str(tmp_path / "in.geojson"), "--image", "1", "--backend", "paquo"]) == 0
    assert qupath_check(project, {1: objects}) == {1: 2}
    # An ImageJ server cannot open an OME pyramid: a clear error, nothing added.
    pyramid = tmp_path / "img" / "pyramid.ome.tif"
    make_ome_pyramid(pyramid, (2, 256, 256), 2)
    with open_project(project, "r+", backend="paquo") as proj:
        with pytest.raises(ProjectError, match="pyramid.ome.tif: QuPath cannot add the image"):
            proj.add_image(pyramid)
    assert len(json.loads((project / "project.qpproj").read_text())["images"]) == 1
    with pytest.raises(ProjectError, match="a new project needs an empty folder"):
        open_project(tmp_path / "img", "x", backend="paquo")


def test_a_save_through_qupath_prints_only_what_users_need(qupath: str, tmp_path: Path) -> None:
    """QuPath logs every save at INFO ("Writing object hierarchy ..."); a user's run shows none of it."""
    image = tmp_path / "stack.tif"
    make_imagej_tiff(image)
    project = tmp_path / "proj"
    created = run_cli("new-project", project, image, "--backend", "paquo")
    assert created.returncode == 0, created.stderr
    geojson.write(tmp_path / "in.geojson", [PathObject(box(10, 10, 40, 40), name="one")])
    result = run_cli("import", project, tmp_path / "in.geojson", "--image", "1", "--backend", "paquo")
    assert result.returncode == 0, result.stderr
    for output in (created, result):
        assert " INFO " not in output.stderr + output.stdout, output.stderr
        assert "Restricted methods" not in output.stderr


def test_project_version_is_asked_for_then_kept_or_upgraded(qupath: str, lmd: Path, tmp_path: Path,
                                                            qupath_check: Any) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    qpproj = copy / "project.qpproj"
    raw = json.loads(qpproj.read_text())
    old = "0.4.0" if qupath != "0.4.0" else "0.3.2"
    raw["version"] = old
    qpproj.write_text(json.dumps(raw, indent=2))
    before = snapshot(copy)
    with pytest.raises(ProjectError) as info:
        open_project(copy, "r+", backend="paquo")
    assert f"QuPath {old}" in str(info.value) and f"QuPath {qupath}" in str(info.value)
    assert "keep_version" in str(info.value)
    assert snapshot(copy) == before
    assert main(["import", str(copy), str(lmd / "TD_01_verysmall_mIF.geojson"), "--image", "1", "--replace",
                 "--backend", "paquo"]) == 1
    assert snapshot(copy) == before
    polygon = PathObject(Polygon([(1, 1), (8, 1), (4, 7)]))
    with open_project(copy, "r+", backend="paquo", keep_version=True) as project:
        project.images[0].add_objects([polygon])
    assert json.loads(qpproj.read_text())["version"] == old
    with open_project(copy, "r+", backend="auto") as project:  # qpsam chose QuPath: the version is kept
        project.images[0].remove_objects([polygon])
    assert json.loads(qpproj.read_text())["version"] == old
    with open_project(copy, "r+", backend="paquo", keep_version=False) as project:
        project.images[0].add_objects([polygon])
    assert json.loads(qpproj.read_text())["version"] == qupath
    qupath_check(copy)


# ---------------------------------------------------------------------------------------------------------------
# Pixels: per entry, qpsam's readers or QuPath's server, or a clear error


def test_pixels_choose_the_reader_per_entry(qupath: str, lmd: Path, tmp_path: Path) -> None:
    tiff = tmp_path / "img" / "stack.tif"
    tiff.parent.mkdir()
    data = make_imagej_tiff(tiff)
    ome = tmp_path / "img" / "planes.ome.tif"
    planes = (np.arange(3 * 40 * 50).reshape(3, 40, 50) % 251).astype(np.uint8)
    tifffile.imwrite(ome, planes, ome=True, metadata={"axes": "CYX"})
    with open_project(tmp_path / "proj", "x", backend="paquo") as project:
        project.add_image(tiff)
        project.add_image(ome)
    with open_project(tmp_path / "proj", "r", backend="auto") as project:
        assert project.backend == "paquo"
        plain, planar = project.images
        np.testing.assert_array_equal(plain.read_region(Region(0, 0, 300, 200)), np.moveaxis(data, 0, -1))
        assert plain._pixels is not None and plain._pixels != "qupath"  # qpsam's reader
        # QuPath's ImageJ server reads the OME planes as z-slices of one channel: only QuPath's server agrees
        # with the entry's metadata, so it reads.
        assert (planar.n_channels, planar.size_z) == (1, 3)
        from qpsam.objects import ImagePlane

        region = Region(0, 0, 50, 40, 1.0, ImagePlane(-1, 2, 0))
        np.testing.assert_array_equal(planar.read_region(region)[..., 0], planes[2])
        assert planar._pixels == "qupath"
        assert planar.read_rgb(Region(0, 0, 50, 40)).shape == (40, 50, 3)
    copy = copy_project(lmd, tmp_path / "lmd")
    with open_project(copy, "r", backend="auto") as project:
        with pytest.raises(ImageReadError) as info:
            project.images[0].read_rgb(Region(0, 0, 10, 10))
        assert "entry 1" in str(info.value) and "TD_01_verysmall_mIF.ome.tif" in str(info.value)
    # An entry whose file exists but that neither can read (Bio-Formats is not in the harness).
    raw = json.loads((copy / "project.qpproj").read_text())
    fake = tmp_path / "img" / "slide.vsi"
    fake.write_bytes(b"not an image")
    raw["images"][0]["serverBuilder"]["uri"] = fake.as_uri().replace("file:///", "file:/")
    (copy / "project.qpproj").write_text(json.dumps(raw))
    with open_project(copy, "r", backend="paquo") as project:
        with pytest.raises(ImageReadError, match=r"entry 1 .*neither qpsam nor QuPath"):
            project.images[0].read_region(Region(0, 0, 10, 10))


# ---------------------------------------------------------------------------------------------------------------
# The two backends, field by field


def _edit(project: Any) -> list[PathObject]:
    entry = project.images[0]
    rect = entry.objects[0]
    cell = rect.children[3]
    entry.replace_objects([cell.replace(name="renamed", path_class=PathClass("class_1", (3, 128, 17)),
                                        measurements={**cell.measurements, "new": 0.5})])
    entry.remove_objects([rect.children[7], entry.objects[-1]])
    entry.add_objects([PathObject(Polygon([(400, 400), (420, 400), (410, 430)]), ObjectType.DETECTION,
                                  name="d", measurements={"x": 1.0}, id=uuid.UUID(int=1)),
                       PathObject(box(10, 10, 40, 30), path_class=PathClass("class_1", (3, 128, 17)),
                                  locked=True, color=(10, 20, 30), id=uuid.UUID(int=2))], parent=rect)
    entry.add_objects([PathObject(Polygon([(600, 600), (700, 600), (650, 680)]), name="top", id=uuid.UUID(int=3))])
    return entry.objects


def test_the_same_edit_through_both_backends_gives_the_same_objects(qupath: str, lmd: Path, tmp_path: Path,
                                                                    qupath_check: Any) -> None:
    results = {}
    for backend in ("native", "paquo"):
        copy = copy_project(lmd, tmp_path / backend)
        with open_project(copy, "r+", backend=backend, keep_version=True) as project:
            _edit(project)
        with open_project(copy, "r", backend="native") as project:
            results[backend] = project.images[0].objects
        with open_project(copy, "r", backend="paquo") as project:
            assert_same_objects(project.images[0].objects, results[backend], "paquo")
        qupath_check(copy)
    assert_same_objects(results["paquo"], results["native"], "paquo")
    assert len(list(walk(results["paquo"]))) == 131 - 2 + 3


def test_detect_with_the_paquo_backend_equals_native(qupath: str, tmp_path: Path, nuclei: Any, mobile_sam: Any,
                                                     qupath_check: Any) -> None:
    from test_jobs_project import make_project

    from qpsam.jobs import DetectOptions, detect

    results = {}
    for backend in ("native", "paquo"):
        project = make_project(tmp_path / backend, nuclei, n_prompts=3)
        report = detect(project, engine=mobile_sam, options=DetectOptions(backend=backend, keep_version=True))
        assert report.ok, report.summary()
        with open_project(project, "r", backend="native") as opened:
            results[backend] = opened.images[0].objects
        qupath_check(project)
    assert len(results["paquo"]) == len(results["native"]) == 3
    # Each run gives its results new ids: match them by position (the same prompts in the same order).
    paquo = [o.replace(id=n.id) for o, n in zip(results["paquo"], results["native"])]
    assert_same_objects(paquo, results["native"], "paquo")
    # The CLI takes --backend (and --keep-version) for the jobs too.
    project = tmp_path / "paquo" / "project"
    args = ["automask", str(project), "--model", "vit_t", "--engine", "torch", "--device", "cpu",
            "--backend", "paquo", "--points-per-side", "4", "--tile-size", "192", "--overlap", "0"]
    version = json.loads((project / "project.qpproj").read_text())["version"]
    if version != qupath:
        assert main(args) == 1  # names both versions and asks (the message is tested above)
    assert main([*args, "--keep-version"]) == 0
    assert json.loads((project / "project.qpproj").read_text())["version"] == version
    with open_project(project, "r", backend="paquo") as opened:
        assert len(opened.images[0].objects) > 3
    qupath_check(project)


def test_remove_image_and_rename(qupath: str, tmp_path: Path, qupath_check: Any) -> None:
    image = tmp_path / "stack.tif"
    make_imagej_tiff(image, (2, 64, 64))
    with open_project(tmp_path / "proj", "x", backend="paquo") as project:
        first = project.add_image(image)
        second = project.add_image(image, name="again", allow_duplicates=True)
        with pytest.raises(ProjectError, match="already in the project"):
            project.add_image(image)
        second.add_objects([PathObject(box(1, 1, 9, 9))])
        first.add_objects([PathObject(box(2, 2, 9, 9))])
    with open_project(tmp_path / "proj", "r+", backend="paquo") as project:
        assert [e.name for e in project.images] == ["stack.tif", "again"]
        project.remove_image(project.entry("stack.tif"))
        project.entry("again").description = "kept"
    with open_project(tmp_path / "proj", "r", backend="native") as project:
        assert [(e.id, e.name, e.description) for e in project.images] == [(2, "again", "kept")]
    assert not (tmp_path / "proj" / "data" / "1").exists()
    assert qupath_check(tmp_path / "proj") == {2: 1}


def test_auto_adds_images_qupath_cannot_open_here_as_qupath_describes_them(qupath: str, tmp_path: Path,
                                                                          qupath_check: Any) -> None:
    image = tmp_path / "pyramid.ome.tif"
    data = make_ome_pyramid(image, (2, 256, 256), 2)
    with open_project(tmp_path / "proj", "x", backend="auto") as project:
        entry = project.add_image(image)
        entry.add_objects([PathObject(box(4, 4, 40, 40), name="in")])
    saved = json.loads((tmp_path / "proj" / "project.qpproj").read_text())
    assert saved["images"][0]["serverBuilder"]["providerClassName"].endswith("BioFormatsServerBuilder")
    with open_project(tmp_path / "proj", "r", backend="auto") as project:
        entry = project.images[0]
        assert (entry.width, entry.n_channels, entry.image_type) == (256, 2, "FLUORESCENCE")
        np.testing.assert_array_equal(entry.read_region(Region(0, 0, 16, 8))[..., 1], data[1, :8, :16])
        assert [o.name for o in entry.objects] == ["in"]
    qupath_check(tmp_path / "proj")
    with pytest.raises(ProjectError, match="pyramid.ome.tif: QuPath cannot add"):
        with open_project(tmp_path / "other", "x", backend="paquo") as project:
            project.add_image(image)


def test_job_commands_and_options_take_a_backend(qupath: str) -> None:
    from click.testing import CliRunner

    from qpsam.cli import cli
    from qpsam.errors import JobError
    from qpsam.jobs import DetectOptions
    from qpsam.jobs.automask import AutomaskOptions

    for command in ("detect", "automask", "track"):
        text = CliRunner().invoke(cli, [command, "--help"]).output
        assert "--backend [auto|native|paquo]" in text and "--keep-version / --upgrade-version" in text
    assert AutomaskOptions(backend="paquo").backend == "paquo"
    with pytest.raises(JobError, match="backend must be"):
        DetectOptions(backend="java")
