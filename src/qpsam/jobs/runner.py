"""The one runner of the project jobs: targets, batch, ``--resume``, report, previews and Groovy files.

:func:`detect`, :func:`automask` and :func:`track` differ only in their per-image function (a :class:`Target` in,
a :class:`Change` out) and their parameters; :func:`run_job` does the rest the same way for all of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from qpsam.engines.base import Engine, LocalWeights, NamedModel
from qpsam.errors import JobError
from qpsam.fileio import safe_name
from qpsam.jobs.batch import Change, Inputs, Target, View, run_batch
from qpsam.jobs.executors import EngineSpec, Executor, LocalExecutor, engine_for, make_executor
from qpsam.jobs.preview import write_preview
from qpsam.jobs.report import RunReport
from qpsam.jobs.scripts import write_scripts
from qpsam.jobs.sources import ImageSource
from qpsam.jobs.targets import project_targets
from qpsam.project import ProjectRef
from qpsam.types import ImageProgress, StepProgress

__all__ = ["StepProgress", "channel_params", "engine_and_executor", "run_job", "spec_params", "steps",
           "write_previews"]

Work = Callable[[Target], Change]


def steps(step_progress: StepProgress | None, name: str, unit: str) -> Callable[[int, int], None] | None:
    """The per-unit progress of one image, for ``step_progress`` (None when nobody listens)."""
    if step_progress is None:
        return None
    return lambda done, total: step_progress(name, unit, done, total)


def engine_and_executor(engine: Engine | EngineSpec, executor: Any) -> tuple[Any, Executor]:
    """The engine the work runs on (a spec is loaded once, here, for a local run) and the executor."""
    ex = make_executor(executor)
    if isinstance(ex, LocalExecutor) and isinstance(engine, EngineSpec):
        return engine_for(engine), ex
    if not isinstance(ex, LocalExecutor) and not isinstance(engine, EngineSpec):
        raise JobError("a distributed executor needs an EngineSpec (workers build their own model), not an engine")
    return engine, ex


def spec_params(engine: Engine | EngineSpec) -> dict[str, Any]:
    """The engine's part of a run's parameters (report, history and ``--resume`` keys)."""
    if isinstance(engine, EngineSpec):
        precision = {} if engine.precision == "auto" else {"precision": engine.precision}  # old --resume keys hold
        return {"model": engine.model_type, "weights": engine.weights, "server": engine.server, **precision}
    return {"model": engine.model_type if isinstance(engine, NamedModel) else type(engine).__name__,
            "weights": str(engine.weights_path) if isinstance(engine, LocalWeights) else ""}


def channel_params(chosen: Sequence[Any] | None) -> dict[str, Any]:
    """The ``--channels`` part of a run's parameters."""
    # only present when given, so that runs without --channels keep their --resume keys
    return {"channels": [str(c) for c in chosen]} if chosen else {}


def write_previews(folder: str | os.PathLike[str], name: str, source: ImageSource, views: Sequence[View]) -> None:
    """One PNG per view of an image: ``<image name><label>-<n>.png``, n counting the views of one label."""
    from shapely.geometry import box

    def near(items: Sequence[Any], frame: Any) -> list[Any]:
        return [o for o in items if getattr(o, "geometry", o).intersects(frame)]

    counts: dict[str, int] = {}
    for view in views:
        n = counts[view.label] = counts.get(view.label, -1) + 1
        frame = box(*view.region.bounds)
        write_preview(Path(folder) / f"{safe_name(name + view.label)}-{n}.png", source.read_region(view.region),
                      view.region, near(view.objects, frame), near(view.foreground, frame),
                      near(view.background, frame), near(view.areas, frame))


def run_job(job: str, params: dict[str, Any], project: ProjectRef, images: Sequence[str] | None, work: Work, *,
            channels: Sequence[Any] | None = None, backend: str = "auto", keep_version: bool | None = None,
            check: Callable[[Target], None] | None = None, inputs: Inputs | None = None, resume: bool = False,
            progress: ImageProgress | None = None, debug: bool = False,
            groovy: str | os.PathLike[str] | None = None, report: str | os.PathLike[str] | None = None,
            preview: str | os.PathLike[str] | None = None) -> RunReport:
    """Run ``work`` on the chosen images of ``project`` and commit each image's change before the next starts.

    ``check`` looks at every target before any work starts; ``inputs`` (see :func:`run_batch`) is what the job
    reads from an image's objects, for ``--resume``. The report and the Groovy scripts are written when asked for,
    and each change's views are drawn into ``preview``.
    """
    def work_and_draw(target: Target) -> Change:
        change = work(target)
        if preview and change.views:
            write_previews(preview, target.name, target.source(), change.views)
        return change

    with project_targets(project, images, channels, backend=backend, keep_version=keep_version) as targets:
        if check is not None:
            for target in targets:
                check(target)
        out = run_batch(job, params, targets, work_and_draw, resume=resume, progress=progress, debug=debug,
                        inputs=inputs)
    if report:
        out.write(report)
    if groovy:
        write_scripts(groovy, out)
    return out
