"""A connection to a running QuPath through its Py4J gateway (qupath-extension-py4j), with py4j directly.

The calls are the extension's ``QuPathEntryPoint`` (which extends QuPath's scripting class ``QPEx``):
``getCurrentImageData``, ``getSelectedObjects``, ``toFeatureCollections``, ``toPathObjects``, ``getObjectIds``,
``getImageBytes`` and ``fireHierarchyUpdate``, the names QuPath's own Python client (qubalab) uses. Objects cross
the bridge as QuPath GeoJSON, in chunks; every py4j failure becomes a :class:`LiveError` that says what happened.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from qpsam import geojson
from qpsam.errors import LiveError
from qpsam.live.pixels import image_source
from qpsam.objects import PathObject

__all__ = ["DEFAULT_PORT", "LiveGateway", "LiveImage", "connect"]

#: py4j's and the QuPath extension's default port.
DEFAULT_PORT = 25333
#: Objects per GeoJSON chunk in either direction (keeps each string far below Java's and py4j's limits).
CHUNK = 1000
# py4j logs every failed connection with a traceback; qpsam reports it once, as a LiveError
logging.getLogger("py4j").addHandler(logging.NullHandler())
_START_HINT = "is QuPath running, with the gateway started (Extensions > Py4J > Start Py4J Gateway)?"


@contextlib.contextmanager
def _bridge(where: str, doing: str) -> Iterator[None]:
    """Turn py4j's errors into one-line :class:`LiveError` messages naming the gateway and the step."""
    from py4j.protocol import Py4JAuthenticationError, Py4JError, Py4JJavaError, Py4JNetworkError

    try:
        yield
    except Py4JAuthenticationError as exc:
        raise LiveError(f"QuPath's gateway at {where} refused the token while {doing}: "
                        "give the token shown in QuPath's gateway dialog") from exc
    except Py4JNetworkError as exc:
        raise LiveError(f"QuPath's gateway at {where} cannot be reached or went away while {doing}; {_START_HINT}") from exc
    except Py4JJavaError as exc:
        message = str(exc.java_exception) if exc.java_exception is not None else str(exc)
        raise LiveError(f"QuPath raised an error while {doing}: {message.splitlines()[0]}") from exc
    except Py4JError as exc:
        text = str(exc)
        if "Authentication error" in text:
            raise LiveError(f"QuPath's gateway at {where} needs a token (none or a wrong one was given) while {doing}") from exc
        raise LiveError(f"QuPath's gateway at {where} failed while {doing}: {text.splitlines()[0]}") from exc


def connect(port: int = DEFAULT_PORT, token: str | None = None, address: str = "127.0.0.1",
            read_timeout: float | None = None) -> "LiveGateway":
    """Connect to QuPath's Py4J gateway on ``address:port`` with its ``token`` (None when it has none).

    Raises :class:`LiveError` when nothing listens there or the token is refused.
    """
    try:
        from py4j.java_gateway import GatewayParameters, JavaGateway
    except ImportError as exc:
        raise LiveError("the live bridge needs py4j: pip install 'qpsam[live]'") from exc
    params = GatewayParameters(address=address, port=int(port), auth_token=token or None, auto_convert=True,
                               read_timeout=read_timeout)
    java = JavaGateway(gateway_parameters=params)
    live = LiveGateway(java, f"{address}:{port}")
    try:
        with live.call("connecting"):
            live.version = str(live.entry_point.getExtensionVersion())
    except LiveError:
        live.close()
        raise
    return live


