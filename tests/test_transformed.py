"""Transformed image entries (QuPath's ``rotated``, ``flipped`` and ``cropped`` servers) read natively.

The projects are written by QuPath itself (the judge's ``make_project``: ``TransformedServerBuilder`` and QuPath's
own import with ``--rotate``), one per QuPath version, then read by qpsam and compared pixel for pixel with regions
that QuPath's own servers read (``RotatedImageServer``, ``FlippedImageServer``, ``CroppedImageServer`` over the
ImageJ server). Other wrappers must name their type and point to the paquo backend, which reads them through QuPath.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from qupath_judge import VERSIONS, compare_trees
from shapely.geometry import Point

from qpsam.errors import ImageReadError
from qpsam.geometry import Region
from qpsam.objects import PathClass, PathObject
from qpsam.project import open_project
from qpsam.project import transforms as tf

H, W = 97, 131  # not square, odd sizes: a wrong turn or a swapped axis shows


def _images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W]
    grey = ((xx * 2 + yy * 3 + rng.integers(0, 40, (H, W))) % 256).astype(np.uint8)
    rgb = np.stack([grey, (xx * 255 // W).astype(np.uint8), (yy * 255 // H).astype(np.uint8)], -1)
    stack = np.stack([(xx * 400 + yy).astype(np.uint16), (yy * 600 + xx).astype(np.uint16),
                      rng.integers(0, 65535, (H, W)).astype(np.uint16)])
    paths = {"rgb": folder / "rgb.tif", "grey": folder / "grey.tif", "stack": folder / "stack16.tif"}
    tifffile.imwrite(paths["rgb"], rgb, photometric="rgb")
    tifffile.imwrite(paths["grey"], grey)
    tifffile.imwrite(paths["stack"], stack, imagej=True, metadata={"axes": "CYX"})  # ImageJ: 3 channels
    return paths


def _entries(images: dict[str, Path], version: str) -> list[dict]:
    """What QuPath ``version`` is asked to build: (name, image, wrapping) for every entry."""
    rgb = str(images["rgb"])
    out = [
        {"name": "plain", "image": rgb},
        {"name": "rot90", "image": rgb, "wrap": [["rotate", "ROTATE_90"]]},
        {"name": "rot180", "image": rgb, "wrap": [["rotate", "ROTATE_180"]]},
        {"name": "rot270", "image": rgb, "wrap": [["rotate", "ROTATE_270"]]},
        {"name": "grey-rot90", "image": str(images["grey"]), "wrap": [["rotate", "ROTATE_90"]]},
        {"name": "stack-rot270", "image": str(images["stack"]), "wrap": [["rotate", "ROTATE_270"]]},
        {"name": "crop", "image": rgb, "wrap": [["crop", [13, 7, 61, 45]]]},
        {"name": "crop-rot90", "image": rgb, "wrap": [["crop", [20, 11, 70, 53]], ["rotate", "ROTATE_90"]]},
        # QuPath's own import with "Rotate image": a rotated builder without metadata of its own.
        {"name": "import-rot270", "image": rgb, "import_args": ["--rotate", "ROTATE_270"], "save_data": False},
    ]
    if version >= "0.7":
        out += [
            {"name": "flipH", "image": rgb, "wrap": [["flip", "HORIZONTAL"]]},
            {"name": "flipV", "image": rgb, "wrap": [["flip", "VERTICAL"]]},
            {"name": "flipBoth", "image": str(images["stack"]), "wrap": [["flip", "BOTH"]]},
            # QuPath 0.7's import: rotation from the import arguments, then the flip around it.
            {"name": "import-rot90-flipH", "image": rgb, "import_args": ["--rotate", "ROTATE_90"],
             "wrap": [["flip", "HORIZONTAL"]]},
        ]
    return out


_NO_IMAGES = {"rgb": Path("rgb.tif"), "grey": Path("grey.tif"), "stack": Path("stack16.tif")}  # names only

OTHERS = [("extract", [0], "color"), ("concat", 0, "channels"), ("affine", [1, 0, 0, 1, 5, 5], "affine"),
          ("deconvolve", [1, 2], "color_deconvolved"), ("sparse", [0, 0, 50, 50], "sparse"),
          ("offset", [1, 1, 1], "normalized"), ("z_project", "MAX", "z_projected")]


def _other_entries(images: dict[str, Path], version: str) -> list[dict]:
    # QuPath 0.6.0 writes the metadata of its normalized server with -Infinity, which Gson refuses: 0.7+ only.
    keep = OTHERS if version >= "0.7" else [o for o in OTHERS if o[2] in ("color", "channels", "affine",
                                                                          "color_deconvolved", "sparse")]
    return [{"name": f"other-{kind}", "image": str(images["rgb"]), "wrap": [[step, arg]]} for step, arg, kind in keep]


@pytest.fixture(scope="module")
def built(qupath_judges, tmp_path_factory) -> dict[str, Path]:
    """One project per QuPath version, written by that version: every transformed entry and the other wrappers."""
    folder = tmp_path_factory.mktemp("transformed")
    images = _images(folder)
    out = {}
    for version in VERSIONS:
        specs = _entries(images, version) + _other_entries(images, version)
        answer = qupath_judges[version].ask(op="make_project", path=str(folder / f"qupath-{version}"), entries=specs)
        assert len(answer["entries"]) == len(specs)
        out[version] = folder / f"qupath-{version}" / "project.qpproj"
    return out


def _qupath_region(judge, project: Path, entry_id: int, region: Region, out: Path) -> np.ndarray:
    judge.ask(op="region", project=str(project), entry=entry_id, x=region.x, y=region.y, width=region.width,
              height=region.height, downsample=region.downsample, z=region.plane.z, t=region.plane.t, out=str(out))
    return np.load(out)


def _regions(width: int, height: int) -> list[Region]:
    # At downsample 1 only: downsampled, even the plain image's reads differ from QuPath's ImageJ server (it
    # resizes with ImageJ's area averaging and rounds sizes half up), so the wrappers are checked against qpsam's
    # own plain read there (test_downsampled_reads_turn_the_read_of_the_wrapped_image).
    return [Region(0, 0, width, height),                       # the whole entry
            Region(5, 9, 40, 30),                              # inside
            Region(width - 20, height - 15, 40, 30),           # over the right and bottom edges
            Region(0, height - 7, 23, 7)]                      # a thin strip at the bottom left


@pytest.mark.qupath
@pytest.mark.parametrize("version", VERSIONS)
def test_rotated_flipped_and_cropped_entries_read_as_qupaths_own_servers(built, qupath_judges, version,
                                                                          tmp_path) -> None:
    judge = qupath_judges[version]
    project_file = built[version]
    names = [e["name"] for e in _entries(_NO_IMAGES, version)]
    checked = 0
    with open_project(project_file, "r", backend="native") as project:
        for name in names:
            entry = project.entry(name)
            server = judge.ask(op="server", project=str(project_file), entry=entry.id)
            assert (entry.width, entry.height) == (server["width"], server["height"]), name
            assert entry.n_channels == server["channels"], name
            regions = _regions(entry.width, entry.height)
            if not entry.is_rgb:
                # Over the right or bottom edge, a turned entry asks its image for pixels left of or above it.
                # QuPath's ImageJ server (the only one in the harness) answers such a request on a non-RGB image
                # with the pixels from (0, 0) instead of padding: measured on the plain grey image too, so a
                # quirk of that server, not of the wrappers. qpsam pads, as the ImageJ server does for RGB.
                regions = [r for r in regions if r.x + r.width <= entry.width and r.y + r.height <= entry.height]
            for region in regions:
                theirs = _qupath_region(judge, project_file, entry.id, region, tmp_path / "region.npy")
                ours = entry.read_region(region)
                if version == "0.5.1" and region.x + region.width > entry.width:
                    # QuPath 0.5.1's servers return only the part inside the image (0.6+ pad with zeros, as qpsam).
                    assert np.all(ours[theirs.shape[0]:] == 0) and np.all(ours[:, theirs.shape[1]:] == 0), name
                    ours = ours[:theirs.shape[0], :theirs.shape[1]]
                assert ours.shape == theirs.shape, (name, region)
                assert np.array_equal(ours.astype(np.float64), theirs), (
                    f"{name} {region.bounds}: {int((ours != theirs).any(axis=2).sum())} pixels differ")
                checked += 1
    assert checked >= 3 * len(names)


@pytest.mark.qupath
def test_builders_are_parsed_from_what_qupath_writes(built) -> None:
    project = json.loads(built["0.7.0"].read_text())
    builders = {e["imageName"]: e["serverBuilder"] for e in project["images"]}
    image, chain = tf.parse_builder(builders["import-rot90-flipH"])
    assert image["builderType"] == "uri" and image["uri"].endswith("rgb.tif")
    assert chain == [tf.Transform("rotated", rotation=90), tf.Transform("flipped", flip_x=True)]  # innermost first
    assert tf.parse_builder(builders["crop-rot90"])[1] == [tf.Transform("cropped", crop=(20, 11, 70, 53)),
                                                           tf.Transform("rotated", rotation=90)]
    # QuPath's import writes the rotated builder without metadata of its own: the size is the turned image's.
    assert "metadata" not in builders["import-rot270"]
    with open_project(built["0.7.0"], "r", backend="native") as qp:
        entry = qp.entry("import-rot270")
        assert (entry.width, entry.height) == (H, W)
        assert entry.reader().downsamples == qp.entry("plain").reader().downsamples


@pytest.mark.qupath
def test_downsampled_reads_turn_the_read_of_the_wrapped_image(built) -> None:
    """At a downsample a transformed entry shows what the plain image reads there, turned (as QuPath's servers
    do: they map the request, let the wrapped server read it, then turn the pixels)."""
    with open_project(built["0.7.0"], "r", backend="native") as project:
        plain = project.entry("plain")
        for downsample in (2.0, 2.5, 4.0):
            full = plain.read_region(Region(0, 0, W, H, downsample))
            assert np.array_equal(project.entry("rot90").read_region(Region(0, 0, H, W, downsample)),
                                  np.rot90(full, -1))
            assert np.array_equal(project.entry("rot180").read_region(Region(0, 0, W, H, downsample)),
                                  full[::-1, ::-1])
            assert np.array_equal(project.entry("rot270").read_region(Region(0, 0, H, W, downsample)),
                                  np.rot90(full, 1))
            assert np.array_equal(project.entry("flipH").read_region(Region(0, 0, W, H, downsample)), full[:, ::-1])
            crop = plain.read_region(Region(13, 7, 61, 45, downsample))
            assert np.array_equal(project.entry("crop").read_region(Region(0, 0, 61, 45, downsample)), crop)
        # Readers travel to Dask workers: a pickled chain reads the same.
        chain = project.entry("import-rot90-flipH").reader()
        region = Region(3, 4, 50, 60, 2.0)
        assert np.array_equal(pickle.loads(pickle.dumps(chain)).read_region(region), chain.read_region(region))


@pytest.mark.qupath
def test_cli_info_reports_the_entrys_own_size(built, capsys) -> None:
    from qpsam.cli import main

    assert main(["info", str(built["0.7.0"]), "--backend", "native", "--json"]) == 0
    images = {i["name"]: i for i in json.loads(capsys.readouterr().out)["images"]}
    assert (images["rot90"]["width"], images["rot90"]["height"]) == (H, W)
    assert (images["import-rot270"]["width"], images["import-rot270"]["height"]) == (H, W)
    assert (images["crop-rot90"]["width"], images["crop-rot90"]["height"]) == (53, 70)
    assert (images["flipV"]["width"], images["flipV"]["height"]) == (W, H)


@pytest.mark.qupath
@pytest.mark.parametrize("version", ["0.6.0", "0.7.0"])
def test_other_wrappers_name_their_type_and_point_to_the_paquo_backend(built, version) -> None:
    with open_project(built[version], "r", backend="native") as project:
        for spec in _other_entries(_NO_IMAGES, version):
            kind = next(k for step, _, k in OTHERS if f"other-{k}" == spec["name"])
            entry = project.entry(spec["name"])
            assert entry.width > 0 and entry.height > 0  # metadata still reads: info and export work
            with pytest.raises(ImageReadError) as err:
                entry.read_region(Region(0, 0, 10, 10))
            message = str(err.value)
            assert f"entry {entry.id} ({spec['name']!r})" in message and f"server type {kind!r}" in message
            assert "--backend paquo" in message


@pytest.mark.qupath
def test_malformed_wrappers_give_errors_naming_the_entry(built, tmp_path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(built["0.7.0"].parent, folder)
    data = json.loads((folder / "project.qpproj").read_text())
    by_name = {e["imageName"]: e for e in data["images"]}
    by_name["rot90"]["serverBuilder"]["rotation"] = "ROTATE_45"
    del by_name["crop"]["serverBuilder"]["region"]["width"]
    by_name["flipH"]["serverBuilder"]["flip"] = "DIAGONAL"
    (folder / "project.qpproj").write_text(json.dumps(data, indent=2))
    with open_project(folder, "r", backend="native") as project:
        for name, words in [("rot90", "unknown rotation 'ROTATE_45'"), ("crop", "'region' must hold integers"),
                            ("flipH", "unknown flip 'DIAGONAL'")]:
            entry = project.entry(name)
            with pytest.raises(ImageReadError, match=f"entry {entry.id} \\('{name}'\\): .*{words}"):
                entry.read_region(Region(0, 0, 10, 10))
        with pytest.raises(ImageReadError, match="outside 97 x 131"):
            project.entry("rot270").read_region(Region(100, 0, 10, 10))  # the unrotated image is 131 wide


def _disc_image(path: Path) -> None:
    """A dark noisy image with one bright disc of radius 18 centred at (40, 30) (image coordinates)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:120, 0:160]
    img = rng.integers(20, 50, (120, 160, 3)).astype(np.uint8)
    img[(xx + 0.5 - 40) ** 2 + (yy + 0.5 - 30) ** 2 <= 18 ** 2] = (235, 225, 80)
    tifffile.imwrite(path, img, photometric="rgb")


