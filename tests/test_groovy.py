"""Groovy replay scripts: every job kind and model family parses with Groovy 4 and carries the run's values."""

from __future__ import annotations

import inspect
import locale
import math
import os
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from groovy_fixtures import groovy, parse_ok, reader, same_number, text_of  # noqa: F401
from shapely.geometry import LineString, MultiPoint, Point, box

import qpsam.commands.script
import qpsam.groovy
import qpsam.history
import qpsam.prompts
from qpsam.errors import ScriptError
from qpsam.geometry import Region
from qpsam.groovy import (
    AutomaskSpec,
    DetectionSpec,
    SequenceSpec,
    VideoPrompt,
    automask_script,
    boolean,
    detection_script,
    integer,
    number,
    script_for,
    sequence_script,
    string,
)
from qpsam.objects import ImagePlane, PathObject
from qpsam.sam import AutomaskParams, OutputType, Prompt

GOLDEN = Path(__file__).parent / "golden"
MOBILE_SAM = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
MICRO_SAM = "https://zenodo.org/record/8250281/files/vit_b_lm.pth?download=1"
SAM2_SMALL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt"
SAM3 = "https://huggingface.co/facebook/sam3/resolve/main/sam3.pt"


# ---------------------------------------------------------------------------------------------------------------
# Runs to replay: one per job kind and model family


def region() -> Region:
    return Region(64, 32, 640, 480, 2 / 3, ImagePlane(-1, 2, 1))  # downsample 0.6666666666666666


def rect(x1: float, y1: float, x2: float, y2: float, cls: str | None = None, plane: ImagePlane = ImagePlane(-1, 2, 1)) -> PathObject:
    return PathObject(box(x1, y1, x2, y2), path_class=cls, plane=plane)


def detection_runs() -> dict[str, DetectionSpec]:
    r = region()
    return {
        "vit_t": DetectionSpec(
            region=r, model="vit_t", weights_url=MOBILE_SAM, output=OutputType.MULTI_BEST,
            prompts=(rect(100.25, 80.5, 160.75, 140.125, "Tumor"),
                     PathObject(MultiPoint([(300.5, 200.25), (310.0, 205.0)]), plane=r.plane)),
            background=(PathObject(Point(120.0, 90.0), path_class="Ignore*", plane=r.plane),),
        ),
        "vit_b micro-sam": DetectionSpec(
            region=r, model="vit_b", weights_url=MICRO_SAM, output=OutputType.MULTI_LARGEST, set_name=False,
            prompts=(PathObject(LineString([(10.5, 20.5), (30.0, 40.0), (50.0, 45.5)]), plane=r.plane),),
        ),
        "sam2_l": DetectionSpec(
            region=r, model="sam2_l", server_url="https://sam.example.org:8443/sam/", verify_ssl=True,
            random_color=False, output=OutputType.SINGLE,
            prompts=(rect(400, 300, 420.5, 333, "Tumor: Positive"),),
        ),
        "sam3": DetectionSpec(
            region=r, model="sam3", weights_url=SAM3, text="mitotic 'figure'", reset_prompts=True,
            confidence_threshold=0.55, output=OutputType.MULTI_ALL,
            prompts=(rect(100, 100, 150.5, 160), rect(200, 220, 260, 270.25)),
            background=(rect(500, 400, 540, 430, "Ignore*"),),
        ),
        "sam3 text only": DetectionSpec(region=r, model="sam3", text="nucleus"),
    }


def automask_runs() -> dict[str, AutomaskSpec]:
    params = AutomaskParams(
        points_per_side=48, points_per_batch=16, pred_iou_thresh=0.81, stability_score_thresh=0.9125,
        stability_score_offset=0.75, box_nms_thresh=0.3, crop_n_layers=2, crop_nms_thresh=0.65,
        crop_overlap_ratio=512 / 1500, crop_n_points_downscale_factor=3, min_mask_region_area=250,
        output=OutputType.MULTI_LARGEST, include_image_edge=True,
    )
    return {
        "vit_h": AutomaskSpec(region=region(), model="vit_h", params=params, clear_current_objects=True),
        "sam2_t": AutomaskSpec(region=region(), model="sam2_t", params=AutomaskParams(), weights_url=SAM2_SMALL),
    }


