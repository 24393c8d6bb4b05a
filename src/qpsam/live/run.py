"""The jobs on a live QuPath image: prompts from QuPath, SAM here, results back into QuPath's hierarchy.

The same object model, prompt rules, engines and job code as ``qpsam detect`` / ``qpsam automask`` on a project
(:func:`qpsam.jobs.detect.detect_image`, :func:`qpsam.jobs.automask.automask_region`); only the pixels' and objects'
way in and out differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from qpsam.engines.base import Engine
from qpsam.errors import LiveError
from qpsam.jobs.automask import AutomaskOptions, automask_region
from qpsam.jobs.detect import DetectOptions, detect_image, select_prompts
from qpsam.jobs.executors import EngineSpec, engine_for
from qpsam.live.gateway import LiveGateway
from qpsam.live.pixels import TILE, image_source
from qpsam.objects import ObjectType, PathObject
from qpsam.types import Progress

__all__ = ["LiveResult", "live_automask", "live_detect"]



@dataclass(frozen=True)
class LiveResult:
    """What a live run did: objects added to QuPath, prompt ids removed, and the route the pixels took."""

    image: str
    added: tuple[PathObject, ...]
    removed: tuple[Any, ...]
    prompts: int
    route: str
    route_reason: str
    seconds: float

    def summary(self) -> str:
        """One line for the CLI."""
        replaced = f", {len(self.removed)} prompt(s) replaced" if self.removed else ""
        return (f"{self.image}: {len(self.added)} object(s) added from {self.prompts} prompt(s){replaced}; "
                f"pixels from the {self.route} ({self.route_reason}); {self.seconds:.1f} s")


def _engine(engine: Engine | EngineSpec) -> Any:
    return engine_for(engine) if isinstance(engine, EngineSpec) else engine


def live_detect(gateway: LiveGateway, engine: Engine | EngineSpec = EngineSpec(), options: DetectOptions = DetectOptions(),
                *, selected: bool = True, image: str | None = None, route: str = "auto", tile: int = TILE,
                refresh: bool = True, progress: Progress | None = None) -> LiveResult:
    """Prompt detection on QuPath's current image (or project entry ``image``).

    Prompts are the selected objects (``selected``) or all annotations, by the rules of ``qpsam detect``; results are
    added to the live hierarchy, and the prompts removed unless ``options.keep_prompts``. ``progress(done, total)``
    is called per window.
    """
    start = time.perf_counter()
    live = gateway.image(image)
    objects = live.objects(selected=selected)
    found = select_prompts(objects, options)
    if not found.foreground:  # before a model is loaded
        kinds = "selected objects" if selected else "annotations"
        which = "" if options.prompts == "all" else f" of {options.prompts}"
        raise LiveError(f"image {live.name!r}: none of its {len(objects)} {kinds} is a prompt{which} (rectangle, "
                        "points or line annotations, not of an ignored class)")
    model = _engine(engine)
    source, used, why = image_source(live, route, tile)
    result = detect_image(model, source, objects, options, progress=progress, found=found)
    live.add_objects(result.added, replace=result.removed)
    if refresh and live.entry is None:
        gateway.refresh()
    return LiveResult(live.name, result.added, result.removed, result.prompts_used, used, why,
                      time.perf_counter() - start)


def live_automask(gateway: LiveGateway, engine: Engine | EngineSpec = EngineSpec(),
                  options: AutomaskOptions = AutomaskOptions(), *, selected: bool = False, image: str | None = None,
                  route: str = "auto", tile: int = TILE, refresh: bool = True,
                  progress: Progress | None = None) -> LiveResult:
    """Automatic masks on QuPath's current image: the whole image (plane z=0, t=0), or with ``selected`` inside each
    selected area annotation (on its plane). Results are added to the live hierarchy."""
    start = time.perf_counter()
    live = gateway.image(image)
    areas: list[tuple[tuple[float, float, float, float] | None, Any, Any]] = []
    if selected:
        chosen = [o for o in live.objects(selected=True)
                  if o.object_type is ObjectType.ANNOTATION and o.geometry.area > 0]
        if not chosen:
            raise LiveError(f"image {live.name!r}: no selected area annotation to segment inside")
        areas = [(o.geometry.bounds, o.geometry, o.plane) for o in chosen]
    else:
        from qpsam.objects import DEFAULT_PLANE

        areas = [(None, None, DEFAULT_PLANE)]
    model = _engine(engine)
    source, used, why = image_source(live, route, tile)
    added: list[PathObject] = []
    for i, (bounds, within, plane) in enumerate(areas):
        step = None if progress is None else (lambda d, t, i=i: progress(i * t + d, len(areas) * t))
        added += automask_region(model, source, bounds, options, plane, within, progress=step)
    live.add_objects(added)
    if refresh and live.entry is None:
        gateway.refresh()
    return LiveResult(live.name, tuple(added), (), len(areas), used, why, time.perf_counter() - start)
