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
from test_jobs_project import NUCLEUS, make_project, objects_of

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
    geojson.write(new, [PathObject(box(40, 40, 70, 70), path_class=NUCLEUS)])
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
        entry.add_objects([PathObject(box(100, 100, 120, 125), path_class=NUCLEUS)])
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


# ------------------------------------------------------------------------------------------------ item 2


def _one_plane_stack(folder: Path, nuclei, axes: str, lit: int, n: int = 5, size: int = 160) -> tuple[Path, np.ndarray]:
    """A z-stack or time series whose plane ``lit`` is the top left nuclei crop and the others the bottom right one
    (dark planes would change the display range): objects that miss the top left nuclei come from a wrong plane."""
    image, labels = nuclei
    planes = np.stack([image[-size:, -size:]] * n)
    planes[lit] = image[:size, :size]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stack-{axes[0].lower()}.ome.tif"
    tifffile.imwrite(path, planes, ome=True, metadata={"axes": axes})
    project = folder / "project"
    assert main(["new-project", str(project), str(path)]) == 0
    return project, labels[:size, :size]


def _matched(objects, labels) -> int:
    from qpsam.geometry import mask_to_geometry

    truths = [mask_to_geometry(labels == v) for v in np.unique(labels)[1:]]
    return sum(any(o.geometry.intersection(t).area / o.geometry.union(t).area > 0.5 for t in truths) for o in objects)


AUTOMASK_ARGS = [*ENGINE_ARGS, "--points-per-side", "6", "--class", "Auto"]


def test_automask_uses_the_plane_of_the_region_annotation(tmp_path, nuclei, capsys, qupath_check) -> None:
    project, labels = _one_plane_stack(tmp_path, nuclei, "ZYX", lit=3)
    tissue = PathObject(box(4, 4, 156, 156), path_class=TISSUE, plane=ImagePlane(z=3))
    add_objects(project, [tissue])
    groovy = tmp_path / "automask.groovy"
    assert main(["automask", str(project), *AUTOMASK_ARGS, "--region", "annotation:Tissue",
                 "--groovy", str(groovy)]) == 0
    results = [o for o in objects_of(project)["stack-z.ome.tif"] if o.class_name == "Auto"]
    assert results and {o.plane for o in results} == {ImagePlane(z=3)}
    assert _matched(results, labels) >= len(results) // 2  # the lit plane's nuclei, not the dark z=0
    assert ", 4, 4, 152, 152, 3, 0)" in groovy.read_text()  # the script asks QuPath for z=3 too
    qupath_check(project)


def test_automask_and_detect_on_the_plane_asked_for_in_a_time_series(tmp_path, nuclei, capsys,
                                                                      qupath_check) -> None:
    project, labels = _one_plane_stack(tmp_path, nuclei, "TYX", lit=2, n=3)
    groovy = tmp_path / "automask.groovy"
    assert main(["automask", str(project), *AUTOMASK_ARGS, "--t", "2", "--groovy", str(groovy)]) == 0
    results = [o for o in objects_of(project)["stack-t.ome.tif"] if o.class_name == "Auto"]
    assert results and {o.plane for o in results} == {ImagePlane(t=2)}
    assert _matched(results, labels) >= len(results) // 2
    assert ", 0, 0, 160, 160, 0, 2)" in groovy.read_text()

    # prompts on t=2 give objects on t=2, from t=2's pixels, and a script that reads t=2
    from qpsam.geometry import mask_to_geometry

    truth = mask_to_geometry(labels == np.unique(labels)[5])
    add_objects(project, [PathObject(box(*truth.bounds), path_class=NUCLEUS, plane=ImagePlane(t=2))])
    groovy = tmp_path / "detect.groovy"
    assert main(["detect", str(project), *ENGINE_ARGS, "--prompts", "class:Nucleus", "--groovy", str(groovy)]) == 0
    (found,) = [o for o in objects_of(project)["stack-t.ome.tif"] if o.class_name == "Nucleus"]
    assert found.plane == ImagePlane(t=2) and found.geometry.intersection(truth).area / found.geometry.union(truth).area > 0.7
    assert "ImagePlane.getPlane(0, 2)" in groovy.read_text() and ", 0, 2)" in groovy.read_text()
    qupath_check(project)