def sequence_runs() -> dict[str, SequenceSpec]:
    r = Region(0, 0, 512, 443, 0.687248, ImagePlane(-1, 3, 7))
    return {
        "sam2 t boxes": SequenceSpec(
            region=r, model="sam2_s", axis="t", start=20, end=40, weights_url=SAM2_SMALL,
            prompts=(VideoPrompt(0, 31, Prompt(box=(242, 98, 318, 197))),
                     VideoPrompt(1, 35, Prompt(box=(10.5, 12.25, 40.75, 60.0)))),
            classes={1: "Nucleus"},
        ),
        "sam2 z points": SequenceSpec(
            region=r, model="sam2_bp", axis="z", start=0, end=9,
            prompts=(VideoPrompt(0, 4, Prompt(points=((100.3, 50.9), (120.0, 70.0), (10.0, 10.0)),
                                              labels=(1, 1, 0))),
                     VideoPrompt(1, 4, Prompt(box=(200, 200, 260, 250), points=((230.0, 225.0),), labels=(1,)))),
        ),
        "sam3 z": SequenceSpec(
            region=r, model="sam3", axis="z", start=2, end=6, text="cell",
            prompts=(VideoPrompt(0, 3, Prompt(box=(100.5, 50, 160, 90.25))),
                     VideoPrompt(0, 3, Prompt(box=(300, 300, 320, 330)), negative=True)),
        ),
    }


ALL_RUNS = {
    **{f"detect {k}": v for k, v in detection_runs().items()},
    **{f"automask {k}": v for k, v in automask_runs().items()},
    **{f"track {k}": v for k, v in sequence_runs().items()},
}


# ---------------------------------------------------------------------------------------------------------------
# Literals


@pytest.mark.parametrize(
    "value, text",
    [(0.934228, "0.934228"), (1, "1.0"), (1.0, "1.0"), (0.1 + 0.2, "0.30000000000000004"), (1e-05, "0.00001"),
     (1e16, "10000000000000000.0"), (-2.5, "-2.5"), (-0.0, "0.0"), (512 / 1500, "0.3413333333333333")],
)
def test_number_always_has_a_dot_and_no_exponent(value: float, text: str) -> None:
    assert number(value) == text
    assert Decimal(number(value)) == Decimal(repr(float(value)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "1,5", None])
def test_number_rejects_what_groovy_cannot_take(bad: object) -> None:
    with pytest.raises(ScriptError, match="downsample"):
        number(bad, "downsample")  # type: ignore[arg-type]


def test_integer_checks_whole_numbers_and_java_range() -> None:
    assert integer(7) == "7" and integer(7.0) == "7" and integer(-1) == "-1"
    for bad in (7.5, 2**31, True, float("nan")):
        with pytest.raises(ScriptError, match="region x"):
            integer(bad, "region x")  # type: ignore[arg-type]


TRICKY = ["it's", "back\\slash", "line\nbreak\r\ttab", "$notInterpolated ${x}", "caf\u00e9 \u00e4\u00f6\u00fc",
          "emoji \U0001F52C", "\\u0041 stays", "/* not a comment */ // nor this", "\"double\"", ""]


def test_string_literals_are_ascii_and_escape_everything() -> None:
    for value in TRICKY:
        literal = string(value)
        assert literal.isascii() and literal.startswith("'") and literal.endswith("'")
        assert "\n" not in literal and "\r" not in literal
    assert string("it's") == "'it\\'s'"
    assert string("\u00e4") == "'\\u00e4'"
    assert string("\U0001F52C") == "'\\ud83d\\udd2c'"
    assert boolean(True) == "true" and boolean(False) == "false"


@pytest.mark.groovy
def test_string_literals_mean_the_same_to_groovy(groovy) -> None:
    script = "\n".join(f"var s{i} = {string(v)}" for i, v in enumerate(TRICKY)) + "\n"
    result = parse_ok(groovy, script)
    assert [result.declared(f"s{i}") for i in range(len(TRICKY))] == TRICKY


