"""qpsam.live against a real Py4J gateway: py4j's GatewayServer in a JVM with QuPath's own core (0.6.0, 0.7.0),
serving the calls of QuPath's QuPathEntryPoint (``live_gateway.groovy``) on an image of a project that
``qpsam new-project`` made from a real (nuclei) TIFF with two z-slices. QuPath's ImageJ server opens it there.

What QuPath writes is read back by QuPath's own classes: through the gateway, and by QuPath's reader (``qupath_check``)
on the project QuPath saved. The GUI side (the viewer redrawing on ``fireHierarchyUpdate``) is not tested here.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import need_qupath
from live_host import VERSIONS, GatewayHost
from live_host import unavailable_reason as host_unavailable
from shapely.geometry import Point, Polygon, box

pytestmark = [pytest.mark.qupath]

TOKEN = "s3cret-token"
NUCLEUS = (200, 0, 0)


def _nucleus_boxes(labels: np.ndarray, n: int) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1) of ``n`` large nuclei away from the borders and from each other."""
    boxes = []
    for value in np.unique(labels)[1:]:
        ys, xs = np.nonzero(labels == value)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        if len(xs) < 150 or min(x0, y0) < 40 or max(x1, y1) > labels.shape[0] - 40:
            continue
        if all(abs(x0 - b[0]) > 120 or abs(y0 - b[1]) > 120 for b in boxes):
            boxes.append((int(x0), int(y0), int(x1), int(y1)))
        if len(boxes) == n:
            return boxes
    raise AssertionError("not enough nuclei for prompts")


@pytest.fixture(scope="module")
def live_image(nuclei, tmp_path_factory) -> tuple[Path, list]:
    """A project made by ``qpsam new-project`` with one 2-z uint16 TIFF, and its annotations (prompts and not)."""
    import tifffile

    from qpsam.cli import main
    from qpsam.objects import ImagePlane, PathClass, PathObject
    from qpsam.project import open_project

    image, labels = nuclei
    folder = tmp_path_factory.mktemp("live")
    tif = folder / "nuclei-z.tif"
    tifffile.imwrite(tif, np.stack([image, image[::-1].copy()]), imagej=True, metadata={"axes": "ZYX"})
    other = folder / "nuclei-z-copy.tif"
    shutil.copyfile(tif, other)
    assert main(["new-project", "--backend", "native", str(folder / "project"), str(tif), str(other)]) == 0
    (a, b) = _nucleus_boxes(labels, 2)
    h = labels.shape[0]
    objects = [
        # a box prompt on z=1, where the image is flipped upside down
        PathObject(box(a[0] - 3, h - a[3] - 3, a[2] + 3, h - a[1] + 3), path_class=PathClass("Nucleus", NUCLEUS),
                   plane=ImagePlane(z=1)),
        # a point prompt on z=0
        PathObject(Point((b[0] + b[2]) / 2, (b[1] + b[3]) / 2), path_class=PathClass("Other", (0, 0, 200))),
        # not a prompt: a polygon in a corner
        PathObject(Polygon([(2, 2), (30, 2), (2, 30)]), path_class=PathClass("Tissue", (0, 200, 0))),
    ]
    with open_project(folder / "project", "r+", backend="native") as project:
        project.entry("1").add_objects(objects)
        project.entry("2").add_objects([o.replace(id=uuid.uuid4()) for o in objects])
        project.save()
    return folder / "project", objects


@pytest.fixture(params=VERSIONS)
def host(request, live_image, tmp_path):
    """A gateway over a fresh copy of the project, on QuPath 0.6.0 or 0.7.0."""
    need_qupath(host_unavailable(request.param))
    project = tmp_path / "project"
    shutil.copytree(live_image[0], project)
    with GatewayHost(request.param, project, "1", TOKEN) as gateway_host:
        gateway_host.project = project
        yield gateway_host


def _select(gateway, ids) -> None:
    """Select objects in QuPath's hierarchy by id, as a click in the viewer does (through QuPath's own classes)."""
    hierarchy = gateway.entry_point.getCurrentHierarchy()
    wanted = {str(i) for i in ids}
    chosen = gateway.java.jvm.java.util.ArrayList()
    for obj in hierarchy.getAnnotationObjects():
        if str(obj.getID().toString()) in wanted:
            chosen.add(obj)
    hierarchy.getSelectionModel().setSelectedObjects(chosen, None)


def _saved(host) -> list:
    """QuPath saves the image; qpsam's reading of the saved data (checked against QuPath's own below)."""
    from qpsam.project.qpdata import read_qpdata

    host.save()
    return read_qpdata(host.project / "data" / "1" / "data.qpdata").objects