# ------------------------------------------------------------------------------------------------ item 4


def test_automask_clips_to_the_region_annotation_unless_told_not_to(tmp_path, nuclei, capsys, qupath_check) -> None:
    from shapely.geometry import Polygon

    project = make_project(tmp_path, nuclei, n_prompts=0)
    # an octagon whose outline crosses many nuclei; whole-pixel vertices and 45-degree sides cut pixel outlines at
    # whole pixels (QuPath 0.6+ reads arbitrary fractions back a few thousandths of a pixel apart)
    tissue = Polygon([(56, 36), (136, 36), (156, 56), (156, 136), (136, 156), (56, 156), (36, 136), (36, 56)])
    add_objects(project, [PathObject(tissue, path_class=TISSUE)])
    args = ["automask", str(project), *ENGINE_ARGS, "--points-per-side", "8", "--pred-iou-thresh", "0.8",
            "--stability-score-thresh", "0.85", "--region", "annotation:Tissue"]
    assert main([*args, "--class", "Clipped"]) == 0
    assert main([*args, "--class", "Whole", "--no-clip"]) == 0
    objects = objects_of(project)["crop0.tif"]
    clipped = [o.geometry for o in objects if o.class_name == "Clipped"]
    whole = [o.geometry for o in objects if o.class_name == "Whole"]
    assert len(clipped) == len(whole) > 3
    outline = tissue.buffer(1e-6)
    assert any(not outline.contains(g) for g in whole)  # what the defect left: objects past the annotation
    assert all(outline.contains(g) for g in clipped)
    inside = {g.wkt for g in whole if outline.contains(g)}
    assert inside and inside <= {g.wkt for g in clipped}  # objects that lie inside are kept whole
    for g in whole:
        if g.wkt not in inside:  # the others are the same objects, cut at the outline
            assert any(abs(c.symmetric_difference(g.intersection(tissue)).area) < 1.0 for c in clipped)
    qupath_check(project)


# ------------------------------------------------------------------------------------------------ item 3

DISCS = [(24, 24), (64, 64), (104, 104), (144, 144), (176, 176), (24, 104), (104, 24), (64, 144), (144, 64),
         (24, 176), (176, 24), (104, 176)]


_UNTILED: dict[str, list] = {}


@pytest.mark.parametrize("tile_size,overlap", [(128, 48), (96, 40)])
def test_tiled_automask_gives_the_untiled_objects_with_none_cut_at_seams(mobile_sam, tile_size, overlap) -> None:
    from shapely.geometry import Point

    from qpsam.jobs import ArraySource
    from qpsam.jobs.automask import AutomaskOptions, automask_region, plan_tiles
    from qpsam.sam import AutomaskParams

    yy, xx = np.mgrid[:192, :192]
    image = np.full((192, 192), 20, np.uint8)
    for cy, cx in DISCS:  # discs on and across the tile sides (diameter 24, less than the overlaps)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 12**2] = 230
    source = ArraySource(image, "discs")
    params = AutomaskParams(points_per_side=6)
    if "discs" not in _UNTILED:  # one untiled run for every tiling
        _UNTILED["discs"] = automask_region(mobile_sam, source, options=AutomaskOptions(params, tile_size=256,
                                                                                        overlap=0))
    untiled = _UNTILED["discs"]
    tiled = automask_region(mobile_sam, source, options=AutomaskOptions(params, tile_size=tile_size, overlap=overlap))
    assert len(plan_tiles((0, 0, 192, 192), tile_size, overlap)) >= 4

    for i, a in enumerate(tiled):  # no two objects overlap
        for b in tiled[i + 1:]:
            assert a.geometry.intersection(b.geometry).area < 1.0
    discs = [Point(cx, cy).buffer(12) for cy, cx in DISCS]

    def disc_iou(g) -> float:
        return max(g.intersection(d).area / g.union(d).area for d in discs)

    # every small object is a whole disc: none is a piece cut along a seam (a cut disc loses a quarter or more)
    small_tiled = [o.geometry for o in tiled if o.geometry.area < 2000]
    for g in small_tiled:
        assert disc_iou(g) > 0.85, f"a piece, not a whole disc: {g.bounds}"
    found = [o.geometry for o in untiled if o.geometry.area < 2000 and disc_iou(o.geometry) > 0.85]
    assert len(found) >= 8
    for g in found:  # the untiled run's objects, found again
        best = max(small_tiled, key=lambda t: t.intersection(g).area)
        assert best.intersection(g).area / best.union(g).area >= 0.9, f"untiled object at {g.bounds} not matched"