def test_string_literals_mean_the_same_to_the_python_reader(reader) -> None:
    script = "\n".join(f"var s{i} = {string(v)}" for i, v in enumerate(TRICKY)) + "\n"
    result = reader(script)
    assert [result.declared(f"s{i}") for i in range(len(TRICKY))] == TRICKY


# ---------------------------------------------------------------------------------------------------------------
# Every job kind and model family parses with Groovy 4


@pytest.mark.groovy
@pytest.mark.parametrize("name", sorted(ALL_RUNS))
def test_script_parses_with_groovy_4(groovy, name: str) -> None:
    text = script_for(ALL_RUNS[name])
    result = parse_ok(groovy, text, name.replace(" ", "_"))
    assert result.calls, "the driver saw no calls"
    assert text.isascii()
    assert "Platform.runLater(task)" not in text  # the task runs in the script's thread, not the FX thread


def _check_region(result, spec, z=None, t=None) -> None:
    r = spec.region
    (call,) = [c for c in result.named("createInstance") if c.args and text_of(c.args[0]).endswith("getPath()")]
    downsample, x, y, w, h, cz, ct = call.args[1:]
    assert isinstance(downsample, Decimal) and same_number(downsample, r.downsample)
    assert (x, y, w, h) == (r.x, r.y, r.width, r.height)
    assert cz == (z if z is not None else r.plane.z)
    assert ct == (t if t is not None else r.plane.t)


def _builder(result, name: str):
    return result.one(name).args


def _check_connection(result, spec, ext_model: str) -> None:
    assert _builder(result, "serverURL") == (spec.server_url,)
    assert _builder(result, "verifySSL") == (spec.verify_ssl,)
    assert text_of(_builder(result, "model")[0]) == f"org.elephant.sam.entities.SAMType.{ext_model}"
    if spec.weights_url is None:
        assert result.named("checkpointUrl") == []
    else:
        assert _builder(result, "checkpointUrl") == (spec.weights_url,)
    assert _builder(result, "setName") == (spec.set_name,)
    assert _builder(result, "setRandomColor") == (spec.random_color,)


def _prompt_objects(result, variable: str) -> list[dict]:
    """The prompt objects a ``var x = [PathObjects.createAnnotationObject(...), ...]`` declaration holds."""
    decl = [c for c in result.calls if c.name == "=" and c.receiver == variable]
    assert len(decl) == 1
    start = decl[0].line
    following = [c for c in result.calls if c.name == "=" and c.line > start]
    end = following[0].line if following else 10**9
    objects = []
    for call in result.named("createAnnotationObject"):
        if not start <= call.line < end:
            continue
        inner = [c for c in result.calls if call.line <= c.line and c.line < end]
        roi = next(c for c in inner if c.name in ("createRectangleROI", "createPointsROI"))
        points = []
        if roi.name == "createPointsROI":
            nxt = [c for c in result.named("createPointsROI") if c.line > roi.line and c.line < end]
            stop = nxt[0].line if nxt else end
            points = [c.args for c in inner if c.name == "new" and c.receiver.endswith("Point2") and c.line < stop]
        plane = next(c for c in inner if c.name in ("getPlane", "getPlaneWithChannel") and c.line > roi.line)
        cls = call.args[1]
        objects.append({
            "roi": roi.name, "rect": roi.args[:4] if roi.name == "createRectangleROI" else None,
            "points": points, "plane": plane.args,
            "class": None if cls is None else next(c.args[0] for c in inner if c.name == "fromString"),
        })
    return objects


def _expected_object(obj: PathObject) -> dict:
    if obj.roi_kind == "rectangle":
        x1, y1, x2, y2 = obj.geometry.bounds
        geometry = {"rect": (x1, y1, x2 - x1, y2 - y1), "points": []}
    else:
        geometry = {"rect": None, "points": qpsam.prompts.vertices(obj.geometry)}
    return {**geometry, "plane": (obj.plane.z, obj.plane.t), "class": obj.class_name}