def test_prompts_and_pixels_from_a_project_image(host, live_image):
    from qpsam import live
    from qpsam.geometry import Region
    from qpsam.objects import ImagePlane
    from qpsam.project.pixels import open_image

    objects = live_image[1]
    with live.connect(host.port, TOKEN) as gateway:
        image = gateway.image()
        assert (image.width, image.height, image.n_channels, image.size_z, image.pixel_type) == (512, 512, 1, 2, "UINT16")
        everything = image.objects()
        assert {o.id: (o.class_name, o.plane, o.roi_kind) for o in everything} == \
            {o.id: (o.class_name, o.plane, o.roi_kind) for o in objects}
        _select(gateway, [objects[0].id, objects[2].id])
        assert sorted(str(o.id) for o in image.objects(selected=True)) == sorted([str(objects[0].id), str(objects[2].id)])

        # pixels: the file when reachable; through the gateway, tile by tile, the same values (16 bits kept)
        source, route, _ = live.image_source(image)
        assert route == "file"
        through = live.GatewaySource(image, tile=100)
        region = Region(3, 5, 300, 250, 1.0, ImagePlane(z=1))
        got = through.read_region(region)
        assert got.dtype == np.uint16 and got.shape == (250, 300, 1)
        assert through.calls == 9
        np.testing.assert_array_equal(got, source.read_region(region))
        np.testing.assert_array_equal(got[:, :, 0], open_image(image.uris[0][len("file:"):]).read_region(region)[:, :, 0])
        assert got[:, :, 0].tolist() != through.read_region(Region(3, 5, 300, 250, 1.0))[:, :, 0].tolist()
        # the whole image at a downsample, either way
        small = image.read(downsample=4, z=1, route="gateway")
        assert small.shape == (128, 128, 1) and small.dtype == np.uint16
        assert np.abs(small.astype(int) - image.read(downsample=4, z=1, route="file")).max() < 0.2 * small.max()

        # the file gone: auto falls back to the gateway and says why; route=file is an error naming the file
        tif = Path(image.uris[0][len("file:"):])
        moved = tif.with_suffix(".moved")
        os.rename(tif, moved)
        try:
            source, route, why = live.image_source(image, "auto")
            assert route == "gateway" and "not reachable" in why
            with pytest.raises(live.LiveError, match="cannot read the file directly.*nuclei-z.tif"):
                live.image_source(image, "file")
        finally:
            os.rename(moved, tif)


def test_detect_writes_into_the_live_hierarchy(host, live_image, mobile_sam, qupath_check):
    from qpsam import live
    from qpsam.jobs.detect import QUALITY

    objects = live_image[1]
    calls = []
    with live.connect(host.port, TOKEN) as gateway:
        _select(gateway, [objects[0].id, objects[1].id])
        result = live.live_detect(gateway, mobile_sam, route="gateway", progress=lambda d, t: calls.append((d, t)))
        assert result.route == "gateway" and result.prompts == 2 and calls and calls[-1][0] == calls[-1][1]
        assert sorted(str(i) for i in result.removed) == sorted([str(objects[0].id), str(objects[1].id)])
        by_class = {o.class_name: o for o in result.added}
        assert set(by_class) == {"Nucleus", "Other"}
        assert by_class["Nucleus"].plane.z == 1 and by_class["Other"].plane.z == 0
        # the mask lies inside its box prompt and fills much of it
        prompt = objects[0].geometry
        assert by_class["Nucleus"].geometry.within(prompt.buffer(2)) and by_class["Nucleus"].geometry.area > 0.3 * prompt.area
        # QuPath's hierarchy, read back through the gateway
        now = gateway.image().objects()
        assert {str(o.id) for o in now} == {str(o.id) for o in [objects[2], *result.added]}
        assert all(o.measurements[QUALITY] > 0 for o in now if o.class_name != "Tissue")
    # QuPath saves the image; QuPath's reader (0.5.1, 0.6.0, 0.7.0) finds the added objects with classes and planes
    saved = _saved(host)
    assert len(saved) == 3
    qupath_check(host.project, expected={1: [objects[2], *result.added]})