def test_merge_keeps_the_whole_mask_of_the_tile_core_and_no_seam_pieces() -> None:
    """The seam case without a model: tiles [0, 256] and [192, 448] of a 448 x 256 area, seam pieces at x = 192."""
    from shapely.geometry import Point

    from qpsam.jobs.automask import Piece, merge_pieces, plan_tiles, tile_cores

    tiles = plan_tiles((0, 0, 448, 256), 256, 64)
    cores = tile_cores(tiles, (0, 0, 448, 256))
    assert [t.bounds[0] for t in tiles] == [0, 192] and [c[0] for c in cores] == [0, 224]
    assert [c[2] for c in cores] == [224, 448]  # the cores meet halfway into the overlap
    cell = Point(205, 100).buffer(10)  # whole in both tiles, centred in the first tile's core
    seen_a, seen_b = cell, cell.buffer(0.6)
    seam_piece = Point(195, 200).buffer(30).intersection(box(192, 0, 448, 256))  # cut, nothing whole covers it
    blob = Point(195, 100).buffer(40).intersection(box(192, 0, 448, 256))  # a seam piece over the cell
    pieces = [Piece(seen_a, 0.90, False, True), Piece(seen_b, 0.95, False, False),
              Piece(blob, 0.99, True, True), Piece(seam_piece, 0.97, True, True)]
    merged = merge_pieces(pieces)
    assert merged[0].geometry.equals(seen_a)  # the core's own view wins over a better-scored duplicate
    for i, a in enumerate(merged):
        for b in merged[i + 1:]:
            assert a.geometry.intersection(b.geometry).area < 1e-6


# ------------------------------------------------------------------------------------------------ item 1


@pytest.fixture
def weights_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "qpsam-home"
    monkeypatch.setenv("QPSAM_HOME", str(home))
    monkeypatch.delenv("QPSAM_WEIGHTS", raising=False)
    return home


