"""``qpsam relocate`` (stale image paths) and ``qpsam export --all`` (one GeoJSON per image for the project import
script), on projects of crops of the bundled nuclei image, checked with QuPath's own reader."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from test_jobs_project import make_project

from qpsam.cli import main
from qpsam.errors import ImageReadError
from qpsam.geometry import Region
from qpsam.groovy import project_import_script
from qpsam.project import open_project

pytestmark = pytest.mark.qupath
NATIVE = ["--backend", "native"]


def _read_all(project: Path) -> list[tuple[int, int, int]]:
    with open_project(project, "r", backend="native") as proj:
        return [e.read_rgb(Region(0, 0, 16, 16)).shape for e in proj.images]


def test_relocate_from_to_and_search(tmp_path: Path, nuclei, capsys, qupath_judges, qupath_check) -> None:
    project = make_project(tmp_path / "a", nuclei, n_images=2, n_prompts=2)
    shutil.move(tmp_path / "a" / "images", tmp_path / "moved")
    with open_project(project, "r", backend="native") as proj, pytest.raises(ImageReadError) as info:
        proj.images[0].read_rgb(Region(0, 0, 16, 16))
    assert "qpsam relocate PROJECT --search FOLDER" in str(info.value)  # the error points to the fix

    # a move whose new files are not all there changes nothing
    (tmp_path / "half").mkdir()
    shutil.copy(tmp_path / "moved" / "crop0.tif", tmp_path / "half")
    before = (project / "project.qpproj").read_bytes()
    assert main(["relocate", str(project), "--from", str(tmp_path / "a" / "images"), "--to",
                 str(tmp_path / "half"), *NATIVE]) == 1
    err = capsys.readouterr().err
    assert "crop1.tif" in err and "nothing was changed" in err and err.count("\n") == 1
    assert (project / "project.qpproj").read_bytes() == before

    assert main(["relocate", str(project), "--from", str(tmp_path / "a" / "images"), "--to",
                 str(tmp_path / "moved"), *NATIVE]) == 0
    out = capsys.readouterr().out
    assert "2 image path(s) changed, 0 image(s) still missing" in out
    assert _read_all(project) == [(16, 16, 3), (16, 16, 3)]
    qupath_check(project)
    for version in ("0.5.1", "0.7.0"):  # QuPath itself finds the images at their new place
        uris = [u for e in qupath_judges[version].project(project)["entries"] for u in e["uris"]]
        assert sorted(Path(urlparse(u).path) for u in uris) == [tmp_path / "moved" / "crop0.tif",
                                                                 tmp_path / "moved" / "crop1.tif"]

    # --search finds files by name; of two with the name, the one in the more similar folders wins
    (tmp_path / "disk" / "x" / "moved").mkdir(parents=True)
    (tmp_path / "disk" / "other").mkdir(parents=True)
    shutil.move(tmp_path / "moved" / "crop0.tif", tmp_path / "disk" / "x" / "moved")
    shutil.move(tmp_path / "moved" / "crop1.tif", tmp_path / "disk" / "x" / "moved")
    shutil.copy(tmp_path / "disk" / "x" / "moved" / "crop0.tif", tmp_path / "disk" / "other")
    assert main(["relocate", str(project), "--search", str(tmp_path / "disk"), *NATIVE]) == 0
    assert "2 image path(s) changed" in capsys.readouterr().out
    assert _read_all(project) == [(16, 16, 3), (16, 16, 3)]
    with open_project(project, "r", backend="native") as proj:
        assert all("/disk/x/moved/" in e.uri for e in proj.images)

    # an image found nowhere is listed, and the exit code says so
    (tmp_path / "disk" / "x" / "moved" / "crop1.tif").unlink()
    assert main(["relocate", str(project), "--search", str(tmp_path / "disk"), *NATIVE]) == 1
    out = capsys.readouterr().out
    assert "0 image path(s) changed, 1 image(s) still missing" in out and "crop1.tif" in out
    assert main(["relocate", str(project), *NATIVE]) == 2  # neither --from/--to nor --search


def test_export_all_writes_the_files_the_project_import_script_reads(tmp_path: Path, nuclei, capsys,
                                                                     qupath_judges) -> None:
    project = make_project(tmp_path, nuclei, n_images=2, n_prompts=3)
    assert main(["export", str(project), "--all", *NATIVE]) == 0
    out = capsys.readouterr().out
    assert "2 file(s), 6 object(s)" in out and "project-import --folder qpsam/geojson" in out
    script = project_import_script()  # its defaults: qpsam/geojson in the project folder, {id}.geojson
    assert "'qpsam/geojson'" in script and "'{id}.geojson'" in script
    with open_project(project, "r", backend="native") as proj:
        for entry in proj.images:
            path = project / "qpsam" / "geojson" / f"{entry.id}.geojson"
            theirs = qupath_judges["0.6.0"].geojson(path)  # QuPath's own GeoJSON import
            assert sorted(o["id"] for o in theirs) == sorted(str(o.id) for o in entry.objects)

    other = tmp_path / "out"
    assert main(["export", str(project), "--all", "-o", str(other), *NATIVE]) == 0
    assert sorted(p.name for p in other.iterdir()) == ["1.geojson", "2.geojson"]
    assert f"--folder {other.resolve()}" in capsys.readouterr().out
    assert main(["export", str(project), "--all", "--image", "1", *NATIVE]) == 2
    assert main(["export", str(project), "--image", "1", "-o", str(other), *NATIVE]) == 2  # a folder, not --all
