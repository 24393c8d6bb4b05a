"""Issue 13.6: the standalone Groovy import scripts run in QuPath's own scripting, and land objects as qpsam does.

Every script in ``groovy/`` (the same files ship as ``qpsam/groovy_templates``), filled in as ``qpsam script
import`` / ``qpsam script project-import`` write them, runs with ``../shared/qupath/run-script.sh`` (QuPath's ``QP``
and its default imports, Groovy 4.0.26, no GUI, so no ``QPEx``) on QuPath 0.5.1, 0.6.0 and 0.7.0, on projects that
qpsam made and on copies of QuPath-written sample projects. QuPath's reader then reads the saved project, and every
object must be where ``qpsam import`` puts the same file in a copy of the same project: the same ids, types, classes
(and colours), names, planes, ROI classes, geometry, parents and order among siblings; ``same-id`` is compared with
``qpsam import --replace``, ``all`` with ``--clear`` and ``none`` with a plain import.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable

import pytest
import shapely
from click.testing import CliRunner
from conftest import REPO, SAMPLES, need_qupath
from qupath_judge import VERSIONS, groovy_jar, qupath_home, unavailable_reason
from shapely.geometry import MultiPoint, Point, Polygon, box

from qpsam import geojson
from qpsam.cli import cli
from qpsam.groovy import template_path, template_text
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject
from qpsam.project import open_project

pytestmark = [pytest.mark.qupath, pytest.mark.groovy]

RUN_SCRIPT = Path(os.environ.get("QPSAM_SHARED", REPO.parent / "shared")) / "qupath" / "run-script.sh"
NUCLEI = REPO / "examples" / "data" / "nuclei.tif"


@functools.cache
def _stack() -> Path:
    """The nuclei image as an ImageJ hyperstack of 2 z-slices and 3 time points, so that objects on other planes
    are ones the image has (qpsam refuses to write objects on planes an image lacks)."""
    import numpy as np
    import tifffile

    plane = tifffile.imread(NUCLEI)
    path = Path(tempfile.mkdtemp(prefix="qpsam-groovy-")) / "nuclei_zt.tif"
    tifffile.imwrite(path, np.stack([np.stack([plane, plane[::-1]])] * 3), imagej=True, metadata={"axes": "TZYX"})
    return path


def _id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "qpsam-groovy-test/" + name)


@pytest.fixture(scope="session")
def run_script():
    """``run_script(version, project_folder, image, script, *args)``: QuPath's headless script run, saved."""
    jar = groovy_jar()
    reasons = [r for v in VERSIONS if (r := unavailable_reason(v))]
    if jar is None:
        reasons.append("no Groovy 4.0.26 jar (QPSAM_GROOVY_JAR, or scripts/get-groovy.sh)")
    if not RUN_SCRIPT.is_file():
        reasons.append(f"no {RUN_SCRIPT}")
    need_qupath("; ".join(reasons) or None)

    def run(version: str, project: Path, image: str | int, script: Path, *args: str, status: int = 0) -> str:
        env = dict(os.environ, GROOVY_JAR=str(jar), QUPATH_JAVA_OPTS="-Xmx512m -XX:+UseSerialGC")
        env.pop("PAQUO_QUPATH_DIR", None)
        done = subprocess.run(["bash", str(RUN_SCRIPT), str(qupath_home()), version, str(project / "project.qpproj"),
                               str(image), str(script), *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == status, \
            f"QuPath {version} script exited {done.returncode}, not {status}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    return run


def _cli(*args: Any) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


# ------------------------------------------------------------------------------------------------------------
# What QuPath's reader finds, in a form two projects can be compared in


def _flatten(objects: Iterable[dict[str, Any]], parent: str | None = None) -> dict[str, dict[str, Any]]:
    """Every object by id: its fields as QuPath read them, with its parent's id and its place among siblings."""
    out: dict[str, dict[str, Any]] = {}
    for index, obj in enumerate(objects):
        fields = {k: v for k, v in obj.items() if k != "children"}
        fields.update(parent=parent, index=index)
        out[obj["id"]] = fields
        out.update(_flatten(obj["children"], obj["id"]))
    return out


def _entry_objects(judge: Any, project: Path, entry: int = 1) -> dict[str, dict[str, Any]]:
    loaded = judge.project(project / "project.qpproj")
    (found,) = [e for e in loaded["entries"] if int(e["id"]) == entry]
    return _flatten(found["objects"])


def _same_placement(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]],
                    ignore: tuple[str, ...] = ()) -> list[str]:
    problems = []
    if set(ours) != set(theirs):
        problems.append(f"ids: only after qpsam import {sorted(set(ours) - set(theirs))[:5]}, "
                        f"only after the script {sorted(set(theirs) - set(ours))[:5]}")
    for key in sorted(set(ours) & set(theirs)):
        for field, value in ours[key].items():
            if field in ignore:
                continue
            if field in ("wkb", "nucleus_wkb", "bounds") and field in theirs[key]:
                # QuPath 0.6+'s GeoJSON import may start a ring elsewhere or turn it: the same shape is enough.
                if not _same_shape(value, theirs[key][field]):
                    problems.append(f"{key} ({ours[key]['name']}): {field} differs")
            elif theirs[key].get(field) != value:
                problems.append(f"{key} ({ours[key]['name']}): {field} is {theirs[key].get(field)!r} after the "
                                f"script, {value!r} after qpsam import")
    return problems


