"""QuPath's own reader in a process of its own: the judge that tests ask what QuPath makes of a file.

Started by :mod:`qupath_judge` as ``python qupath_judge_driver.py QUPATH_DIR``; one JVM per process, so one QuPath
version per process. It reads one JSON request per line on stdin and answers one JSON line on stdout:

- ``{"op": "hierarchy", "path": P}``: ``PathIO.readHierarchy`` of a ``data.qpdata``;
- ``{"op": "project", "path": P}``: ``ProjectIO.loadProject``, and ``entry.readHierarchy()`` and the image URIs
  (``entry.getURIs()``) of every entry;
- ``{"op": "geojson", "path": P}``: ``PathIO.readObjects`` of a GeoJSON file (QuPath's own import);
- ``{"op": "region", "project": P, "entry": ID, "x":.., "y":.., "width":.., "height":.., "downsample":..,
  "z":.., "t":.., "out": F}``: the entry's server (``entry.readImageData().getServer()``) reads a region, written
  to ``F`` as a ``.npy`` array (height, width, channels);
- ``{"op": "server", "project": P, "entry": ID}``: the entry's server type, size and planes.
- ``{"op": "make_project", "path": DIR, "entries": [{"image": F, "name": N, "import_args": [...],
  "wrap": [[STEP, ARG], ...], "save_data": true}, ...]}``: a new project written by QuPath itself
  (``Projects.createProject``, ``project.addImage``, ``entry.saveImageData``, ``project.syncChanges``). Each entry
  is the image ``F`` opened as QuPath's import does (``ImageServers.getImageSupport`` with ``import_args``, e.g.
  ``["--rotate", "ROTATE_90"]``), then wrapped step by step with ``TransformedServerBuilder`` (see ``_wrap``).
  ``save_data: false`` adds the import's builder alone (no ``data.qpdata``), as QuPath's import does for an image
  without a type. Answers each entry's id.

Objects come back as nested dicts (type, class, colours as QuPath's packed ARGB ints, name, locked, measurements
with ``"NaN"``, plane, id, ROI class, WKB in hex, nucleus, children). Errors come back as ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

# Answers start with this, so that anything Java prints on stdout cannot be taken for one.
MARK = "@@qupath-judge "


def start(qupath_dir: Path) -> None:
    import jpype

    options = ["-Djava.awt.headless=true", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    runtime = qupath_dir / "lib" / "runtime"
    release = (runtime / "release").read_text(errors="replace") if (runtime / "release").is_file() else ""
    if 'JAVA_VERSION="17' not in release:
        options.append("--enable-native-access=ALL-UNNAMED")
    jpype.startJVM(str(runtime / "lib" / "server" / "libjvm.so"), *options,
                   classpath=[str(qupath_dir / "lib" / "app" / "*")], convertStrings=False)
    import jpype.imports  # noqa: F401 - makes ``from qupath.lib... import ...`` work

    # Headless, QuPath registers its Gson adapters in these classes' static initialisers: touch them first
    # (QP's registers the adapter of ColorTransform, which ``color`` server builders hold).
    for name in ("qupath.lib.images.servers.ImageServers", "qupath.lib.color.ColorModels",
                 "qupath.lib.objects.PathObjectPredicates", "qupath.lib.scripting.QP"):
        jpype.JClass("java.lang.Class").forName(name)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _number(value: float) -> float | str:
    return "NaN" if math.isnan(value) else ("Infinity" if value == math.inf else
                                            "-Infinity" if value == -math.inf else value)


def _geometry_from_points(kind: str, points: list[tuple[float, float]]) -> str:
    import shapely
    from shapely.geometry import LineString, MultiPoint, Point, Polygon

    if kind == "PointsROI":
        geometry = Point(points[0]) if len(points) == 1 else MultiPoint(points)
    elif kind in ("PolylineROI", "LineROI"):
        geometry = LineString(points)
    else:
        geometry = Polygon(points) if len(points) >= 3 else Polygon()
    return shapely.to_wkb(geometry).hex()


def describe(obj: Any) -> dict[str, Any]:
    from jpype import JClass

    writer = JClass("org.locationtech.jts.io.WKBWriter")(2)

    def roi_fields(roi: Any) -> dict[str, Any]:
        kind = str(roi.getClass().getSimpleName())
        if kind in ("PolygonROI", "PolylineROI", "PointsROI", "RectangleROI", "LineROI"):
            # getGeometry() snaps to QuPath's precision model (0.01 px): the ROI's own points are what it stores.
            points = [(float(p.getX()), float(p.getY())) for p in roi.getAllPoints()]
            geometry = _geometry_from_points(kind, points)
        else:
            geometry = bytes(writer.write(roi.getGeometry())).hex()
        return {"roi": kind, "wkb": geometry, "points": int(roi.getNumPoints()),
                "bounds": [float(roi.getBoundsX()), float(roi.getBoundsY()),
                           float(roi.getBoundsX() + roi.getBoundsWidth()),
                           float(roi.getBoundsY() + roi.getBoundsHeight())]}

    if obj.isRootObject():
        kind = "root"
    elif obj.isCell():
        kind = "cell"
    elif obj.isTile():
        kind = "tile"
    elif obj.isTMACore():
        kind = "tmaCore"
    elif obj.isDetection():
        kind = "detection"
    else:
        kind = "annotation"
    pc = obj.getPathClass()
    ml = obj.getMeasurementList()
    out: dict[str, Any] = {
        "type": kind,
        "class": None if pc is None else str(pc.toString()),
        "class_color": None if pc is None else _int_or_none(pc.getColor()),
        "name": None if obj.getName() is None else str(obj.getName()),
        "color": _int_or_none(obj.getColor()),
        "locked": bool(obj.isLocked()),
        "measurements": {str(k): _number(float(ml.get(k))) for k in ml.getMeasurementNames()},
        "id": str(obj.getID()),
        "children": [describe(child) for child in obj.getChildObjectsAsArray()],
    }
    roi = obj.getROI()
    if roi is not None:
        out["plane"] = [int(roi.getC()), int(roi.getZ()), int(roi.getT())]
        out.update(roi_fields(roi))
    if kind == "cell" and obj.getNucleusROI() is not None:
        nucleus = roi_fields(obj.getNucleusROI())
        out["nucleus_roi"], out["nucleus_wkb"] = nucleus["roi"], nucleus["wkb"]
    return out


def _project(path: Path) -> Any:
    from java.awt.image import BufferedImage
    from java.io import File
    from qupath.lib.projects import ProjectIO

    return ProjectIO.loadProject(File(str(path)), BufferedImage)


def _leave_as_found(folder: Path) -> list[Path]:
    """QuPath's ``loadProject`` creates ``classifiers/`` (and more) in the project folder: note what is there."""
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _entry(project: Any, entry_id: Any) -> Any:
    for entry in project.getImageList():
        if str(entry.getID()) == str(entry_id):
            return entry
    raise KeyError(f"no entry {entry_id} in the project")


