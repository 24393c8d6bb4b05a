"""The project commands: qpsam info, export, import and new-project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from shapely.geometry import Polygon
from test_project import copy_project, make_ome_pyramid

from qpsam import geojson
from qpsam.cli import cli
from qpsam.geometry import Region
from qpsam.objects import PathClass, PathObject, walk
from qpsam.project import open_project


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_info_json_counts(lmd: Path) -> None:
    result = invoke("info", lmd, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (image,) = data["images"]
    assert data["version"] == "0.6.0" and image["id"] == 1 and image["nObjects"] == 131
    assert image["objectTypeCounts"] == {"Annotations": 10, "Cells": 121}
    assert image["detectionClassificationCounts"] == {"single_cells_demo": 121}
    assert len(image["channels"]) == 15 and image["imageType"] == "FLUORESCENCE"
    text = invoke("info", lmd)
    assert text.exit_code == 0 and "131 object(s)" in text.stdout and "single_cells_demo" in text.stdout


def test_export_matches_qupaths_own_export(lmd: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.geojson"
    result = invoke("export", lmd, "--image", "1", "-o", out)
    assert result.exit_code == 0, result.output
    ours = geojson.read(out)
    theirs = geojson.read(lmd / "Single_cells.geojson")
    assert [o.id for o in ours] == [o.id for o in theirs]  # the same flat list, in QuPath's order
    for a, b in zip(ours, theirs):
        assert (a.object_type, a.path_class, dict(a.measurements)) == (b.object_type, b.path_class,
                                                                     dict(b.measurements))
        assert a.geometry.hausdorff_distance(b.geometry) <= 0.01
    stdout = invoke("export", lmd, "--nested", "--precision", "2")
    assert stdout.exit_code == 0
    nested = geojson.loads(stdout.stdout)
    assert len(nested) == 10 and len(list(walk(nested))) == 131


def test_export_needs_image_when_there_are_several(samples: Path) -> None:
    result = invoke("export", samples / "qupath-0.4.0-foci")
    assert result.exit_code == 2 and "--image" in result.stderr
    missing = invoke("export", samples / "qupath-0.4.0-foci", "--image", "nope")
    assert missing.exit_code == 1 and "no image with id or name 'nope'" in missing.stderr


def test_import_adds_objects_and_saves(lmd: Path, tmp_path: Path) -> None:
    copy = copy_project(lmd, tmp_path / "lmd")
    new = [PathObject(Polygon([(1, 1), (50, 2), (20, 40)]), path_class=PathClass("Tumor", (200, 0, 0))),
           PathObject(Polygon([(100, 100), (150, 100), (120, 160)]), name="second")]
    file = tmp_path / "new.geojson"
    geojson.write(file, new)
    result = invoke("import", copy, file, "--image", "1")
    assert result.exit_code == 0, result.output
    assert "2 object(s) added" in result.stdout and "133" in result.stdout
    with open_project(copy) as project:
        assert project.images[0].objects[-2:] == new
    again = invoke("import", copy, file, "--image", "1")
    assert again.exit_code == 1 and "already in the hierarchy" in again.stderr
    renamed = [new[0].replace(name="renamed"), new[1]]
    geojson.write(file, renamed)
    assert invoke("import", copy, file, "--image", "1", "--replace").exit_code == 0
    assert invoke("import", copy, file, "--image", "TD_01_verysmall_mIF.ome.tif", "--clear").exit_code == 0
    with open_project(copy) as project:
        assert project.images[0].objects == renamed


def test_new_project_from_images(tmp_path: Path) -> None:
    images = []
    for i in range(2):
        path = tmp_path / f"img{i}.ome.tif"
        make_ome_pyramid(path, (2, 256, 384), 3)
        images.append(path)
    png = tmp_path / "plain.png"
    from PIL import Image

    Image.fromarray((np.arange(64 * 48 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)).save(png)
    images.append(png)
    result = invoke("new-project", tmp_path / "proj", *images, "--backend", "native")
    assert result.exit_code == 0, result.output
    assert "project with 3 image(s)" in result.stdout
    with open_project(tmp_path / "proj") as project:
        assert [e.name for e in project.images] == ["img0.ome.tif", "img1.ome.tif", "plain.png"]
        assert project.images[0].image_type == "FLUORESCENCE"
        plain = project.images[2]
        assert plain.is_rgb and plain.n_channels == 3 and plain.image_type == "UNSET"
        rgb = plain.read_rgb(Region(0, 0, 64, 48))
        assert np.array_equal(rgb, np.asarray(Image.open(png)))
    for i in (1, 2, 3):
        assert (tmp_path / "proj" / "data" / str(i) / "thumbnail.jpg").exists()
    again = invoke("new-project", tmp_path / "proj", images[0])
    assert again.exit_code == 1 and "already exists" in again.stderr