def _same_objects(found: list[dict], objects: tuple[PathObject, ...]) -> None:
    assert len(found) == len(objects)
    for got, obj in zip(found, objects):
        want = _expected_object(obj)
        if want["rect"] is not None:
            assert got["roi"] == "createRectangleROI"
            assert all(isinstance(a, Decimal) and same_number(a, b) for a, b in zip(got["rect"], want["rect"]))
        else:
            assert got["roi"] == "createPointsROI"
            assert len(got["points"]) == len(want["points"])
            for (gx, gy), (wx, wy) in zip(got["points"], want["points"]):
                assert same_number(gx, wx) and same_number(gy, wy)
        assert tuple(got["plane"]) == want["plane"]
        assert got["class"] == want["class"]


@pytest.mark.parametrize("name", sorted(detection_runs()))
def test_detection_values_read_back(reader, name: str) -> None:
    spec = detection_runs()[name]
    result = reader(detection_script(spec))
    _check_region(result, spec)
    _check_connection(result, spec, spec.model.upper())
    assert text_of(_builder(result, "outputType")[0]).endswith(f"SAMOutput.{spec.output.extension_name}")
    if spec.is_sam3:
        assert any(c.receiver.endswith("SAM3DetectionTask") for c in result.named("builder"))
        assert _builder(result, "textPrompt") == (spec.text or "",)
        assert _builder(result, "resetPrompts") == (spec.reset_prompts,)
        assert same_number(_builder(result, "confidenceThresh")[0], spec.confidence_threshold)
        _same_objects(_prompt_objects(result, "positiveBboxes"), spec.prompts)
        _same_objects(_prompt_objects(result, "negativeBboxes"), spec.background)
        assert result.named("addForegroundPrompts") == []
    else:
        assert any(c.receiver.endswith("tasks.SAMDetectionTask") for c in result.named("builder"))
        assert text_of(_builder(result, "addForegroundPrompts")[0]) == "foregroundObjects"
        assert text_of(_builder(result, "addBackgroundPrompts")[0]) == "backgroundObjects"
        _same_objects(_prompt_objects(result, "foregroundObjects"), spec.prompts)
        _same_objects(_prompt_objects(result, "backgroundObjects"), spec.background)
        assert result.named("textPrompt") == []


AUTOMASK_METHODS = {
    "pointsPerSide": "points_per_side", "pointsPerBatch": "points_per_batch", "predIoUThresh": "pred_iou_thresh",
    "stabilityScoreThresh": "stability_score_thresh", "stabilityScoreOffset": "stability_score_offset",
    "boxNmsThresh": "box_nms_thresh", "cropNLayers": "crop_n_layers", "cropNmsThresh": "crop_nms_thresh",
    "cropOverlapRatio": "crop_overlap_ratio", "cropNPointsDownscaleFactor": "crop_n_points_downscale_factor",
    "minMaskRegionArea": "min_mask_region_area", "includeImageEdge": "include_image_edge",
}


@pytest.mark.parametrize("name", sorted(automask_runs()))
def test_automask_values_read_back(reader, name: str) -> None:
    spec = automask_runs()[name]
    result = reader(automask_script(spec))
    _check_region(result, spec)
    _check_connection(result, spec, spec.model.upper())
    assert text_of(_builder(result, "outputType")[0]).endswith(f"SAMOutput.{spec.params.output.extension_name}")
    assert result.declared("clearCurrentObjects") is spec.clear_current_objects
    assert text_of(_builder(result, "clearCurrentObjects")[0]) == "clearCurrentObjects"
    for method, field_name in AUTOMASK_METHODS.items():
        (arg,) = _builder(result, method)
        expected = getattr(spec.params, field_name)
        if isinstance(expected, bool):
            assert arg is expected, method
        elif isinstance(expected, int):
            assert arg == expected and isinstance(arg, int), method
        else:
            assert isinstance(arg, Decimal) and same_number(arg, expected), method


def _objs(result) -> dict[int, list[str]]:
    value = result.declared("objs")
    return {k: [text_of(v) for v in vs] for k, vs in value["map"]}