@pytest.mark.qupath
@pytest.mark.weights
def test_prompts_and_results_are_in_the_entrys_own_coordinates(qupath_judges, qupath_check, mobile_sam,
                                                                tmp_path) -> None:
    """MobileSAM on a rotated and on a cropped-and-flipped entry, from Python and from the CLI: a point prompt on
    the disc where QuPath shows it gives the disc where QuPath shows it."""
    from qpsam.jobs import EngineSpec, detect

    _disc_image(tmp_path / "disc.tif")
    # Rotated 90° clockwise, (x, y) -> (120 - y, x); cropped to (8, 4, 120, 100) then flipped horizontally,
    # (x, y) -> (120 - (x - 8), y - 4).
    cases = {"disc-rot90": ([["rotate", "ROTATE_90"]], (120 - 30, 40)),
             "disc-crop-flip": ([["crop", [8, 4, 120, 100]], ["flip", "HORIZONTAL"]], (120 - (40 - 8), 30 - 4))}
    for name, (wrap, (cx, cy)) in cases.items():
        project_dir = tmp_path / name
        # Beside it, an affine entry with a prompt: the native backend refuses its pixels.
        qupath_judges["0.7.0"].ask(op="make_project", path=str(project_dir), entries=[
            {"name": name, "image": str(tmp_path / "disc.tif"), "wrap": wrap},
            {"name": "disc-affine", "image": str(tmp_path / "disc.tif"), "wrap": [["affine", [1, 0, 0, 1, 3, 2]]]}])
        with open_project(project_dir, "r+", backend="native") as project:
            for entry in (project.entry(name), project.entry("disc-affine")):
                entry.add_objects([PathObject(Point(cx, cy), path_class=PathClass("Disc"))])
        if name == "disc-rot90":
            with open_project(project_dir, "r+", backend="native") as project:
                report = detect(project, [name], engine=EngineSpec("vit_t", engine="torch", device="cpu"))
            assert report.ok, report
        else:
            # The CLI where no QuPath is found: ``auto`` is the native backend.
            env = {k: v for k, v in os.environ.items() if k != "PAQUO_QUPATH_DIR"}
            env["PAQUO_QUPATH_SEARCH_DIRS"] = json.dumps([str(tmp_path / "no-qupath")])
            done = subprocess.run([sys.executable, "-m", "qpsam.cli", "detect", str(project_dir), "--model", "vit_t",
                                   "--engine", "torch", "--device", "cpu"], env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 1, done.stdout + done.stderr  # one image failed
            assert "1 image(s) done, 0 skipped, 1 failed" in done.stdout
            failed = [line for line in done.stdout.splitlines() if "disc-affine" in line]
            assert len(failed) == 1 and "server type 'affine'" in failed[0] and "--backend paquo" in failed[0]
        with open_project(project_dir, "r", backend="native") as project:
            results = [o for o in project.entry(name).objects if o.path_class == PathClass("Disc")]
        assert len(results) == 1, name
        expected = Point(cx, cy).buffer(18)
        iou = results[0].geometry.intersection(expected).area / results[0].geometry.union(expected).area
        assert iou > 0.85, (name, iou, results[0].geometry.bounds)
        # QuPath reads the results where qpsam wrote them (a flipped entry needs QuPath 0.7).
        if name == "disc-rot90":
            qupath_check(project_dir)
        else:
            problems: list[str] = []
            loaded = qupath_judges["0.7.0"].project(project_dir / "project.qpproj")["entries"]
            theirs = next(e for e in loaded if e["name"] == name)["objects"]
            compare_trees(results, theirs, f"[QuPath 0.7.0] {name}: ", problems)
            assert not problems, problems


@pytest.mark.paquo
def test_the_paquo_backend_reads_every_wrapper_as_qupath_does(paquo_version, qupath_judges, tmp_path) -> None:
    """Through paquo, QuPath builds the entry's own server: transformed entries and the wrappers the native backend
    refuses give QuPath's pixels (the judge runs the same QuPath version in its own process)."""
    images = _images(tmp_path)
    specs = _entries(images, paquo_version) + _other_entries(images, paquo_version)
    judge = qupath_judges[paquo_version]
    project_file = tmp_path / "project" / "project.qpproj"
    judge.ask(op="make_project", path=str(project_file.parent), entries=specs)
    with open_project(project_file, "r", backend="paquo") as project:
        for spec in specs:
            entry = project.entry(spec["name"])
            for region in _regions(entry.width, entry.height)[:2]:  # inside the entry: no edge quirks
                theirs = _qupath_region(judge, project_file, entry.id, region, tmp_path / "region.npy")
                ours = entry.read_region(region)
                assert ours.shape == theirs.shape and np.array_equal(ours.astype(np.float64), theirs), \
                    (spec["name"], region)