def _wrap(server: Any, step: str, arg: Any) -> Any:
    """One ``TransformedServerBuilder`` step (the wrappers QuPath makes on import or from scripts)."""
    from jpype import JArray, JDouble, JInt
    from qupath.lib.images.servers import RotatedImageServer, TransformedServerBuilder
    from qupath.lib.regions import ImageRegion

    builder = TransformedServerBuilder(server)
    if step == "rotate":  # arg: ROTATE_90 | ROTATE_180 | ROTATE_270
        return builder.rotate(RotatedImageServer.Rotation.valueOf(arg)).build()
    if step == "flip":  # arg: HORIZONTAL | VERTICAL | BOTH (QuPath 0.7+)
        from qupath.lib.images.servers import FlippedImageServer

        return builder.flip(FlippedImageServer.Flip.valueOf(arg)).build()
    if step == "crop":  # arg: [x, y, width, height]
        x, y, w, h = (int(v) for v in arg)
        return builder.crop(ImageRegion.createInstance(x, y, w, h, 0, 0)).build()
    if step == "extract":  # arg: channel indices (a ``color`` server)
        return builder.extractChannels(JArray(JInt)([int(c) for c in arg])).build()
    if step == "concat":  # arg: ignored; the server's channels twice (a ``channels`` server)
        from java.util import List as JList

        return builder.concatChannels(JList.of(server)).build()
    if step == "affine":  # arg: [m00, m10, m01, m11, m02, m12]
        from java.awt.geom import AffineTransform

        return builder.transform(AffineTransform(*(float(v) for v in arg))).build()
    if step == "deconvolve":  # arg: stain numbers (H&E default stains)
        from qupath.lib.color import ColorDeconvolutionStains

        stains = ColorDeconvolutionStains.makeDefaultColorDeconvolutionStains(
            ColorDeconvolutionStains.DefaultColorDeconvolutionStains.H_E)
        return builder.deconvolveStains(stains, JArray(JInt)([int(c) for c in arg])).build()
    if step == "offset":  # arg: offsets per channel (QuPath 0.6+: a ``normalized`` server)
        return builder.subtractOffset(JArray(JDouble)([float(v) for v in arg])).build()
    if step == "z_project":  # arg: MAX | MIN | MEAN | ... (QuPath 0.6+)
        from qupath.lib.images.servers import ZProjectedImageServer

        return builder.zProject(ZProjectedImageServer.Projection.valueOf(arg)).build()
    if step == "sparse":  # arg: [x, y, width, height] of the one region
        from qupath.lib.images.servers import SparseImageServer

        x, y, w, h = (int(v) for v in arg)
        return SparseImageServer.Builder().serverRegion(ImageRegion.createInstance(x, y, w, h, 0, 0), 1.0,
                                                        server).build()
    raise ValueError(f"unknown wrapping step {step!r}")