@pytest.fixture
def served(tmp_path):
    """A real HTTP server on loopback serving a folder: (folder, base URL)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _script(engine: EngineSpec) -> str:
    from qpsam.groovy import script_for
    from qpsam.jobs.automask import AutomaskOptions
    from qpsam.jobs.scripts import automask_specs

    (spec,) = automask_specs(engine, AutomaskOptions(), 100, 100, [None], ImagePlane())
    return script_for(spec)


def test_replay_scripts_name_the_weights_of_every_source(tmp_path, weights_home, served) -> None:
    from qpsam.engines.weights import CATALOG, packaged_weights, register_weights

    mobile = packaged_weights("vit_t")
    if mobile is None:
        pytest.skip("no packaged MobileSAM weights here")
    folder, base = served
    (folder / "mobile_sam.pt").write_bytes(mobile.read_bytes())
    url = f"{base}/mobile_sam.pt"
    local = tmp_path / "my-weights.pt"
    local.write_bytes(mobile.read_bytes())

    assert f".checkpointUrl('{url}')" in _script(EngineSpec("vit_t", url))  # a URL
    catalog = CATALOG["vit_b_lm"].url
    assert f".checkpointUrl('{catalog}')" in _script(EngineSpec("vit_b", "vit_b_lm"))  # a catalog name
    record = register_weights("vit_t", "from-url", url)  # downloaded over HTTP
    assert f".checkpointUrl('{url}')" in _script(EngineSpec("vit_t", "from-url"))  # a registered name
    assert f".checkpointUrl('{url}')" in _script(EngineSpec("vit_t", str(record.path)))  # its file
    register_weights("vit_t", "from-file", local)
    for weights in ("from-file", str(local)):  # a local file with no URL: said, not silently dropped
        text = _script(EngineSpec("vit_t", weights))
        assert ".checkpointUrl" not in text
        assert "// WARNING: the run used its own weights, which this script does not pass on" in text
        assert "server's default vit_t weights" in text
    default = _script(EngineSpec("vit_t"))  # the default weights are the server's default too
    assert ".checkpointUrl" not in default and "WARNING" not in default


def test_a_run_with_local_weights_warns_and_records_it(tmp_path, nuclei, weights_home, capsys, qupath_check) -> None:
    from qpsam.engines.weights import packaged_weights

    mobile = packaged_weights("vit_t")
    if mobile is None:
        pytest.skip("no packaged MobileSAM weights here")
    local = tmp_path / "my-weights.pt"
    local.write_bytes(mobile.read_bytes())
    project = make_project(tmp_path, nuclei, n_prompts=1)
    groovy = tmp_path / "run.groovy"
    assert main(["detect", str(project), *ENGINE_ARGS, "--weights", str(local), "--groovy", str(groovy)]) == 0
    out = capsys.readouterr().out
    assert f"warning: weights {local} are a local file with no URL" in out
    assert "// WARNING: the run used its own weights" in groovy.read_text()
    (record,) = history.read(project)
    assert "local file with no URL" in record.params["weights_note"] and record.params["weights_url"] is None
    qupath_check(project)


# ------------------------------------------------------------------------------------------------ item 5


def test_a_one_point_multipoint_saves_as_qupath_writes_it(tmp_path, qupath_check) -> None:
    from shapely.geometry import MultiPoint, Point

    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((64, 64), np.uint8))
    one = PathObject(MultiPoint([(5.5, 7.25)]), path_class=PathClass("Seed"))
    two = PathObject(MultiPoint([(10, 10), (20, 30)]))
    with open_project(tmp_path / "p", "x", backend="native") as project:
        project.add_image(image).add_objects([one, two])
    (objects,) = objects_of(tmp_path / "p").values()
    by_id = {o.id: o for o in objects}
    assert by_id[one.id].geometry.equals(Point(5.5, 7.25)) and by_id[one.id].roi_kind == "points"
    assert len(by_id[two.id].geometry.geoms) == 2
    qupath_check(tmp_path / "p", {1: objects})


def test_a_failed_save_in_a_create_mode_leaves_no_half_project(tmp_path) -> None:
    from qpsam.errors import ProjectError

    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((64, 64), np.uint8))
    twice = PathObject(box(1, 1, 9, 9))
    with pytest.raises(ProjectError, match="appears twice"):
        with open_project(tmp_path / "new", "x", backend="native") as project:
            project.add_image(image).add_objects([twice, twice])
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # a folder that was there stays, empty
    with pytest.raises(RuntimeError):
        with open_project(tmp_path / "empty", "a", backend="native") as project:
            project.add_image(image)
            raise RuntimeError("the user's code failed")
    assert list((tmp_path / "empty").iterdir()) == []
    # a project saved whole is kept when a later save fails
    with open_project(tmp_path / "kept", "x", backend="native") as project:
        project.add_image(image)
    with pytest.raises(ProjectError):
        with open_project(tmp_path / "kept", "r+", backend="native") as project:
            project.images[0].add_objects([twice, twice])
    assert len(objects_of(tmp_path / "kept")) == 1
