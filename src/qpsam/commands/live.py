"""``qpsam live detect`` and ``qpsam live automask``: the jobs on the image open in a running QuPath (Py4J)."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from qpsam.commands.jobs import OUTPUTS, engine_options, engine_spec, tiling_options


def _gateway_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--port", default=25333, show_default=True, type=click.IntRange(1, 65535),
                     help="Port of QuPath's Py4J gateway."),
        click.option("--gateway-token", envvar="QPSAM_GATEWAY_TOKEN", default=None,
                     help="Token of QuPath's Py4J gateway (or QPSAM_GATEWAY_TOKEN); none if it has none."),
        click.option("--address", default="127.0.0.1", show_default=True, help="Host of QuPath's Py4J gateway."),
        click.option("--image", default=None, help="A project image (id or name) instead of the one in the viewer."),
        click.option("--route", type=click.Choice(["auto", "file", "gateway"]), default="auto", show_default=True,
                     help="Pixels: from the image file when reachable (auto), only the file, or only the gateway."),
        click.option("--tile", default=2048, show_default=True, type=click.IntRange(min=16),
                     help="Largest tile (pixels a side) read through the gateway in one call."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


class _Bar:
    """A click progress bar over windows or tiles."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, show_pos=True,
                                         file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)
        if done >= total:
            self.bar.__exit__(None, None, None)


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(connection settings, where to run) taken out of the command's options."""
    connection = {k: kwargs.pop(k) for k in ("port", "gateway_token", "address")}
    return connection, {k: kwargs.pop(k) for k in ("image", "route", "tile", "selected")}


def _connect(connection: dict[str, Any]) -> Any:
    import logging

    from qpsam.live import connect

    # the CLI reports a failed connection in one line; py4j would log a traceback for it as well
    logging.getLogger("py4j").setLevel(logging.CRITICAL)

    return connect(connection["port"], connection["gateway_token"], connection["address"])


@click.group("live")
def live() -> None:
    """Run SAM on the image open in QuPath, through QuPath's Py4J gateway (Extensions > Py4J)."""


@live.command("detect")
@_gateway_options
@engine_options
@click.option("--selected/--all-annotations", default=True, show_default=True,
              help="Prompts: the selected objects, or every annotation of the image.")
@click.option("--output", type=click.Choice(OUTPUTS), default="single", show_default=True, help="Which masks to keep per prompt.")
@click.option("--keep-prompts", is_flag=True, help="Keep the prompt objects (they are replaced by the results by default).")
@click.option("--object", "object_type", type=click.Choice(["annotation", "detection"]), default="annotation", show_default=True)
@click.option("--class", "path_class", default=None, help="Class of the results (default: the prompt's class).")
@click.option("--names", is_flag=True, help="Name results 'SAM (Quality=...)'.")
@click.option("--min-area", default=0.0, show_default=True, type=click.FloatRange(min=0), help="Drop pieces smaller than this (pixels²).")
@click.option("--simplify", default=None, type=click.FloatRange(min=0), help="Simplify outlines with this tolerance (pixels).")
def detect_command(**kwargs: Any) -> None:
    """Segment what the selected prompt annotations (rectangles, points, lines) point at, into QuPath's viewer."""
    from qpsam.jobs.detect import DetectOptions
    from qpsam.live import live_detect

    engine = engine_spec(kwargs)
    connection, where = _split(kwargs)
    options = DetectOptions(**kwargs)
    with _connect(connection) as gateway:
        result = live_detect(gateway, engine, options, progress=_Bar("windows"), **where)
    click.echo(result.summary())


@live.command("automask")
@_gateway_options
@engine_options
@click.option("--selected", is_flag=True, help="Only inside the selected area annotations (default: the whole image).")
@click.option("--points-per-side", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--pred-iou-thresh", default=0.88, show_default=True, type=click.FloatRange(0, 1))
@click.option("--stability-score-thresh", default=0.95, show_default=True, type=click.FloatRange(0, 1))
@tiling_options
def automask_command(**kwargs: Any) -> None:
    """Segment everything in QuPath's current image (or inside its selected annotations), into the viewer."""
    from qpsam.jobs.automask import AutomaskOptions
    from qpsam.live import live_automask
    from qpsam.sam import AutomaskParams

    engine = engine_spec(kwargs)
    connection, where = _split(kwargs)
    params = AutomaskParams(**{k: kwargs.pop(k) for k in ("points_per_side", "pred_iou_thresh", "stability_score_thresh")})
    options = AutomaskOptions(params=params, **kwargs)
    with _connect(connection) as gateway:
        result = live_automask(gateway, engine, options, progress=_Bar("tiles"), **where)
    click.echo(result.summary())


def register(group: click.Group) -> None:
    group.add_command(live)