class LiveGateway:
    """An open gateway: the current image (or a project entry) and the viewer refresh."""

    def __init__(self, java: Any, where: str) -> None:
        self.java = java
        self.where = where
        self.version = ""

    @property
    def entry_point(self) -> Any:
        return self.java.entry_point

    def call(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """A context in which py4j errors become :class:`LiveError` naming this gateway and ``doing``."""
        return _bridge(self.where, doing)

    def image(self, name: str | None = None) -> "LiveImage":
        """The image open in QuPath's viewer, or the project entry with id or name ``name``."""
        ep = self.entry_point
        if name is None:
            with self.call("reading the current image"):
                data = ep.getCurrentImageData()
            if data is None:
                raise LiveError(f"QuPath at {self.where} has no image open: open one in the viewer")
            return LiveImage(self, data, None)
        with self.call(f"finding project image {name!r}"):
            project = ep.getProject()
            if project is None:
                raise LiveError(f"QuPath at {self.where} has no project open, so there is no image {name!r}")
            entries = list(project.getImageList())
            found = [e for e in entries if str(e.getID()) == name] or [e for e in entries if str(e.getImageName()) == name]
            if not found:
                names = ", ".join(str(e.getImageName()) for e in entries[:10])
                raise LiveError(f"QuPath's project has no image {name!r} (images: {names})")
            entry = found[0]
            current = ep.getProjectEntry()
            if current is not None and str(current.getID()) == str(entry.getID()):
                return LiveImage(self, ep.getCurrentImageData(), None)
            return LiveImage(self, entry.readImageData(), entry)

    def refresh(self) -> None:
        """Ask QuPath to redraw: fire a hierarchy update on the current image (the viewer listens to it)."""
        with self.call("refreshing the viewer"):
            self.entry_point.fireHierarchyUpdate()

    def close(self) -> None:
        """Close the connection (QuPath's gateway keeps running)."""
        with contextlib.suppress(Exception):
            self.java.close()

    def __enter__(self) -> "LiveGateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Found:
    """Objects read from QuPath with the Java list they came from (to remove some of them later)."""

    objects: list[PathObject]
    java_list: Any


class LiveImage:
    """One image in QuPath: its server, its objects, and where results are written.

    ``entry`` is set for a project entry that is not the open image: results are then saved into it by QuPath.
    """

    def __init__(self, gateway: LiveGateway, image_data: Any, entry: Any | None) -> None:
        self.gateway = gateway
        self.image_data = image_data
        self.entry = entry
        with gateway.call("reading the image's server"):
            server = image_data.getServer()
            self.server = server
            meta = server.getMetadata()
            self.name = str(meta.getName() or server.getPath())
            self.width, self.height = int(server.getWidth()), int(server.getHeight())
            self.n_channels = int(server.nChannels())
            self.size_z, self.size_t = int(server.nZSlices()), int(server.nTimepoints())
            self.pixel_type = str(server.getPixelType().toString())
            self.is_rgb = bool(server.isRGB())
            self.uris = [str(u.toString()) for u in server.getURIs()]
        self._java_objects: dict[str, Any] = {}

    def read(self, downsample: float = 1.0, bounds: tuple[float, float, float, float] | None = None, z: int = 0,
             t: int = 0, route: str = "auto") -> Any:
        """Pixels of the image (or of ``bounds`` = x0, y0, x1, y1) at ``downsample`` on plane z, t: (H, W, C)."""
        from qpsam.geometry import Region
        from qpsam.objects import ImagePlane

        x0, y0, x1, y1 = bounds or (0.0, 0.0, float(self.width), float(self.height))
        source, _, _ = image_source(self, route)
        return source.read_region(Region(x0, y0, x1 - x0, y1 - y0, downsample, ImagePlane(z=z, t=t)))

    def _read(self, collection: Any, doing: str) -> _Found:
        ep = self.gateway.entry_point
        with self.gateway.call(doing):
            java_list = self.gateway.java.jvm.java.util.ArrayList(collection)
            chunks = list(ep.toFeatureCollections(java_list, CHUNK))
        objects: list[PathObject] = []
        for text in chunks:
            objects += geojson.loads(str(text))
        return _Found(objects, java_list)

    def objects(self, selected: bool = False) -> list[PathObject]:
        """The selected objects (``selected``), or all annotations, as qpsam objects (ids, classes, planes kept)."""
        with self.gateway.call("reading the objects"):
            hierarchy = self.image_data.getHierarchy()
            collection = (hierarchy.getSelectionModel().getSelectedObjects() if selected
                          else hierarchy.getAnnotationObjects())
        found = self._read(collection, "reading the selected objects" if selected else "reading the annotations")
        # the Java object behind each id is fetched only when it is replaced (one round trip each)
        self._java_objects.update({str(o.id): (found.java_list, i) for i, o in enumerate(found.objects)})
        if selected and not found.objects:
            raise LiveError(f"image {self.name!r} has no selected objects: select prompt annotations in QuPath "
                            "(or use all annotations)")
        return found.objects

    def add_objects(self, objects: Sequence[PathObject], replace: Sequence[Any] = ()) -> None:
        """Add ``objects`` to the image's hierarchy and remove the objects with ids ``replace`` (read before).

        The GeoJSON is turned into QuPath objects first; the hierarchy changes only after every chunk crossed, in
        one ``addObjects`` call, so a gateway lost on the way leaves it as it was.
        """
        missing = [str(i) for i in replace if str(i) not in self._java_objects]
        if missing:
            raise LiveError(f"image {self.name!r}: objects {missing[:3]} to replace were not read from QuPath")
        ep = self.gateway.entry_point
        with self.gateway.call(f"sending {len(objects)} object(s) to QuPath"):
            incoming = self.gateway.java.jvm.java.util.ArrayList()
            for start in range(0, len(objects), CHUNK):
                text = json.dumps(geojson.to_data(objects[start:start + CHUNK]), allow_nan=False)
                incoming.addAll(ep.toPathObjects(text))
            if int(incoming.size()) != len(objects):
                raise LiveError(f"QuPath made {incoming.size()} objects of the {len(objects)} sent")
            old = self.gateway.java.jvm.java.util.ArrayList()
            for i in replace:
                java_list, index = self._java_objects[str(i)]
                old.add(java_list.get(index))
            hierarchy = self.image_data.getHierarchy()
        with self.gateway.call(f"adding {len(objects)} object(s) to image {self.name!r}"):
            hierarchy.addObjects(incoming)
        if replace:
            try:
                with self.gateway.call(f"removing {len(replace)} prompt object(s) from image {self.name!r}"):
                    hierarchy.removeObjects(old, True)
            except LiveError as exc:
                # undo the addition where QuPath still answers, so that the image is as it was
                with contextlib.suppress(LiveError), self.gateway.call("undoing the addition"):
                    hierarchy.removeObjects(incoming, True)
                raise LiveError(f"{exc} (the added objects were taken out again where QuPath still answered)") from exc
        for i in replace:
            self._java_objects.pop(str(i), None)
        if self.entry is not None:
            with self.gateway.call(f"saving project image {self.name!r}"):
                self.entry.saveImageData(self.image_data)
