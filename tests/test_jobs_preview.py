"""Previews show what ran (prompts, background points, the region annotation) beside the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import MultiPoint, Point, box
from test_jobs_project import make_project

from qpsam.jobs import automask, detect
from qpsam.jobs.automask import AutomaskOptions
from qpsam.jobs.preview import AREA_COLOR, BACKGROUND_COLOR, PROMPT_COLOR
from qpsam.objects import PathClass, PathObject
from qpsam.project import open_project
from qpsam.sam import AutomaskParams

pytestmark = pytest.mark.weights


def _panels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    picture = np.asarray(Image.open(path).convert("RGB"))
    width = (picture.shape[1] - 4) // 2
    assert picture.shape[1] == 2 * width + 4 and (picture[:, width:width + 4] == 128).all()
    return picture[:, :width], picture[:, width + 4:]


def _count(panel: np.ndarray, color: tuple[int, int, int]) -> int:
    return int((panel == np.array(color, np.uint8)).all(axis=2).sum())


def test_detect_preview_shows_prompts_and_background_points_beside_the_results(tmp_path: Path, nuclei, mobile_sam,
                                                                              qupath_check) -> None:
    project = make_project(tmp_path, nuclei, n_images=1, n_prompts=2)
    with open_project(project, "r+", backend="native") as p:
        entry = p.images[0]
        entry.add_objects([PathObject(MultiPoint([(5, 180), (186, 6)]), path_class=PathClass("Ignore*")),
                           PathObject(Point(150, 150), path_class=PathClass("Nucleus"))])
        p.save()
        report = detect(p, engine=mobile_sam, preview=tmp_path / "preview")
    assert report.ok and report.images[0].added >= 2
    qupath_check(project)
    (png,) = sorted((tmp_path / "preview").glob("*.png"))
    inputs, results = _panels(png)
    assert _count(inputs, PROMPT_COLOR) > 100  # two box outlines and a point
    assert _count(inputs, BACKGROUND_COLOR) >= 2 * 21  # two background dots (radius 3)
    assert _count(results, PROMPT_COLOR) == 0 and _count(results, BACKGROUND_COLOR) == 0
    assert not np.array_equal(inputs, results)


def test_automask_preview_outlines_the_region_annotation(tmp_path: Path, nuclei, mobile_sam, qupath_check) -> None:
    project = make_project(tmp_path, nuclei, n_images=1, n_prompts=0)
    tissue = PathObject(box(20, 30, 120, 110), path_class=PathClass("Tissue"))
    with open_project(project, "r+", backend="native") as p:
        p.images[0].add_objects([tissue])
        p.save()
        options = AutomaskOptions(params=AutomaskParams(points_per_side=4), tile_size=256, overlap=32)
        report = automask(p, engine=mobile_sam, options=options, region="annotation:Tissue",
                          preview=tmp_path / "preview")
    assert report.ok
    qupath_check(project)
    (png,) = sorted((tmp_path / "preview").glob("*.png"))
    inputs, results = _panels(png)
    assert inputs.shape[:2] == (80, 100)  # the preview is the annotation's bounds
    white = (inputs == np.array(AREA_COLOR, np.uint8)).all(axis=2)
    assert white[0, :].all() and white[:, 0].all()  # its outline, on the top and left edges
    assert not (results == np.array(AREA_COLOR, np.uint8)).all(axis=2)[0, :].all()