@pytest.mark.parametrize("name", sorted(sequence_runs()))
def test_sequence_values_read_back(reader, name: str) -> None:
    spec = sequence_runs()[name]
    text = sequence_script(spec)
    result = reader(text)
    if spec.axis == "t":
        _check_region(result, spec, t={"var": "it"})
    else:
        _check_region(result, spec, z={"var": "it"})
    _check_connection(result, spec, spec.model.upper())
    assert result.declared("fromIndex") == spec.start and result.declared("toIndex") == spec.end
    assert text_of(_builder(result, "indexOffset")[0]) == "fromIndex"
    assert _builder(result, "endpointName") == ("sam3video" if spec.is_sam3 else "video",)
    assert text_of(_builder(result, "promptMode")[0]).endswith(f"SAMPromptMode.{spec.mode}")
    plane = spec.region.plane
    assert _builder(result, "planePosition") == ((plane.z if spec.axis == "t" else plane.t),)
    # Frames are keyed relative to the first one; every tracked object has a class.
    objs = _objs(result)
    assert sorted(objs) == sorted({p.frame - spec.start for p in spec.prompts})
    classes = result.declared("indexToPathClass")["map"]
    ids = sorted({p.obj_id for p in spec.prompts})
    assert [k for k, _ in classes] == ids
    assert [c.args[0] for c in result.named("fromString")] == [spec.class_name(i) for i in ids]
    d, r = spec.region.downsample, spec.region
    for p in spec.prompts:
        if spec.is_sam3:
            method = "addNegativeBbox" if p.negative else "addPositiveBbox"
            x1, y1, x2, y2 = p.prompt.box
            want = ((x1 - r.x) / d, (y1 - r.y) / d, (x2 - x1) / d, (y2 - y1) / d)
            assert any(all(same_number(a, b) for a, b in zip(c.args, want)) for c in result.named(method))
            assert all(c.args == (spec.text,) for c in result.named("text"))
        elif p.prompt.box is not None:
            x1, y1, x2, y2 = p.prompt.box
            want = (math.trunc((math.floor(x1) - r.x) / d), math.trunc((math.floor(y1) - r.y) / d),
                    math.floor((math.ceil(x2) - r.x) / d + 0.5), math.floor((math.ceil(y2) - r.y) / d + 0.5))
            assert want in [c.args for c in result.named("bbox")]
    # Point prompts are JTS Coordinates, which the extension's SAM2VideoPromptObject takes, not closures.
    coordinates = [c.args for c in result.calls if c.name == "new" and c.receiver.endswith("jts.geom.Coordinate")]
    points = [(pt, lab) for p in spec.prompts for pt, lab in zip(p.prompt.points, p.prompt.labels)]
    assert len(coordinates) == len(points)
    for (x, y), _label in points:
        want = (math.floor((x - r.x) / d), math.floor((y - r.y) / d))
        assert any(same_number(a, want[0]) and same_number(b, want[1]) for a, b in coordinates)
    assert len(result.named("addToForeground")) == len({p.obj_id for p in spec.prompts if 1 in p.prompt.labels})
    assert not re.search(r"\{\s*x\s*:", text)


def test_xyz_sequence_has_no_stray_brace() -> None:
    text = sequence_script(sequence_runs()["sam2 z points"])
    (line,) = [ln for ln in text.splitlines() if ln.startswith("var regionRequests")]
    assert line.count("{") == line.count("}") == 1
    assert line.rstrip().endswith("0.687248, 0, 0, 512, 443, it, 7) }")


# ---------------------------------------------------------------------------------------------------------------
# Decimal-comma locales


def _decimal_comma_locale(tmp_path_factory: pytest.TempPathFactory) -> str:
    for name in ("de_DE.UTF-8", "de_DE.utf8", "de_DE"):
        try:
            locale.setlocale(locale.LC_ALL, name)
            return name
        except locale.Error:
            continue
    localedef = shutil.which("localedef")
    if localedef is None:
        pytest.skip("no de_DE locale installed and no localedef to build one")
    folder = tmp_path_factory.mktemp("locales")
    build = subprocess.run([localedef, "-i", "de_DE", "-f", "UTF-8", str(folder / "de_DE.UTF-8")],
                           capture_output=True, text=True, check=False)
    if build.returncode not in (0, 1) or not (folder / "de_DE.UTF-8").exists():
        pytest.skip(f"localedef could not build de_DE.UTF-8: {build.stderr.strip()}")
    os.environ["LOCPATH"] = str(folder)
    locale.setlocale(locale.LC_ALL, "de_DE.UTF-8")
    return "de_DE.UTF-8"


