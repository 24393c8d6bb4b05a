"""qpsam on a running QuPath, through QuPath's Py4J gateway (qupath-extension-py4j).

    from qpsam import live
    with live.connect(port=25333, token="...") as qupath:
        live.live_detect(qupath, live.EngineSpec("vit_t"), selected=True)

:func:`connect` opens the gateway; :meth:`LiveGateway.image` is the current image (or a project entry);
:meth:`LiveImage.objects` reads its selected objects or annotations; :func:`image_source` gives its pixels (from the
file when reachable, else through the gateway); :meth:`LiveImage.add_objects` writes results into QuPath's hierarchy;
:meth:`LiveGateway.refresh` redraws the viewer. :func:`live_detect` and :func:`live_automask` do all of it.
"""

from __future__ import annotations

from qpsam.errors import LiveError
from qpsam.jobs.automask import AutomaskOptions
from qpsam.jobs.detect import DetectOptions
from qpsam.jobs.executors import EngineSpec
from qpsam.live.gateway import DEFAULT_PORT, LiveGateway, LiveImage, connect
from qpsam.live.pixels import GatewaySource, image_source
from qpsam.live.run import LiveResult, live_automask, live_detect

__all__ = [
    "DEFAULT_PORT",
    "AutomaskOptions",
    "DetectOptions",
    "EngineSpec",
    "GatewaySource",
    "LiveError",
    "LiveGateway",
    "LiveImage",
    "LiveResult",
    "connect",
    "image_source",
    "live_automask",
    "live_detect",
]
