"""The jobs on QuPath projects, from Python and the CLI, with real weights: results, history, resume, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import tifffile
from shapely.geometry import box

from qpsam import history
from qpsam.cli import main
from qpsam.jobs import QUALITY, DetectOptions, EngineSpec, detect
from qpsam.jobs.batch import image_key
from qpsam.jobs.detect import describe_prompts
from qpsam.objects import PathClass, PathObject
from qpsam.project import open_project

pytestmark = pytest.mark.weights

NUCLEUS = PathClass("Nucleus", (230, 60, 60))
ENGINE = EngineSpec("vit_t", engine="torch", device="cpu")


def make_project(folder: Path, nuclei, n_images: int = 1, n_prompts: int = 6,
                 corners: Sequence[tuple[int, int]] | None = None) -> Path:
    """A project of 192-pixel crops of the real nuclei image, each with box prompts from the ground truth.

    ``corners``: the (x, y) of each crop's top left; by default ``n_images`` crops down the left edge, 128 pixels
    apart (so that neighbours overlap).
    """
    image, labels = nuclei
    (folder / "images").mkdir(parents=True)
    with open_project(folder / "project", "x", backend="native") as project:
        for i, (x0, y0) in enumerate(corners or [(0, 128 * i) for i in range(n_images)]):
            crop, crop_labels = image[y0:y0 + 192, x0:x0 + 192], labels[y0:y0 + 192, x0:x0 + 192]
            path = folder / "images" / f"crop{i}.tif"
            tifffile.imwrite(path, crop)
            entry = project.add_image(path)
            prompts = []
            for v in [v for v in np.unique(crop_labels)[1:] if (crop_labels == v).sum() > 80][:n_prompts]:
                ys, xs = np.nonzero(crop_labels == v)
                prompts.append(PathObject(box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), path_class=NUCLEUS))
            entry.add_objects(prompts)
        project.save()
    return folder / "project"


def objects_of(project_path: Path) -> dict[str, list[PathObject]]:
    with open_project(project_path, "r", backend="native") as project:
        return {e.name: list(e.objects) for e in project.images}


def test_detect_from_python_writes_objects_history_groovy_report_and_preview(tmp_path, nuclei) -> None:
    project = make_project(tmp_path, nuclei)
    before = objects_of(project)["crop0.tif"]
    report = detect(project, engine=ENGINE, options=DetectOptions(names=True), groovy=tmp_path / "run.groovy",
                    report=tmp_path / "report.json", preview=tmp_path / "preview")
    assert report.ok and report.images[0].added == len(before)
    after = objects_of(project)["crop0.tif"]
    assert {o.id for o in after}.isdisjoint(o.id for o in before)  # prompts removed, results added
    assert all(o.path_class == NUCLEUS and o.name.startswith("SAM (Quality=") and QUALITY in o.measurements for o in after)
    assert (project / "data" / "1" / "data.qpdata.backup").is_file()  # the previous hierarchy is kept
    records = history.read(project)
    # the image's key: the run's key with the prompts the run left (none: they were consumed)
    key = image_key(report.params["run_key"], describe_prompts([], DetectOptions(names=True)))
    assert [r.kind for r in records] == ["detect"] and records[0].run_key == key
    assert "SAMDetectionTask" in (tmp_path / "run.groovy").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["images"][0]["status"] == "done"
    assert list((tmp_path / "preview").glob("*.png"))


def test_detect_cli_resume_and_per_image_failures(tmp_path, nuclei, capsys) -> None:
    project = make_project(tmp_path, nuclei, n_images=2, n_prompts=2)
    os.remove(tmp_path / "images" / "crop1.tif")  # the second image's file is gone
    code = main(["detect", str(project), "--model", "vit_t", "--engine", "torch", "--device", "cpu",
                 "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr()
    assert code == 1  # one image failed
    assert "1 image(s) done, 0 skipped, 1 failed" in out.out
    assert "crop1.tif" in out.out and "image not found" in out.out
    results = objects_of(project)
    assert all(QUALITY in o.measurements for o in results["crop0.tif"])
    assert not any(QUALITY in o.measurements for o in results["crop1.tif"])  # untouched, prompts still there
    code = main(["detect", str(project), "--image", "crop0.tif", "--model", "vit_t", "--engine", "torch",
                 "--device", "cpu", "--resume"])
    assert code == 0 and "0 image(s) done, 1 skipped" in capsys.readouterr().out
    assert main(["detect", str(project), "--image", "nope", "--model", "vit_t"]) == 1
    assert "no image 'nope'" in capsys.readouterr().err


def test_interrupted_batch_resumes_to_the_same_project(tmp_path, nuclei) -> None:
    reference = make_project(tmp_path / "a", nuclei, n_images=3, n_prompts=2)
    shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)
    interrupted = tmp_path / "b" / "project"
    # Image paths are absolute in the copy's project file: point them at the copy's own images.
    with open_project(interrupted, "r+", backend="native") as project:
        project.relocate(lambda uri: uri.replace(str(tmp_path / "a"), str(tmp_path / "b")))
        project.save()
    args = ["--model", "vit_t", "--engine", "torch", "--device", "cpu"]
    assert main(["detect", str(reference), *args]) == 0

    cmd = [sys.executable, "-m", "qpsam.cli", "detect", str(interrupted), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not history.read(interrupted):
        time.sleep(0.2)  # wait until the first image is committed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {r.image_id for r in history.read(interrupted)}
    assert 1 <= len(done) < 3, "the kill should land mid-run"
    objects_of(interrupted)  # every data.qpdata still reads
    assert main(["detect", str(interrupted), *args, "--resume"]) == 0
    got, want = objects_of(interrupted), objects_of(reference)
    assert got.keys() == want.keys()
    for name in want:
        a = sorted(want[name], key=lambda o: o.geometry.bounds)
        b = sorted(got[name], key=lambda o: o.geometry.bounds)
        assert [o.geometry.wkt for o in a] == [o.geometry.wkt for o in b]
        assert [o.path_class for o in a] == [o.path_class for o in b]


def test_automask_cli_on_a_pyramidal_image_gives_each_disc_once_across_tiles(tmp_path) -> None:
    """Bright discs on both sides of and on the tile borders of a generated pyramidal OME-TIFF."""
    from shapely.geometry import Point
    from test_pixels import write_pyramid

    yy, xx = np.mgrid[:256, :400]
    image = np.full((256, 400), 20, np.uint8)
    centres = [(60, 60), (128, 150), (200, 200), (100, 256), (180, 330), (60, 300)]
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 18**2] = 230
    path = tmp_path / "discs.ome.tif"
    write_pyramid(path, image[None], levels=2, tile=128)
    project = tmp_path / "project"
    assert main(["new-project", str(project), str(path)]) == 0
    code = main(["automask", str(project), "--model", "vit_t", "--engine", "torch", "--device", "cpu",
                 "--points-per-side", "8", "--tile-size", "256", "--overlap", "96", "--class", "Disc"])
    assert code == 0
    (objects,) = objects_of(project).values()
    discs = [Point(cx, cy).buffer(18) for cy, cx in centres]
    for disc in discs:
        matches = [o for o in objects if o.geometry.intersection(disc).area / o.geometry.union(disc).area > 0.7]
        assert len(matches) == 1, f"disc at {disc.centroid} found {len(matches)} times"
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            assert a.geometry.intersection(b.geometry).area < 0.5 * min(a.geometry.area, b.geometry.area)