def test_cli_live_detect_selected(host, live_image, qupath_check, capsys):
    pytest.importorskip("torch")
    from qpsam import live
    from qpsam.cli import main

    objects = live_image[1]
    with live.connect(host.port, TOKEN) as gateway:
        _select(gateway, [objects[0].id])
    code = main(["live", "detect", "--selected", "--port", str(host.port), "--gateway-token", TOKEN,
                 "--model", "vit_t", "--engine", "torch", "--device", "cpu", "--keep-prompts", "--class", "SAM"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "1 object(s) added from 1 prompt(s)" in out.out and "pixels from the file" in out.out
    saved = _saved(host)
    added = [o for o in saved if o.class_name == "SAM"]
    assert len(saved) == 4 and len(added) == 1 and added[0].plane.z == 1
    qupath_check(host.project, expected={1: saved})


def test_wrong_token_is_refused_and_changes_nothing(host, capsys):
    from qpsam import live
    from qpsam.cli import main

    with pytest.raises(live.LiveError, match="refused the token"):
        live.connect(host.port, "not-the-token")
    with pytest.raises(live.LiveError, match="needs a token"):
        live.connect(host.port, None)
    code = main(["live", "detect", "--port", str(host.port), "--gateway-token", "wrong", "--model", "vit_t"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("qpsam: error:") and "refused the token" in err and len(err.splitlines()) == 1
    assert len(_saved(host)) == 3


@pytest.mark.parametrize("route", ["file", "gateway"])
def test_gateway_gone_mid_run(host, live_image, mobile_sam, qupath_check, route):
    from qpsam import live

    objects = live_image[1]
    gateway = live.connect(host.port, TOKEN)
    _select(gateway, [objects[0].id, objects[1].id])

    def stop_qupath(done: int, total: int) -> None:
        if done == 1:
            host.stop()  # QuPath's gateway shuts down while SAM runs

    # after the first window: the next window's pixels (gateway route) or the results cannot cross any more
    with pytest.raises(live.LiveError, match="went away while (sending|reading pixels)"):
        live.live_detect(gateway, mobile_sam, route=route, progress=stop_qupath)
    gateway.close()
    # nothing half-added: QuPath saves the hierarchy as it was
    assert {str(o.id) for o in _saved(host)} == {str(o.id) for o in objects}
    qupath_check(host.project, expected={1: objects})


def test_no_selection_is_a_clear_error(host, live_image, capsys):
    from qpsam import live
    from qpsam.cli import main

    with live.connect(host.port, TOKEN) as gateway:
        gateway.entry_point.getCurrentHierarchy().getSelectionModel().clearSelection()
        with pytest.raises(live.LiveError, match="no selected objects"):
            live.live_detect(gateway, live.EngineSpec("vit_t", engine="torch", device="cpu"))
    code = main(["live", "detect", "--selected", "--port", str(host.port), "--gateway-token", TOKEN])
    err = capsys.readouterr().err
    assert code == 1 and "has no selected objects" in err and len(err.splitlines()) == 1
    # a selection without prompts: the polygon annotation only
    with live.connect(host.port, TOKEN) as gateway:
        _select(gateway, [live_image[1][2].id])
        with pytest.raises(live.LiveError, match="none of its 1 selected objects is a prompt"):
            live.live_detect(gateway, live.EngineSpec("vit_t", engine="torch", device="cpu"))
    assert len(_saved(host)) == 3


def test_nothing_listening():
    import socket

    from qpsam import live

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(live.LiveError, match=f"127.0.0.1:{port} cannot be reached"):
        live.connect(port, TOKEN)


def test_objects_cross_in_chunks_with_ids_classes_planes_measurements(host, live_image, monkeypatch, qupath_check):
    from qpsam import live
    from qpsam.live import gateway as live_gateway
    from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject

    monkeypatch.setattr(live_gateway, "CHUNK", 2)  # 7 objects: 4 chunks each way
    sent = [PathObject(box(100 + 20 * i, 400, 110 + 20 * i, 410), ObjectType.DETECTION if i % 2 else ObjectType.ANNOTATION,
                       path_class=PathClass(f"C{i % 3}", (10 + 10 * (i % 3), 0, 0)), name=f"n{i}",
                       measurements={"SAM Quality": 0.5 + i / 100, "Area px": float(i)}, plane=ImagePlane(z=i % 2))
            for i in range(7)]
    with live.connect(host.port, TOKEN) as gateway:
        image = gateway.image("nuclei-z.tif")  # the project entry that is open: the live image
        assert image.entry is None
        image.add_objects(sent)
        gateway.refresh()
        with live.connect(host.port, TOKEN) as again:
            back = {o.id: o for o in again.image().objects()}
    for obj in sent:
        if obj.object_type is ObjectType.ANNOTATION:  # QuPath starts a rectangle at another corner: same shape
            got = back[obj.id]
            assert got.geometry.equals(obj.geometry)
            assert (got.id, got.object_type, got.path_class, got.name, got.plane) == \
                (obj.id, obj.object_type, obj.path_class, obj.name, obj.plane)
            assert dict(got.measurements) == pytest.approx(dict(obj.measurements), rel=1e-6)
    saved = _saved(host)
    assert len(saved) == 3 + 7
    qupath_check(host.project, expected={1: [*live_image[1], *sent]})


def test_automask_inside_the_selected_annotation(host, live_image, mobile_sam):
    from qpsam import live
    from qpsam.objects import ImagePlane, PathClass, PathObject
    from qpsam.sam import AutomaskParams

    area = PathObject(box(150, 150, 280, 280), path_class=PathClass("Region", (0, 0, 0)), plane=ImagePlane(z=1))
    options = live.AutomaskOptions(AutomaskParams(points_per_side=2, pred_iou_thresh=0.3, stability_score_thresh=0.3),
                                   tile_size=256, overlap=32, path_class="Auto")
    with live.connect(host.port, TOKEN) as gateway:
        image = gateway.image()
        image.add_objects([area])
        _select(gateway, [area.id])
        result = live.live_automask(gateway, mobile_sam, options, selected=True)
        assert result.added and all(o.plane.z == 1 and o.class_name == "Auto" for o in result.added)
        assert all(area.geometry.contains(o.geometry.representative_point()) for o in result.added)
        assert len(gateway.image().objects()) == 4  # annotations only: the detections are not among them
    assert len(_saved(host)) == 4 + len(result.added)


def test_detect_on_a_project_entry_that_is_not_open(live_image, tmp_path, mobile_sam, qupath_check):
    """``image=NAME``: QuPath reads the entry, the results go into it and QuPath saves it into the project."""
    from qpsam import live
    from qpsam.project.qpdata import read_qpdata

    version = "0.7.0"
    need_qupath(host_unavailable(version))
    project = tmp_path / "project"
    shutil.copytree(live_image[0], project)
    # QuPath opens entry 2 once and saves it: its server is then the ImageJ server QuPath found for the file
    with GatewayHost(version, project, "2", TOKEN) as first:
        first.save()
    before = read_qpdata(project / "data" / "2" / "data.qpdata").objects
    with GatewayHost(version, project, "1", TOKEN) as host, live.connect(host.port, TOKEN) as gateway:
        result = live.live_detect(gateway, mobile_sam, live.DetectOptions(keep_prompts=True), selected=False,
                                  image="nuclei-z-copy.tif")
        assert result.image == "nuclei-z-copy.tif" and result.prompts == 2 and len(result.added) == 2
        assert len(gateway.image().objects()) == 3  # the open image is untouched
    after = read_qpdata(project / "data" / "2" / "data.qpdata").objects
    assert len(after) == len(before) + 2
    qupath_check(project, expected={2: [*before, *result.added]})


@pytest.mark.parametrize("version", VERSIONS)
def test_gateway_pixels_keep_channels_and_bit_depth(version, nuclei, tmp_path):
    """Tile by tile through ``getImageBytes``: 3-channel 16-bit, 32-bit float (ImageJ TIFF) and 8-bit RGB (PNG)
    images give the pixels of the file, channels and type kept."""
    import tifffile

    from qpsam import live
    from qpsam.cli import main
    from qpsam.geometry import Region

    need_qupath(host_unavailable(version))
    image = nuclei[0][:256, :256]
    arrays = {
        "c3.tif": np.stack([image, image[::-1].copy(), image[:, ::-1].copy()]),
        "f32.tif": image.astype(np.float32) / 7.0,
        "rgb.tif": np.stack([(image >> 4).astype(np.uint8), (image >> 5).astype(np.uint8), (image >> 6).astype(np.uint8)], -1),
    }
    for name, array in arrays.items():
        if name == "rgb.tif":
            tifffile.imwrite(tmp_path / name, array, photometric="rgb")
        else:
            tifffile.imwrite(tmp_path / name, array, imagej=True, metadata={"axes": "CYX" if array.ndim == 3 else "YX"})
    assert main(["new-project", "--backend", "native", str(tmp_path / "p"), *(str(tmp_path / n) for n in arrays)]) == 0
    expected = {"c3.tif": ("UINT16", 3, np.uint16), "f32.tif": ("FLOAT32", 1, np.float32), "rgb.tif": ("UINT8", 3, np.uint8)}
    region = Region(10, 20, 200, 150, 1.0)
    with GatewayHost(version, tmp_path / "p", "c3.tif", TOKEN) as host, live.connect(host.port, TOKEN) as gateway:
        for name, (pixel_type, channels, dtype) in expected.items():
            assert host.open(name) == name
            image_ = gateway.image()
            assert (image_.pixel_type, image_.n_channels, image_.is_rgb) == (pixel_type, channels, name == "rgb.tif")
            source = live.GatewaySource(image_, tile=64)
            got = source.read_region(region)
            assert source.calls == 12 and got.dtype == dtype and got.shape == (150, 200, channels)
            array = arrays[name]
            want = np.moveaxis(array, 0, -1) if name == "c3.tif" else (array if array.ndim == 3 else array[:, :, None])
            np.testing.assert_array_equal(got, want[20:170, 10:210])