def make_project(request: dict[str, Any]) -> dict[str, Any]:
    from java.awt.image import BufferedImage
    from java.io import File
    from qupath.lib.images import ImageData
    from qupath.lib.images.servers import ImageServers
    from qupath.lib.projects import Projects

    folder = Path(request["path"])
    folder.mkdir(parents=True, exist_ok=True)  # QuPath takes a name with a dot for a file, not a folder
    project = Projects.createProject(File(str(folder)), BufferedImage)
    answers = []
    for spec in request["entries"]:
        uri = File(spec["image"]).toURI()
        support = ImageServers.getImageSupport(uri, *[str(a) for a in spec.get("import_args", [])])
        if support is None or support.getBuilders().isEmpty():
            raise ValueError(f"QuPath cannot open {spec['image']}")
        builder = support.getBuilders().get(0)
        if spec.get("save_data", True):
            server = builder.build()
            for step, arg in spec.get("wrap", []):
                server = _wrap(server, step, arg)
            entry = project.addImage(server.getBuilder())
            entry.saveImageData(ImageData(server))
        else:
            entry = project.addImage(builder)
        entry.setImageName(spec.get("name", Path(spec["image"]).name))
        answers.append({"id": str(entry.getID())})
    project.syncChanges()
    return {"entries": answers}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    from java.nio.file import Paths
    from qupath.lib.io import PathIO

    op = request["op"]
    if op == "version":
        from qupath.lib.common import GeneralTools

        return {"version": str(GeneralTools.getVersion())}
    if op == "hierarchy":
        hierarchy = PathIO.readHierarchy(Paths.get(request["path"]))
        return {"objects": describe(hierarchy.getRootObject())["children"]}
    if op == "geojson":
        objects = PathIO.readObjects(Paths.get(request["path"]))
        return {"objects": [describe(o) for o in objects]}
    if op == "project":
        path = Path(request["path"])
        folder = path.parent if path.suffix == ".qpproj" else path
        before = _leave_as_found(folder)
        try:
            project = _project(path if path.suffix == ".qpproj" else path / "project.qpproj")
            entries = []
            for entry in project.getImageList():
                hierarchy = entry.readHierarchy()
                entries.append({"id": str(entry.getID()), "name": str(entry.getImageName()),
                                "uris": sorted(str(u) for u in entry.getURIs()),
                                "objects": describe(hierarchy.getRootObject())["children"]})
            return {"version": None if project.getVersion() is None else str(project.getVersion()),
                    "entries": entries}
        finally:
            for extra in set(_leave_as_found(folder)) - set(before):
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    if op == "make_project":
        return make_project(request)
    if op in ("region", "server"):
        import numpy as np

        path = Path(request["project"])
        folder = path.parent
        before = _leave_as_found(folder)
        try:
            project = _project(path)
            server = _entry(project, request["entry"]).readImageData().getServer()
            if op == "server":
                return {"type": str(server.getServerType()), "width": int(server.getWidth()),
                        "height": int(server.getHeight()), "channels": int(server.nChannels()),
                        "z": int(server.nZSlices()), "t": int(server.nTimepoints()),
                        "builder": str(server.getBuilder().getClass().getName())}
            from qupath.lib.regions import RegionRequest

            request_ = RegionRequest.createInstance(server.getPath(), float(request.get("downsample", 1.0)),
                                                    int(request["x"]), int(request["y"]), int(request["width"]),
                                                    int(request["height"]), int(request.get("z", 0)),
                                                    int(request.get("t", 0)))
            image = server.readRegion(request_)
            raster = image.getRaster()
            w, h, bands = int(raster.getWidth()), int(raster.getHeight()), int(raster.getNumBands())
            from jpype import JArray, JDouble

            # A typed buffer: with None, JPype cannot choose between the int/float/double overloads.
            planes = [np.asarray(raster.getSamples(0, 0, w, h, b, JArray(JDouble)(w * h)), dtype=np.float64)
                      .reshape(h, w) for b in range(bands)]
            np.save(request["out"], np.stack(planes, axis=-1))
            return {"shape": [h, w, bands]}
        finally:
            for extra in set(_leave_as_found(folder)) - set(before):
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    return {"error": f"unknown op {op!r}"}


def main() -> None:
    start(Path(sys.argv[1]))
    out = sys.stdout
    print(MARK + json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = handle(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - Java and Python errors both go back to the test as text
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(MARK + json.dumps(answer), file=out, flush=True)


if __name__ == "__main__":
    main()
