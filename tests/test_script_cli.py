"""``qpsam script ...`` and the standalone import scripts kept in groovy/."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from groovy_fixtures import groovy, parse_ok, reader, same_number, text_of  # noqa: F401

from qpsam.cli import main
from qpsam.errors import ScriptError
from qpsam.groovy import TEMPLATES, fill_template, import_script, project_import_script, template_path, template_text

ROOT = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_script_detect_prints_the_run(capsys, reader) -> None:
    code, out, _ = run(
        capsys, "script", "detect", "--model", "sam2_s", "--weights-url", "https://w.example/s.pt",
        "--region", "100,50,800,600", "--downsample", "2.5", "--z", "3", "--t", "1",
        "--box", "120,60,180.5,130", "--box", "300,300,340,360", "--point", "500,400", "--point", "510.25,420",
        "--bg-point", "130,70", "--class", "Nucleus", "--output", "multi-best", "--names",
    )
    assert code == 0
    result = reader(out)
    assert result.one("setName").args == (True,) and result.one("setRandomColor").args == (False,)
    assert result.one("createInstance").args[1:] == (Decimal("2.5"), 100, 50, 800, 600, 3, 1)
    assert [c.args[:4] for c in result.named("createRectangleROI")] == [
        (Decimal("120.0"), Decimal("60.0"), Decimal("60.5"), Decimal("70.0")),
        (Decimal("300.0"), Decimal("300.0"), Decimal("40.0"), Decimal("60.0")),
    ]
    points = [c.args for c in result.calls if c.name == "new" and c.receiver.endswith("Point2")]
    assert points == [(Decimal("500.0"), Decimal("400.0")), (Decimal("510.25"), Decimal("420.0")),
                      (Decimal("130.0"), Decimal("70.0"))]
    assert [c.args for c in result.named("getPlane")] == [(3, 1)] * 4
    assert [c.args[0] for c in result.named("fromString")] == ["Nucleus"] * 3 + ["Ignore*"]
    assert text_of(result.one("model").args[0]).endswith("SAMType.SAM2_S")
    assert text_of(result.one("outputType").args[0]).endswith("SAMOutput.MULTI_BEST_QUALITY")
    assert result.one("checkpointUrl").args == ("https://w.example/s.pt",)


def test_script_detect_sam3(capsys, reader) -> None:
    code, out, _ = run(capsys, "script", "detect", "--model", "sam3", "--region", "0,0,100,100", "--text", "cell",
                       "--box", "1,2,30,40", "--neg-box", "50,50,60,60", "--confidence", "0.25", "--reset-prompts",
                       "--weights", "https://w.example/sam3.pt", "--random-colors")
    assert code == 0
    result = reader(out)
    assert result.one("checkpointUrl").args == ("https://w.example/sam3.pt",)
    assert result.one("setName").args == (False,) and result.one("setRandomColor").args == (True,)
    assert result.one("textPrompt").args == ("cell",)
    assert same_number(result.one("confidenceThresh").args[0], 0.25)
    assert result.one("resetPrompts").args == (True,)
    assert len(result.named("createRectangleROI")) == 2


def test_script_automask_writes_every_parameter(capsys, reader) -> None:
    code, out, _ = run(
        capsys, "script", "automask", "--model", "vit_h", "--region", "0,0,512,512",
        "--points-per-side", "20", "--points-per-batch", "10", "--pred-iou-thresh", "0.7",
        "--stability-score-thresh", "0.8", "--stability-score-offset", "0.9", "--box-nms-thresh", "0.6",
        "--crop-n-layers", "1", "--crop-nms-thresh", "0.5", "--crop-overlap-ratio", "0.25",
        "--crop-n-points-downscale-factor", "2", "--min-mask-region-area", "100", "--include-image-edge",
        "--output", "multi-all", "--clear-current-objects",
    )
    assert code == 0
    result = reader(out)
    got = {c.name: c.args[0] for c in result.calls if c.name in (
        "pointsPerSide", "pointsPerBatch", "predIoUThresh", "stabilityScoreThresh", "stabilityScoreOffset",
        "boxNmsThresh", "cropNLayers", "cropNmsThresh", "cropOverlapRatio", "cropNPointsDownscaleFactor",
        "minMaskRegionArea", "includeImageEdge")}
    assert got == {
        "pointsPerSide": 20, "pointsPerBatch": 10, "predIoUThresh": Decimal("0.7"),
        "stabilityScoreThresh": Decimal("0.8"), "stabilityScoreOffset": Decimal("0.9"),
        "boxNmsThresh": Decimal("0.6"), "cropNLayers": 1, "cropNmsThresh": Decimal("0.5"),
        "cropOverlapRatio": Decimal("0.25"), "cropNPointsDownscaleFactor": 2, "minMaskRegionArea": 100,
        "includeImageEdge": True,
    }
    assert result.declared("clearCurrentObjects") is True
    assert text_of(result.one("outputType").args[0]).endswith("SAMOutput.MULTI_ALL")


def test_script_track_points_and_boxes(capsys, reader) -> None:
    code, out, _ = run(
        capsys, "script", "track", "--model", "sam2_t", "--axis", "z", "--from", "5", "--to", "15",
        "--region", "0,0,400,300", "--downsample", "2", "--t", "4",
        "--box", "30,40,80,100", "--point", "9:100,60", "--bg-point", "9:10,10",
    )
    assert code == 0
    result = reader(out)
    assert result.declared("fromIndex") == 5 and result.declared("toIndex") == 15
    assert [k for k, _ in result.declared("objs")["map"]] == [0, 4]
    assert result.one("bbox").args == (15, 20, 40, 50)
    coordinates = [c.args for c in result.calls if c.name == "new" and c.receiver.endswith("Coordinate")]
    assert coordinates == [(Decimal("50.0"), Decimal("30.0")), (Decimal("5.0"), Decimal("5.0"))]
    assert result.one("createInstance").args[1:] == (Decimal("2.0"), 0, 0, 400, 300, {"var": "it"}, 4)
    assert result.one("planePosition").args == (4,)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["script", "detect", "--region", "0,0,10", "--box", "1,1,2,2"], 2, "--region needs 4"),
        (["script", "detect", "--region", "0,0,10,x", "--box", "1,1,2,2"], 2, "--region needs numbers"),
        (["script", "detect", "--region", "0,0,10.5,10", "--box", "1,1,2,2"], 1, "region width must be a whole"),
        (["script", "detect", "--region", "0,0,10,10", "--model", "sam3", "--point", "1,1"], 2, "not points"),
        (["script", "detect", "--region", "0,0,10,10"], 1, "at least one foreground prompt"),
        (["script", "track", "--region", "0,0,10,10", "--axis", "t", "--from", "0", "--to", "3",
          "--box", "x:1,1,2,2"], 2, "frame before ':' must be an integer"),
        (["script", "track", "--region", "0,0,10,10", "--axis", "t", "--from", "0", "--to", "3",
          "--box", "7:1,1,2,2", "--model", "sam2_t"], 1, "t=7, outside 0..3"),
        (["script", "automask", "--region", "0,0,10,10", "--pred-iou-thresh", "1.5"], 1, "pred_iou_thresh"),
    ],
)
def test_script_errors_name_the_parameter(capsys, args: list[str], code: int, message: str) -> None:
    got, out, err = run(capsys, *args)
    assert got == code
    assert message in err and out == ""


def test_script_out_file_is_written_whole(capsys, tmp_path: Path) -> None:
    target = tmp_path / "run.groovy"
    code, out, err = run(capsys, "script", "detect", "--region", "0,0,10,10", "--box", "1,1,2,2", "-o", str(target))
    assert code == 0 and out == "" and "wrote" in err
    assert target.read_text(encoding="utf-8").startswith("// qpsam detection")
    assert [p.name for p in tmp_path.iterdir()] == ["run.groovy"]


# ---------------------------------------------------------------------------------------------------------------
# Standalone scripts in groovy/


def test_templates_are_the_files_in_groovy_folder() -> None:
    for name in TEMPLATES:
        assert template_text(name) == (ROOT / "groovy" / name).read_text(encoding="utf-8")
        assert template_path(name).resolve() == (ROOT / "groovy" / name).resolve()
    assert sorted(p.name for p in (ROOT / "groovy").glob("*.groovy")) == sorted(TEMPLATES)


@pytest.mark.groovy
@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_parse_as_they_are(groovy, name: str) -> None:
    parse_ok(groovy, template_text(name), name)


def test_import_script_fills_in_the_marked_values(reader) -> None:
    text = import_script(Path("/data/runs/it's here/objects.geojson"), remove="all", nest=True)
    result = reader(text)
    assert result.declared("geojsonFile") == "/data/runs/it's here/objects.geojson"
    assert result.declared("removeBeforeImport") == "all"
    assert result.declared("nestObjects") is True
    assert result.one("readObjects") and result.one("addObjects")
    # Only the marked lines change.
    changed = [a for a, b in zip(template_text("import_geojson.groovy").splitlines(), text.splitlines()) if a != b]
    assert len(changed) == 3 and all("// FILL IN:" in line for line in changed)


def test_project_import_script_fills_in_the_marked_values(reader) -> None:
    text = project_import_script("exports/geojson", file_name="{name}-objects.geojson", remove="none")
    result = reader(text)
    assert result.declared("geojsonFolder") == "exports/geojson"
    assert result.declared("fileNamePattern") == "{name}-objects.geojson"
    assert result.declared("removeBeforeImport") == "none"
    assert result.declared("nestObjects") is False
    assert any(c.name == "getProjectEntry" for c in result.calls)


def test_template_errors() -> None:
    with pytest.raises(ScriptError, match="no fill-in value named colour"):
        fill_template("import_geojson.groovy", colour="red")
    with pytest.raises(ScriptError, match="no Groovy template 'x.groovy'"):
        template_text("x.groovy")
    with pytest.raises(ScriptError, match="remove must be one of"):
        import_script("a.geojson", remove="some")
    with pytest.raises(ScriptError, match=r"must contain \{id\} or \{name\}"):
        project_import_script(file_name="objects.geojson")


def test_cli_import_scripts(capsys, reader) -> None:
    code, out, _ = run(capsys, "script", "import", "cells.geojson", "--remove", "none")
    assert code == 0 and reader(out).declared("geojsonFile") == "cells.geojson"
    code, out, _ = run(capsys, "script", "project-import", "--folder", "/abs/geo", "--file-name", "{id}.json")
    assert code == 0
    result = reader(out)
    assert result.declared("geojsonFolder") == "/abs/geo" and result.declared("fileNamePattern") == "{id}.json"


def test_write_script_names_a_missing_folder(tmp_path: Path) -> None:
    from qpsam.groovy import write_script

    with pytest.raises(ScriptError, match="no folder .*missing"):
        write_script(tmp_path / "missing" / "a.groovy", "println 1\n")
    target = write_script(tmp_path / "a.groovy", "println 'caf\\u00e9'\n")
    assert target.read_bytes() == b"println 'caf\\u00e9'\n"