@pytest.fixture()
def decimal_comma(tmp_path_factory: pytest.TempPathFactory):
    previous = locale.setlocale(locale.LC_ALL)
    locpath = os.environ.get("LOCPATH")
    try:
        name = _decimal_comma_locale(tmp_path_factory)
        assert locale.localeconv()["decimal_point"] == ","
        # What the extension does (String.format %f) goes wrong in this locale:
        assert locale.format_string("%f", 0.934228) == "0,934228"
        yield name
    finally:
        locale.setlocale(locale.LC_ALL, previous)
        if locpath is None:
            os.environ.pop("LOCPATH", None)
        else:
            os.environ["LOCPATH"] = locpath


def test_scripts_use_dots_under_a_decimal_comma_locale(decimal_comma: str) -> None:
    texts = {name: script_for(spec) for name, spec in ALL_RUNS.items()}
    locale.setlocale(locale.LC_ALL, "C")
    plain = {name: script_for(spec) for name, spec in ALL_RUNS.items()}
    assert texts == plain
    for text in texts.values():
        assert "0.687248" in text or "0.6666666666666666" in text
        assert not re.search(r"\d,\d{6}", text)


def test_generators_never_use_locale_formatting() -> None:
    groovy_modules = (qpsam.groovy, qpsam.groovy.literals, qpsam.groovy.specs, qpsam.groovy.scripts,
                      qpsam.groovy.templates)
    for module in (*groovy_modules, qpsam.history, qpsam.commands.script):
        source = inspect.getsource(module)
        assert "import locale" not in source and "locale." not in source
        assert "format_string" not in source
        assert not re.search(r"%[-+ 0#]*\d*(\.\d+)?[fegFEG]", source), f"printf-style float in {module.__name__}"
        assert not re.search(r":[^{}]*n\}", source), f"locale-aware 'n' format in {module.__name__}"


# ---------------------------------------------------------------------------------------------------------------
# Bad runs are refused with the parameter named


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DetectionSpec(region=Region(0.5, 0, 10, 10), model="vit_t", prompts=(rect(1, 1, 2, 2),)),
         "region x must be a whole number"),
        (lambda: DetectionSpec(region=region(), model="vit_x", prompts=(rect(1, 1, 2, 2),)), "model 'vit_x'"),
        (lambda: DetectionSpec(region=region(), model="vit_t"), "at least one foreground prompt"),
        (lambda: DetectionSpec(region=region(), model="vit_t", text="cell", prompts=(rect(1, 1, 2, 2),)),
         "text prompts need model sam3"),
        (lambda: DetectionSpec(region=region(), model="vit_t",
                               prompts=(PathObject(Point(1, 1).buffer(5), name="blob"),)), "'blob'.*polygon ROI"),
        (lambda: DetectionSpec(region=region(), model="sam3", prompts=(PathObject(Point(1, 1)),)),
         "SAM3 positive box 0"),
        (lambda: DetectionSpec(region=region(), model="sam3"), "text prompt or at least one positive box"),
        (lambda: AutomaskSpec(region=region(), model="sam3"), "automask is not available for SAM3"),
        (lambda: SequenceSpec(region=region(), model="vit_b", axis="z", start=0, end=3,
                              prompts=(VideoPrompt(0, 1, Prompt(box=(1, 1, 5, 5))),)), "SAM2 model or sam3"),
        (lambda: SequenceSpec(region=region(), model="sam2_t", axis="c", start=0, end=3,
                              prompts=(VideoPrompt(0, 1, Prompt(box=(1, 1, 5, 5))),)), "axis must be"),
        (lambda: SequenceSpec(region=region(), model="sam2_t", axis="t", start=4, end=8,
                              prompts=(VideoPrompt(0, 9, Prompt(box=(1, 1, 5, 5))),)), "t=9, outside 4..8"),
        (lambda: SequenceSpec(region=region(), model="sam2_t", axis="t", start=4, end=2,
                              prompts=(VideoPrompt(0, 3, Prompt(box=(1, 1, 5, 5))),)), "end 2 is before start 4"),
        (lambda: SequenceSpec(region=region(), model="sam3", axis="t", start=0, end=2,
                              prompts=(VideoPrompt(0, 1, Prompt(points=((1, 1),), labels=(1,))),)), "boxes only"),
        (lambda: DetectionSpec.from_prompts([Prompt(box=(1, 1, 5, 5), points=((2, 2),), labels=(1,))],
                                            region=region(), model="vit_t"), "box and foreground points"),
        (lambda: DetectionSpec.from_prompts([Prompt(points=((2, 2), (9, 9)), labels=(1, 0)),
                                             Prompt(points=((3, 3),), labels=(1,))],
                                            region=region(), model="vit_t"), "other background points"),
    ],
)
def test_bad_runs_are_refused(make, match: str) -> None:
    with pytest.raises(ScriptError, match=match):
        script_for(make())