def _same_shape(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return all(abs(p - q) <= 1e-4 for p, q in zip(a, b))
    ga, gb = shapely.from_wkb(bytes.fromhex(a)), shapely.from_wkb(bytes.fromhex(b))
    return (len(shapely.get_coordinates(ga)) == len(shapely.get_coordinates(gb))
            and shapely.hausdorff_distance(ga, gb) <= 1e-4)


# ------------------------------------------------------------------------------------------------------------
# The projects and the file


TUMOR = PathClass("Tumor", (200, 0, 0))
POSITIVE = PathClass("Tumor: Positive", (250, 62, 62))


def _existing() -> list[PathObject]:
    """What the image holds before the import: an annotation holding an older version of one imported object
    (which has a child of its own), and an object the import does not touch."""
    old = PathObject(box(60, 60, 90, 90), name="replaced", path_class=PathClass("Stroma", (0, 150, 0)),
                     id=_id("replaced"),
                     children=(PathObject(Point(70, 70), ObjectType.DETECTION, name="child of the old one",
                                          id=_id("old child")),))
    return [PathObject(box(0, 0, 200, 200), name="region", path_class=TUMOR, id=_id("region"),
                       children=(old, PathObject(box(120, 120, 130, 130), name="untouched", id=_id("untouched"))))]


def _imported() -> list[PathObject]:
    """What qpsam writes for QuPath: nested objects, a cell with its nucleus, classes, planes, points, a line."""
    cell = PathObject(Polygon([(10, 10), (30, 10), (30, 30), (10, 30.5)]), ObjectType.CELL, POSITIVE,
                      nucleus=Polygon([(15, 15), (25, 15), (25, 25)]), id=_id("cell"), name="cell",
                      measurements={"Nucleus: Area": 50.25})
    return [
        PathObject(box(5, 5, 50, 50), name="parent", path_class=TUMOR, id=_id("parent"),
                   children=(cell, PathObject(box(40, 40, 45, 45), ObjectType.TILE, name="tile", id=_id("tile")))),
        PathObject(Polygon([(60.5, 60), (95.01, 62), (80, 95.03)]), name="replaced", path_class=POSITIVE,
                   id=_id("replaced")),
        PathObject(Polygon([(300, 300), (340, 300), (320, 330.01)]), ObjectType.DETECTION, PathClass("Debris", (90, 60, 20)),
                   name="on z 1, t 2", plane=ImagePlane(c=-1, z=1, t=2), id=_id("plane")),
        PathObject(MultiPoint([(1, 1), (2, 2.5)]), name="points", path_class=PathClass("Ignore*", (180, 180, 180)),
                   id=_id("points")),
    ]


def _project(folder: Path, version: str, objects: list[PathObject], images: int = 1) -> Path:
    with open_project(folder, "x", backend="native", version=version) as project:
        for k in range(images):  # the file name as the entry name: QuPath 0.6+ renames (and loads) otherwise
            project.add_image(_stack(), allow_duplicates=k > 0)
    if objects:
        with open_project(folder, "r+", backend="native") as project:
            project.images[0].add_objects(objects)
    if version == "0.5.1":
        _open_with_imagej(folder)
    return folder


def _open_with_imagej(folder: Path) -> None:
    """QuPath 0.5.1 builds an entry's image server before a script runs, and Bio-Formats (the server qpsam names
    for TIFFs) is not in the harness: name QuPath's ImageJ server instead, which opens this TIFF."""
    def switch(builder: dict[str, Any]) -> None:
        builder.update(providerClassName="qupath.imagej.images.servers.ImageJServerBuilder", args=[])

    project_file = folder / "project.qpproj"
    data = json.loads(project_file.read_text())
    for entry in data["images"]:
        switch(entry["serverBuilder"])
        server = folder / "data" / str(entry["entryID"]) / "server.json"
        builder = json.loads(server.read_text())
        switch(builder)
        server.write_text(json.dumps(builder))
    project_file.write_text(json.dumps(data))


def _copies(base: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        target = base.parent / name
        shutil.copytree(base, target)
        out.append(target)
    return out


# ------------------------------------------------------------------------------------------------------------
# The tests


MODES = {"same-id": ["--replace"], "all": ["--clear"], "none": []}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", list(MODES))
def test_import_script_lands_objects_as_qpsam_import(version: str, mode: str, run_script, qupath_judges,
                                                     qupath_check, tmp_path: Path) -> None:
    existing = _existing()
    if mode == "none":  # a plain import refuses ids already in the image: start from objects the file lacks
        existing = [existing[0].replace(children=existing[0].children[1:])]
    base = _project(tmp_path / "base", version, existing)
    file = geojson.write(tmp_path / "objects.geojson", _imported())
    by_qpsam, by_script = _copies(base, "by_qpsam", "by_script")
    _cli("import", by_qpsam, file, "--image", "1", "--backend", "native", *MODES[mode])
    script = tmp_path / "import.groovy"
    _cli("script", "import", file, "--remove", mode, "-o", script)

    out = run_script(version, by_script, 1, script)
    assert "qpsam: imported" in out
    judge = qupath_judges[version]
    expected = _entry_objects(judge, by_qpsam)
    problems = _same_placement(expected, _entry_objects(judge, by_script))
    assert not problems, f"QuPath {version}, {mode}:\n" + "\n".join(problems)
    if mode != "none":  # running it again changes nothing: same-id replaces, all clears first
        run_script(version, by_script, 1, script)
        problems = _same_placement(expected, _entry_objects(judge, by_script))
        assert not problems, f"QuPath {version}, {mode}, second run:\n" + "\n".join(problems)
    # qpsam reads what QuPath saved as QuPath does.
    qupath_check(by_script)


@pytest.mark.parametrize("version", VERSIONS)
def test_project_import_script_imports_each_entry(version: str, run_script, qupath_judges, tmp_path: Path) -> None:
    base = _project(tmp_path / "base", version, _existing(), images=2)
    by_qpsam, by_script = _copies(base, "by_qpsam", "by_script")
    folder = by_script / "qpsam" / "geojson"
    folder.mkdir(parents=True)
    file = geojson.write(folder / "1.geojson", _imported())
    _cli("import", by_qpsam, file, "--image", "1", "--backend", "native", "--replace")
    script = tmp_path / "project_import.groovy"
    _cli("script", "project-import", "-o", script)
    assert script.read_text() == template_text("import_geojson_project.groovy")  # the shipped file, as it is

    assert "imported" in run_script(version, by_script, 1, script)
    assert "skipped" in run_script(version, by_script, 2, script)  # entry 2 has no file
    judge = qupath_judges[version]
    for entry in (1, 2):
        problems = _same_placement(_entry_objects(judge, by_qpsam, entry), _entry_objects(judge, by_script, entry))
        assert not problems, f"QuPath {version}, entry {entry}:\n" + "\n".join(problems)


def test_import_script_as_shipped_names_what_to_fill_in(run_script, qupath_judges, tmp_path: Path) -> None:
    """``groovy/import_geojson.groovy`` unedited has no file to import: QuPath stops with the script's message and
    the image is left as it was."""
    project = _project(tmp_path / "base", "0.7.0", _existing())
    before = _entry_objects(qupath_judges["0.7.0"], project)
    out = run_script("0.7.0", project, 1, template_path("import_geojson.groovy"), status=1)
    assert "Set geojsonFile at the top of the script" in out
    assert _entry_objects(qupath_judges["0.7.0"], project) == before


@pytest.mark.parametrize("version", VERSIONS)
def test_nest_objects_puts_them_under_what_contains_them(version: str, run_script, qupath_judges,
                                                         tmp_path: Path) -> None:
    project = _project(tmp_path / "base", version, [PathObject(box(0, 0, 400, 400), name="outer", id=_id("outer"))])
    inner = [PathObject(box(10, 10, 20, 20), name="inner", id=_id("inner"))]
    file = geojson.write(tmp_path / "objects.geojson", inner)
    script = tmp_path / "import.groovy"
    _cli("script", "import", file, "--nest", "-o", script)
    run_script(version, project, 1, script)
    found = _entry_objects(qupath_judges[version], project)
    assert found[str(_id("inner"))]["parent"] == str(_id("outer"))


SAMPLE_RUNS = [("qupath-0.6.0-lmd", 1, "0.6.0"), ("qupath-0.6.0-lmd", 1, "0.7.0"),
               ("qupath-0.4.0-foci", 242, "0.6.0")]


@pytest.mark.parametrize(("sample", "entry", "version"), SAMPLE_RUNS)
def test_import_script_on_sample_projects(sample: str, entry: int, version: str, run_script, qupath_judges,
                                          tmp_path: Path) -> None:
    """QuPath-written projects (Bio-Formats images, which 0.5.1 cannot open: not run there). Half of the file
    replaces objects the image has (new class and name), half is new."""
    base = tmp_path / "base"
    shutil.copytree(SAMPLES / sample, base)
    with open_project(base, "r", backend="native") as project:
        have = [o for o in project.entry(entry).objects if o.object_type is ObjectType.ANNOTATION][:3]
    changed = [o.replace(path_class=POSITIVE, name=f"changed {k}", children=()) for k, o in enumerate(have)]
    # The sample images have one z-slice and time point: objects on other planes would be refused.
    new = [o for o in _imported()[2:] if o.plane.z == 0 and o.plane.t == 0]
    file = geojson.write(tmp_path / "objects.geojson", changed + new)
    by_qpsam, by_script = _copies(base, "by_qpsam", "by_script")
    _cli("import", by_qpsam, file, "--image", entry, "--backend", "native", "--replace")
    script = tmp_path / "import.groovy"
    _cli("script", "import", file, "-o", script)
    run_script(version, by_script, entry, script)
    judge = qupath_judges[version]
    # qpsam writes a 0.4 project's polygons as QuPath 0.4/0.5 do, without the closing vertex QuPath 0.6+ keeps.
    ignore = ("points",) if sample.startswith("qupath-0.4") else ()
    problems = _same_placement(_entry_objects(judge, by_qpsam, entry), _entry_objects(judge, by_script, entry),
                               ignore)
    assert not problems, f"QuPath {version}, {sample} entry {entry}:\n" + "\n".join(problems[:30])
