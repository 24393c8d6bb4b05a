"""Project command history: records appended atomically, replayed as one Groovy script per image."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from groovy_fixtures import groovy, parse_ok, reader  # noqa: F401
from shapely.geometry import box

from qpsam import geojson, history
from qpsam._version import __version__
from qpsam.cli import main
from qpsam.errors import ProjectError
from qpsam.geometry import Region
from qpsam.groovy import AutomaskSpec, DetectionSpec, SequenceSpec, VideoPrompt, describe, job_kind, script_for
from qpsam.objects import PathObject
from qpsam.project import open_project
from qpsam.sam import AutomaskParams, OutputType, Prompt


def record(project: Path, spec, image_id, **kwargs) -> history.HistoryRecord:
    """What a job appends for one run of ``spec``: its description and its script."""
    made = history.make_record(job_kind(spec), image_id, params=describe(spec), script=script_for(spec), **kwargs)
    return history.append(project, made)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "my project"
    with open_project(folder, "x", backend="native"):
        pass
    return folder


def detect_spec(x: float = 10) -> DetectionSpec:
    return DetectionSpec(region=Region(0, 0, 200, 100, 2.0), model="vit_t", output=OutputType.MULTI_SMALLEST,
                         prompts=(PathObject(box(x, 10, x + 20, 30)),))


def automask_spec() -> AutomaskSpec:
    return AutomaskSpec(region=Region(0, 0, 200, 100, 2.0), model="vit_b",
                        params=AutomaskParams(points_per_side=12, pred_iou_thresh=0.7))


def track_spec() -> SequenceSpec:
    return SequenceSpec(region=Region(0, 0, 200, 100), model="sam2_t", axis="z", start=0, end=4,
                        prompts=(VideoPrompt(0, 2, Prompt(points=((5, 5),), labels=(1,))),))


def test_record_appends_one_line_per_run(project: Path) -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    spec = detect_spec()
    first = record(project, spec, "1", image_name="slide A.tif", time=when)
    record(project / "project.qpproj", automask_spec(), 2)
    path = project / "qpsam" / "history.jsonl"
    lines = path.read_text(encoding="ascii").splitlines()
    assert len(lines) == 2
    data = json.loads(lines[0])
    assert data["kind"] == "detect" and data["image_id"] == "1" and data["image_name"] == "slide A.tif"
    assert data["time"] == "2025-03-04T05:06:07Z" and data["qpsam_version"] == __version__
    assert data["params"]["region"] == {"x": 0, "y": 0, "width": 200, "height": 100, "downsample": 2.0,
                                        "plane": [-1, 0, 0]}
    assert data["params"]["output"] == "multi-smallest"
    assert geojson.from_feature(data["params"]["prompts"][0]) == spec.prompts[0]
    assert data["groovy"] == script_for(spec)
    assert first == history.read(project)[0]
    second = history.read(project)[1]
    assert second.kind == "automask" and second.image_id == "2"
    assert second.params["params"]["points_per_side"] == 12
    assert second.params["params"]["pred_iou_thresh"] == 0.7


def test_concurrent_records_never_interleave(project: Path) -> None:
    spec = detect_spec()

    def work(n: int) -> None:
        for _ in range(5):
            record(project, spec, f"img{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = history.read(project)
    assert len(records) == 20
    assert sorted(history.images(records)) == ["img0", "img1", "img2", "img3"]


def test_a_torn_record_is_kept_and_skipped(project: Path) -> None:
    record(project, detect_spec(), "1")
    path = history.history_path(project)
    with path.open("ab") as handle:  # a crash in the middle of an append
        handle.write(b'{"format":1,"kind":"det')
    record(project, automask_spec(), "1")
    text = path.read_text(encoding="ascii")
    assert '{"format":1,"kind":"det\n' in text  # nothing lost, the next record on its own line
    with pytest.warns(UserWarning, match="skipped unreadable lines 2"):
        records = history.read(project)
    assert [r.kind for r in records] == ["detect", "automask"]
    script = history.history_script(project, "1")
    assert "Skipped unreadable lines of the history: 2" in script
    assert "Step 2 of 2: automask" in script


def test_history_script_runs_every_step_in_its_own_scope(project: Path, reader) -> None:
    record(project, detect_spec(10), "7", image_name="a.tif")
    record(project, detect_spec(50), "8", image_name="b.tif")
    record(project, automask_spec(), "7", image_name="a.tif")
    record(project, track_spec(), "7", image_name="a.tif")
    script = history.history_script(project, "a.tif")
    assert script == history.history_script(project, "7")
    assert "image a.tif (id 7)" in script
    steps = [ln.split(":")[1].split()[0] for ln in script.splitlines() if ln.startswith("// Step")]
    assert steps == ["detect", "automask", "track"]
    result = reader(script)  # with Groovy 4, a variable declared twice in one scope would fail here
    assert [c.receiver for c in result.calls if c.name == "=" and c.receiver.startswith("step")] == [
        "step1", "step2", "step3"]
    assert [c.name for c in result.calls if c.name.startswith("step")] == ["step1", "step2", "step3"]
    # The steps keep their own values: the first detection's box is there, the other image's is not.
    rects = [c.args[:4] for c in result.named("createRectangleROI")]
    assert rects == [(Decimal("10.0"), Decimal("10.0"), Decimal("20.0"), Decimal("20.0"))]
    assert result.one("pointsPerSide").args == (12,)
    assert len([c for c in result.named("run") if c.receiver == "task"]) == 3


@pytest.mark.groovy
def test_history_script_parses_with_groovy_4(project: Path, groovy) -> None:
    for spec in (detect_spec(), automask_spec(), track_spec(), detect_spec(30)):
        record(project, spec, "1")
    parse_ok(groovy, history.history_script(project))


def test_history_needs_an_image_when_several_have_runs(project: Path) -> None:
    record(project, detect_spec(), "1", image_name="a.tif")
    record(project, detect_spec(), "2")
    with pytest.raises(ProjectError, match=r"2 images; choose one of: 1 \(a.tif\), 2"):
        history.history_script(project)
    with pytest.raises(ProjectError, match="no runs recorded for image 'c.tif'"):
        history.history_script(project, "c.tif")


def test_history_errors_name_the_project(tmp_path: Path, project: Path) -> None:
    with pytest.raises(ProjectError, match="no runs recorded in .*history.jsonl"):
        history.history_script(project)
    with pytest.raises(ProjectError, match="no project folder"):
        record(tmp_path / "missing", detect_spec(), "1")
    with pytest.raises(ProjectError, match="no project file"):
        history.history_path(tmp_path / "missing.qpproj")


def test_cli_history(project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    record(project, detect_spec(), "1", image_name="a.tif")
    record(project, automask_spec(), "2", image_name="b.tif")
    assert main(["history", str(project), "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["1\ta.tif\t1 runs", "2\tb.tif\t1 runs"]
    assert main(["history", str(project / "project.qpproj"), "--image", "b.tif"]) == 0
    out = capsys.readouterr().out
    assert out == history.history_script(project, "2")
    assert main(["history", str(project)]) == 1
    assert "choose one of" in capsys.readouterr().err
    target = tmp_path / "steps.groovy"
    assert main(["history", str(project), "--image", "1", "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == history.history_script(project, "1")