def test_two_boxes_for_one_sam2_object_on_one_frame_are_refused() -> None:
    spec = SequenceSpec(region=region(), model="sam2_t", axis="t", start=0, end=3,
                        prompts=(VideoPrompt(0, 1, Prompt(box=(1, 1, 5, 5))), VideoPrompt(0, 1, Prompt(box=(9, 9, 12, 12)))))
    with pytest.raises(ScriptError, match="object 0 has 2 boxes"):
        sequence_script(spec)


def test_engine_prompts_become_prompt_objects(reader) -> None:
    spec = DetectionSpec.from_prompts(
        [Prompt(box=(10, 20, 30.5, 40), points=((1, 1),), labels=(0,)),
         Prompt(points=((5, 6), (7, 8), (1, 1)), labels=(1, 1, 0))],
        region=region(), model="sam2_t",
    )
    assert [o.roi_kind for o in spec.prompts] == ["rectangle", "points"]
    assert [o.class_name for o in spec.background] == ["Ignore*"]
    result = reader(detection_script(spec))
    _same_objects(_prompt_objects(result, "foregroundObjects"), spec.prompts)
    _same_objects(_prompt_objects(result, "backgroundObjects"), spec.background)


# ---------------------------------------------------------------------------------------------------------------
# Golden scripts: the seed's three examples, in qpsam's layout


def seed_detection() -> DetectionSpec:
    plane = ImagePlane(-1, 0, 0)
    return DetectionSpec(
        region=Region(0, 0, 696, 520, 0.934228), model="vit_t", weights_url=MOBILE_SAM,
        output=OutputType.MULTI_SMALLEST,
        prompts=(PathObject(box(433, 194, 454, 231), plane=plane), PathObject(box(416, 174, 439, 206), plane=plane)),
    )


def seed_automask() -> AutomaskSpec:
    params = AutomaskParams(
        points_per_side=64, points_per_batch=8, pred_iou_thresh=0.88, stability_score_thresh=0.95,
        stability_score_offset=1.0, box_nms_thresh=0.2, crop_n_layers=0, crop_nms_thresh=0.7,
        crop_overlap_ratio=0.34, crop_n_points_downscale_factor=1, min_mask_region_area=0,
        output=OutputType.MULTI_SMALLEST, include_image_edge=False,
    )
    return AutomaskSpec(region=Region(0, 0, 696, 520, 0.934228), model="vit_t", weights_url=MOBILE_SAM,
                        params=params, clear_current_objects=True)


def seed_sequence() -> SequenceSpec:
    # A rectangle from (242, 98) to (318, 197) in the image is the box (352, 142, 463, 287) of the region.
    return SequenceSpec(
        region=Region(0, 0, 512, 443, 0.687248), model="sam2_s", weights_url=SAM2_SMALL, axis="t", start=20, end=40,
        prompts=(VideoPrompt(0, 31, Prompt(box=(242, 98, 318, 197))),),
    )


