"""Issue 14, items 1-8: the jobs do what users mean (no silent no-ops, no wrong results they cannot see).

Real MobileSAM weights, projects made from the bundled nuclei image and generated z-stacks and time series; every
saved project is read back by QuPath itself (``qupath_check``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from shapely.geometry import box
from test_jobs_project import make_project, objects_of

from qpsam import geojson, history
from qpsam.cli import main
from qpsam.jobs import QUALITY, EngineSpec
from qpsam.objects import ImagePlane, PathClass, PathObject
from qpsam.project import open_project

pytestmark = pytest.mark.weights

ENGINE_ARGS = ["--model", "vit_t", "--engine", "torch", "--device", "cpu"]
ENGINE = EngineSpec("vit_t", engine="torch", device="cpu")
TISSUE = PathClass("Tissue", (0, 160, 0))


@pytest.fixture(autouse=True)
def native_backend(monkeypatch):
    """The jobs open projects with backend "auto": here they use the native one, as on a machine without QuPath
    (QuPath still judges every saved project through ``qupath_check``)."""
    from qpsam.project import paquo_backend

    monkeypatch.setattr(paquo_backend, "unavailable_reason", lambda: "native backend for the jobs tests")


# ------------------------------------------------------------------------------------------------ item 6


def test_a_prompt_class_that_matches_nothing_fails_and_names_the_classes(tmp_path, nuclei, capsys,
                                                                         qupath_check) -> None:
    project = make_project(tmp_path, nuclei, n_images=2, n_prompts=2)
    code = main(["detect", str(project), *ENGINE_ARGS, "--prompts", "class:Nucleos"])
    out = capsys.readouterr().out
    assert code == 1
    assert "0 image(s) done, 2 skipped" in out
    assert "no prompts of class 'Nucleos'" in out and "did you mean 'Nucleus'?" in out
    assert "crop0.tif" in out and "crop1.tif" in out
    assert history.read(project) == []  # nothing ran, nothing recorded
    assert not any(QUALITY in o.measurements for objs in objects_of(project).values() for o in objs)

    # one image with prompts of the class is enough for success; the other is reported, not recorded
    with open_project(project, "r+", backend="native") as p:
        entry = p.entry("crop1.tif")
        entry.remove_objects([o.id for o in entry.objects])
        entry.add_objects([PathObject(box(10, 10, 30, 30), path_class=PathClass("Other"))])
        p.save()
    code = main(["detect", str(project), *ENGINE_ARGS, "--prompts", "class:Nucleus"])
    out = capsys.readouterr().out
    assert code == 0 and "1 image(s) done, 1 skipped" in out
    assert "crop1.tif: no prompts of class 'Nucleus' (prompt classes here: Other)" in out
    assert [r.image_name for r in history.read(project)] == ["crop0.tif"]
    qupath_check(project)


# ------------------------------------------------------------------------------------------------ item 7


def test_resume_runs_images_whose_prompts_changed(tmp_path, nuclei, capsys, qupath_check) -> None:
    project = make_project(tmp_path, nuclei, n_images=2, n_prompts=2)
    assert main(["detect", str(project), *ENGINE_ARGS, "--image", "crop1.tif"]) == 0
    capsys.readouterr()
    # unchanged since: skipped, and the summary says why
    assert main(["detect", str(project), *ENGINE_ARGS, "--image", "crop1.tif", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "0 image(s) done, 1 skipped" in out and "crop1.tif: done before with the same parameters" in out

    new = tmp_path / "new-rectangles.geojson"
    geojson.write(new, [PathObject(box(40, 40, 70, 70), path_class=PathClass("Nucleus"))])
    assert main(["import", str(project), new.as_posix(), "--image", "crop1.tif", "--replace",
                 "--backend", "native"]) == 0
    capsys.readouterr()
    assert main(["detect", str(project), *ENGINE_ARGS, "--image", "crop1.tif", "--resume"]) == 0
    assert "1 image(s) done, 0 skipped" in capsys.readouterr().out
    results = [o for o in objects_of(project)["crop1.tif"] if QUALITY in o.measurements]
    assert len(results) == 3  # two from the first run, one from the new rectangle
    # the image that never ran is not skipped by --resume either
    assert main(["detect", str(project), *ENGINE_ARGS, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) done, 1 skipped" in out
    qupath_check(project)


def test_resume_with_kept_prompts_skips_the_same_prompts_and_runs_changed_ones(tmp_path, nuclei, capsys) -> None:
    project = make_project(tmp_path, nuclei, n_images=1, n_prompts=1)
    args = ["detect", str(project), *ENGINE_ARGS, "--keep-prompts", "--resume"]
    assert main(args) == 0 and "1 image(s) done" in capsys.readouterr().out
    assert main(args) == 0 and "0 image(s) done, 1 skipped" in capsys.readouterr().out
    with open_project(project, "r+", backend="native") as p:
        entry = p.images[0]
        entry.add_objects([PathObject(box(100, 100, 120, 125), path_class=PathClass("Nucleus"))])
        p.save()
    assert main(args) == 0 and "1 image(s) done, 0 skipped" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ z-stacks, time series


def stack_project(folder: Path, nuclei, axes: str = "ZYX", n: int = 5, size: int = 160) -> Path:
    """A project of one OME-TIFF z-stack or time series (``axes`` ZYX or TYX) of nuclei crops, shifted per plane
    so that each plane differs; plane k is the crop at (8k, 8k)."""
    image, _ = nuclei
    planes = np.stack([image[8 * k:8 * k + size, 8 * k:8 * k + size] for k in range(n)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stack-{axes[0].lower()}.ome.tif"
    tifffile.imwrite(path, planes, ome=True, metadata={"axes": axes})
    project = folder / "project"
    assert main(["new-project", str(project), str(path)]) == 0
    return project


def add_objects(project: Path, objects) -> None:
    with open_project(project, "r+", backend="native") as p:
        p.images[0].add_objects(objects)
        p.save()


# ------------------------------------------------------------------------------------------------ item 8


def test_track_defaults_to_sam2_and_checks_planes_and_model_before_any_weights(tmp_path, nuclei, capsys,
                                                                               monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("QPSAM_HOME", str(home))  # no weights here: any load would have to download
    project = stack_project(tmp_path, nuclei, "ZYX", n=5)
    add_objects(project, [PathObject(box(40, 40, 70, 70), path_class=PathClass("Cell"), plane=ImagePlane(z=1))])
    capsys.readouterr()
    # the default model tracks: the run gets as far as the plane check
    assert main(["track", str(project), "--axis", "z", "--from", "0", "--to", "9"]) == 1
    err = capsys.readouterr().err
    assert "has 5 z-slices (z = 0..4); --to 9 is outside it" in err and "stack-z.ome.tif" in err
    assert main(["track", str(project), "--axis", "t", "--from", "0", "--to", "2"]) == 1
    assert "has 1 time points" in capsys.readouterr().err
    assert main(["track", str(project), "--axis", "z", "--from", "0", "--to", "4", "--model", "vit_t"]) == 1
    assert "model 'vit_t' cannot track: use a SAM2 model" in capsys.readouterr().err
    assert not home.exists() or not any(home.rglob("*.pt*"))  # nothing downloaded, nothing loaded
    assert history.read(project) == []
