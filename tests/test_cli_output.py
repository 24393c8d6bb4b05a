"""What the command line prints: progress inside an image, no library noise, quiet broken pipes, CLI words in
errors. The jobs run the real MobileSAM on crops of the bundled nuclei image, in a fresh process each where the
output of a whole run (imports included) is what is checked."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest
from test_jobs_project import make_project

from qpsam.cli import main
from qpsam.jobs import DetectOptions, EngineSpec, automask, detect
from qpsam.jobs.automask import AutomaskOptions, plan_tiles
from qpsam.project import open_project
from qpsam.sam import AutomaskParams

ENGINE = EngineSpec("vit_t", engine="torch", device="cpu")
CLI = [sys.executable, "-m", "qpsam.cli"]
DETECT_ARGS = ["--model", "vit_t", "--engine", "torch", "--device", "cpu"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    # the jobs have no --backend yet: without a QuPath for paquo to find, they take the native backend
    env["PAQUO_QUPATH_DIR"] = "/nonexistent"
    env.update(extra)
    return env


def test_broken_pipe_ends_quietly(lmd: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as after `| head -1`
    try:
        proc = subprocess.run([*CLI, "info", str(lmd), "--backend", "native"], stdout=write, stderr=subprocess.PIPE, text=True,
                              env=_env(), timeout=120)
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == 1


@pytest.mark.qupath
def test_error_messages_name_cli_flags(tmp_path: Path, capsys, qupath_check) -> None:
    from shapely.geometry import box

    from qpsam import geojson
    from qpsam.objects import PathObject

    project = tmp_path / "p"
    image = Path(__file__).resolve().parents[1] / "examples" / "data" / "nuclei.tif"
    assert main(["new-project", str(project), str(image), "--backend", "native"]) == 0
    good = tmp_path / "good.geojson"
    geojson.write(good, [PathObject(box(1, 1, 20, 20))])
    assert main(["import", str(project), str(good), "--image", "1", "--backend", "native"]) == 0
    qupath_check(project)
    capsys.readouterr()
    assert main(["import", str(project), str(good), "--image", "1", "--backend", "native"]) == 1  # the same id again
    err = capsys.readouterr().err
    assert "--replace" in err and "replace_objects" not in err

    bowtie = {"type": "Feature", "properties": {"objectType": "annotation"},
              "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}}
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [bowtie]}))
    assert main(["import", str(project), str(bad), "--image", "1", "--backend", "native"]) == 1
    err = capsys.readouterr().err
    assert "--fix-invalid" in err and "on_invalid" not in err
    assert err.count("\n") == 1  # one line


@pytest.mark.weights
def test_detect_log_has_progress_lines_and_no_library_warnings(tmp_path: Path, nuclei, mobile_sam) -> None:
    project = make_project(tmp_path, nuclei, n_images=2, n_prompts=2)
    proc = subprocess.run([*CLI, "detect", str(project), *DETECT_ARGS], capture_output=True, text=True,
                          env=_env(QPSAM_PROGRESS_SECONDS="0"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["detect: 2 image(s) done, 0 skipped, 0 failed; 4 objects added"]
    lines = proc.stderr.splitlines()
    assert "Warning" not in proc.stderr and "warn" not in proc.stderr.lower()
    assert all(line.startswith("qpsam: ") for line in lines), lines  # never a bare label that looks like a result
    assert "qpsam: image crop0.tif: window 1/1" in lines
    assert "qpsam: image 2/2 crop1.tif: window 1/1" in lines
    assert lines[-1] == "qpsam: image 2/2 finished: crop1.tif"


@pytest.mark.weights
def test_detect_on_a_terminal_ends_its_progress_line_before_the_summary(tmp_path: Path, nuclei, mobile_sam) -> None:
    project = make_project(tmp_path, nuclei, n_images=1, n_prompts=2)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*CLI, "detect", str(project), *DETECT_ARGS], stdout=follower, stderr=follower,
                            env=_env(COLUMNS="200"))
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 600)
        if not ready:
            break
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal is closed once the process is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    assert "window 1/1" in text  # the bar showed the work inside the image
    summary = "detect: 1 image(s) done, 0 skipped, 0 failed; 2 objects added"
    # the summary starts a line of its own: the redrawn progress line was ended first
    assert f"\n{summary}\n" in text, repr(text)
    assert "Warning" not in text


@pytest.mark.weights
def test_step_progress_from_python_counts_tiles_and_windows(tmp_path: Path, nuclei, mobile_sam) -> None:
    project = open_project(make_project(tmp_path, nuclei, n_images=1, n_prompts=2), "r+", backend="native")
    windows: list[tuple] = []
    report = detect(project, engine=mobile_sam, options=DetectOptions(keep_prompts=True),
                    step_progress=lambda *a: windows.append(a))
    assert report.ok and windows == [("crop0.tif", "window", 1, 1)]

    tiles: list[tuple] = []
    options = AutomaskOptions(params=AutomaskParams(points_per_side=4), tile_size=128, overlap=32)
    report = automask(project, engine=mobile_sam, options=options, region=(0, 0, 192, 150),
                      step_progress=lambda *a: tiles.append(a))
    n = len(plan_tiles((0, 0, 192, 150), 128, 32))
    assert report.ok and n == 4
    assert tiles == [("crop0.tif", "tile", k, n) for k in range(1, n + 1)]
    project.close()