SEEDS = {
    "seed_detection.groovy": (seed_detection, detection_script),
    "seed_automask.groovy": (seed_automask, automask_script),
    "seed_sequence.groovy": (seed_sequence, sequence_script),
}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_golden_scripts(name: str) -> None:
    make, generate = SEEDS[name]
    text = generate(make())
    golden = GOLDEN / name
    if os.environ.get("QPSAM_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8", newline="\n")
    assert text == golden.read_text(encoding="utf-8"), f"{name} differs from tests/golden (QPSAM_UPDATE_GOLDEN=1)"


def test_golden_detection_carries_the_seed_values(reader) -> None:
    result = reader((GOLDEN / "seed_detection.groovy").read_text(encoding="utf-8"))
    assert result.one("createInstance").args[1:] == (Decimal("0.934228"), 0, 0, 696, 520, 0, 0)
    assert [c.args[:4] for c in result.named("createRectangleROI")] == [
        (Decimal("433.0"), Decimal("194.0"), Decimal("21.0"), Decimal("37.0")),
        (Decimal("416.0"), Decimal("174.0"), Decimal("23.0"), Decimal("32.0")),
    ]
    assert text_of(_builder(result, "model")[0]).endswith("SAMType.VIT_T")
    assert text_of(_builder(result, "outputType")[0]).endswith("SAMOutput.MULTI_SMALLEST")
    assert _builder(result, "checkpointUrl") == (MOBILE_SAM,)
    assert _builder(result, "serverURL") == ("http://localhost:8000/sam/",)
    assert result.declared("backgroundObjects") == []


def test_golden_automask_carries_every_seed_parameter(reader) -> None:
    result = reader((GOLDEN / "seed_automask.groovy").read_text(encoding="utf-8"))
    values = {m: _builder(result, m)[0] for m in AUTOMASK_METHODS}
    assert values == {
        "pointsPerSide": 64, "pointsPerBatch": 8, "predIoUThresh": Decimal("0.88"),
        "stabilityScoreThresh": Decimal("0.95"), "stabilityScoreOffset": Decimal("1.0"),
        "boxNmsThresh": Decimal("0.2"), "cropNLayers": 0, "cropNmsThresh": Decimal("0.7"),
        "cropOverlapRatio": Decimal("0.34"), "cropNPointsDownscaleFactor": 1, "minMaskRegionArea": 0,
        "includeImageEdge": False,
    }
    assert result.declared("clearCurrentObjects") is True
    assert result.one("createInstance").args[1:] == (Decimal("0.934228"), 0, 0, 696, 520, 0, 0)


def test_golden_sequence_carries_the_seed_values(reader) -> None:
    result = reader((GOLDEN / "seed_sequence.groovy").read_text(encoding="utf-8"))
    assert result.declared("fromIndex") == 20 and result.declared("toIndex") == 40
    assert list(_objs(result)) == [11]
    assert result.one("bbox").args == (352, 142, 463, 287)
    assert result.one("createInstance").args[1:] == (Decimal("0.687248"), 0, 0, 512, 443, 0, {"var": "it"})
    assert [c.args for c in result.named("fromString")] == [("SAM0",)]
    assert text_of(_builder(result, "model")[0]).endswith("SAMType.SAM2_S")
    assert text_of(_builder(result, "promptMode")[0]).endswith("SAMPromptMode.XYT")
    assert _builder(result, "planePosition") == (0,)
    assert _builder(result, "checkpointUrl") == (SAM2_SMALL,)


@pytest.mark.groovy
def test_golden_scripts_parse_with_groovy_4(groovy) -> None:
    for name in SEEDS:
        parse_ok(groovy, (GOLDEN / name).read_text(encoding="utf-8"), name)


@pytest.mark.groovy
def test_the_parser_catches_the_extensions_stray_brace(groovy) -> None:
    """The check is real: the extension's XYZ form (an extra ``}``) and a doubled variable are rejected."""
    good = sequence_script(sequence_runs()["sam2 z points"])
    broken = good.replace("it, 7) }", "it, 7) }}")
    assert broken != good
    assert not groovy.parse_text(broken).ok
    doubled = good + "var task = null\n"
    result = groovy.parse_text(doubled)
    assert not result.ok and "already contains a variable" in result.message()
