"""``qpsam detect``, ``qpsam automask`` and ``qpsam track``: the jobs on project images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from qpsam.engines import ENGINE_KINDS
from qpsam.sam import DEFAULT_MODEL, DEFAULT_TRACK_MODEL, MODEL_TYPES, OutputType

OUTPUTS = [o.value for o in OutputType]


def engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose the model and where it runs (every job command has them; see :func:`engine_spec`)."""
    options = [
        click.option("--model", "model", default=None,
                     help=f"Model type: {', '.join(MODEL_TYPES)} "
                          f"[default: {DEFAULT_MODEL}; {DEFAULT_TRACK_MODEL} for track]."),
        click.option("--weights", default=None, help="Weights: a registered or catalog name, a file or a URL."),
        click.option("--server", default=None, help="Run on a samapi-compatible server at this URL instead of locally."),
        click.option("--token", envvar="QPSAM_TOKEN", default=None, help="Bearer token for --server (or QPSAM_TOKEN)."),
        click.option("--engine", type=click.Choice(list(ENGINE_KINDS)), default="auto", show_default=True,
                     help="Local engine: on the CPU auto picks OpenVINO, else ONNX Runtime, when installed."),
        click.option("--device", default="auto", show_default=True, help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True, help="Model arithmetic: auto is bf16 (or fp16) on CUDA and fp32 elsewhere."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def tiling_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The tiling and output options of automask (the project and the live command have them)."""
    options = [
        click.option("--tile-size", default=1024, show_default=True, type=click.IntRange(min=64),
                     help="Tile side in pixels at --downsample."),
        click.option("--overlap", default=128, show_default=True, type=click.IntRange(min=0),
                     help="Tile overlap; larger than the objects."),
        click.option("--downsample", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True)),
        click.option("--object", "object_type", type=click.Choice(["annotation", "detection"]), default="detection",
                     show_default=True),
        click.option("--class", "path_class", default=None, help="Class of the results."),
        click.option("--min-area", default=0.0, show_default=True, type=click.FloatRange(min=0)),
        click.option("--nested", type=click.Choice(["inner", "score"]), default="inner", show_default=True,
                     help="Of two nested masks (a nucleus and a clump of nuclei) keep the inner one, or the one "
                          "with the higher predicted quality."),
        click.option("--skip-background/--no-skip-background", default=True, show_default=True,
                     help="Skip tiles that a low-resolution read finds flat (empty glass, dark field)."),
        click.option("--background-contrast", default=10.0, show_default=True, type=click.FloatRange(min=0),
                     help="Tissue test: a tile is background when its brightest and darkest pixels at 1/8 "
                          "resolution differ by less than this, in 8-bit levels, in every channel."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _batch_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("project", type=click.Path(exists=True, path_type=Path)),
        click.option("--image", "images", multiple=True, help="Image id or name (repeatable)."),
        click.option("--all", "all_images", is_flag=True, help="Every image of the project (the default when no --image)."),
        click.option("--groovy", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Write the Groovy script that replays this run in QuPath."),
        click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Write a JSON report of the run (per image: objects, time, errors)."),
        click.option("--preview", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Write overlay PNGs of the results into this folder."),
        click.option("--resume", is_flag=True, help="Skip images already done with the same parameters."),
        click.option("--executor", default="local", show_default=True, help="local or dask://HOST:PORT."),
        click.option("--backend", type=click.Choice(["auto", "native", "paquo"]), default="auto", show_default=True,
                     help="Open the project natively (pure Python) or through QuPath (paquo); auto picks paquo "
                     "when QuPath is installed."),
        click.option("--keep-version/--upgrade-version", "keep_version", default=None,
                     help="paquo, on a project of another QuPath version: keep its version in project.qpproj, or "
                     "let QuPath write its own (auto keeps it)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def engine_spec(kwargs: dict[str, Any], default_model: str = DEFAULT_MODEL) -> Any:
    """The :class:`~qpsam.jobs.executors.EngineSpec` of :func:`engine_options`, taken out of a command's options."""
    from qpsam.jobs.executors import EngineSpec

    return EngineSpec(kwargs.pop("model") or default_model, kwargs.pop("weights"), kwargs.pop("device"),
                      kwargs.pop("engine"), kwargs.pop("server"), kwargs.pop("token"), precision=kwargs.pop("precision"))


def _common(kwargs: dict[str, Any], default_model: str = DEFAULT_MODEL) -> dict[str, Any]:
    engine = engine_spec(kwargs, default_model)
    images = list(kwargs.pop("images")) or None
    if kwargs.pop("all_images") and images:
        raise click.UsageError("give either --image or --all, not both")
    return dict(project=kwargs.pop("project"), engine=engine, images=images, groovy=kwargs.pop("groovy"), report=kwargs.pop("report"),
                preview=kwargs.pop("preview"), resume=kwargs.pop("resume"), executor=kwargs.pop("executor"))


_CHANNELS = click.option(
    "--channels", default=None, metavar="CH[:COLOUR],...",
    help="Render only these channels for SAM (fluorescence): names or numbers from 1, each with an optional colour "
         "(red, green, blue, yellow, cyan, magenta, white or #RRGGBB), e.g. DAPI:white or 1:white,3:green.")


def _run(job: Callable[..., Any], steps: bool = True, **kwargs: Any) -> Any:
    """Run a job with its progress on stderr, ended before the summary is printed."""
    from qpsam.commands.progress import JobProgress

    bar = JobProgress()
    try:
        return job(progress=bar, **({"step_progress": bar.step} if steps else {}), **kwargs)
    finally:
        bar.close()


def _finish(ctx: click.Context, report: Any) -> None:
    click.echo(report.summary())
    if not report.ok:
        ctx.exit(1)


@click.command("detect")
@_batch_options
@engine_options
@click.option("--output", type=click.Choice(OUTPUTS), default="single", show_default=True, help="Which masks to keep per prompt.")
@click.option("--prompts", default="all", show_default=True, help="all, or class:NAME for prompts of one class.")
@click.option("--keep-prompts", is_flag=True, help="Keep the prompt objects (they are removed by default).")
@click.option("--object", "object_type", type=click.Choice(["annotation", "detection"]), default="annotation", show_default=True)
@click.option("--class", "path_class", default=None, help="Class of the results (default: the prompt's class).")
@click.option("--names", is_flag=True, help="Name results 'SAM (Quality=...)'.")
@click.option("--random-colors", is_flag=True, help="Random colours for unclassified results.")
@click.option("--min-area", default=0.0, show_default=True, type=click.FloatRange(min=0), help="Drop pieces smaller than this (pixels²).")
@click.option("--simplify", default=None, type=click.FloatRange(min=0), help="Simplify outlines with this tolerance (pixels).")
@_CHANNELS
@click.option("--text", default=None, help="SAM3: find every object this phrase names (e.g. 'nucleus'); needs --model sam3.")
@click.option("--exemplars", is_flag=True,
              help="SAM3: the prompt rectangles (of --prompts) are examples and Ignore* rectangles counter-examples; "
                   "every similar object is found.")
@click.option("--confidence", default=0.4, show_default=True, type=click.FloatRange(0, 1),
              help="SAM3: drop objects found with a lower score.")
@click.pass_context
def detect_command(ctx: click.Context, **kwargs: Any) -> None:
    """Segment the objects that prompt annotations point at (rectangles, points, lines; '*' classes = background)."""
    from qpsam.jobs import detect
    from qpsam.jobs.detect import DetectOptions

    common = _common(kwargs)
    channels = kwargs.pop("channels")
    options = DetectOptions(**kwargs)
    report = _run(detect, options=options, channels=channels, debug=_debug(ctx), **common)
    _finish(ctx, report)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("debug"))


def _parse_region(text: str) -> Any:
    if text == "full":
        return None
    if text.startswith("annotation:"):
        return text
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter("expected full, annotation:CLASS or x,y,width,height", param_hint="--region") from None
    return (x, y, x + w, y + h)


@click.command("automask")
@_batch_options
@engine_options
@click.option("--region", default="full", show_default=True, help="full, annotation:CLASS (inside annotations of a class) or x,y,w,h.")
@click.option("--clip/--no-clip", default=True, show_default=True,
              help="With annotation:CLASS, cut objects at the annotation's outline (else keep them whole).")
@click.option("--z", "z", default=0, show_default=True, type=click.IntRange(min=0),
              help="z-slice to segment (with annotation:CLASS, each annotation's own plane is used).")
@click.option("--t", "t", default=0, show_default=True, type=click.IntRange(min=0),
              help="Time point to segment (with annotation:CLASS, each annotation's own plane is used).")
@click.option("--points-per-side", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--points-per-batch", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--pred-iou-thresh", default=0.88, show_default=True, type=click.FloatRange(0, 1))
@click.option("--stability-score-thresh", default=0.95, show_default=True, type=click.FloatRange(0, 1))
@click.option("--stability-score-offset", default=1.0, show_default=True, type=float)
@click.option("--box-nms-thresh", default=0.7, show_default=True, type=click.FloatRange(0, 1))
@click.option("--crop-n-layers", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--crop-nms-thresh", default=0.7, show_default=True, type=click.FloatRange(0, 1))
@click.option("--crop-overlap-ratio", default=512 / 1500, show_default=True, type=click.FloatRange(0, 1))
@click.option("--crop-n-points-downscale-factor", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--min-mask-region-area", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--output", type=click.Choice(OUTPUTS), default="multi-best", show_default=True)
@click.option("--include-image-edge", is_flag=True, help="Keep masks that span the whole tile.")
@tiling_options
@click.option("--simplify", default=None, type=click.FloatRange(min=0))
@_CHANNELS
@click.pass_context
def automask_command(ctx: click.Context, **kwargs: Any) -> None:
    """Segment everything in images (tiled, merged across tiles), optionally inside annotations of a class."""
    from qpsam.jobs import automask
    from qpsam.jobs.automask import AutomaskOptions
    from qpsam.sam import AutomaskParams

    common = _common(kwargs)
    from qpsam.objects import ImagePlane

    region = _parse_region(kwargs.pop("region"))
    plane = ImagePlane(-1, kwargs.pop("z"), kwargs.pop("t"))
    param_names = [f for f in AutomaskParams.__dataclass_fields__]
    params = AutomaskParams(**{k: kwargs.pop(k) for k in param_names})
    channels = kwargs.pop("channels")
    options = AutomaskOptions(params=params, **kwargs)
    report = _run(automask, options=options, region=region, plane=plane, channels=channels, debug=_debug(ctx),
                  **common)
    _finish(ctx, report)


@click.command("track")
@_batch_options
@engine_options
@click.option("--axis", type=click.Choice(["z", "t"]), required=True, help="Propagate through z-slices or time points.")
@click.option("--from", "start", type=click.IntRange(min=0), required=True, help="First plane (inclusive).")
@click.option("--to", "stop", type=click.IntRange(min=0), required=True, help="Last plane (inclusive).")
@click.option("--object", "object_type", type=click.Choice(["annotation", "detection"]), default="annotation", show_default=True)
@click.option("--keep-prompts", is_flag=True)
@click.pass_context
def track_command(ctx: click.Context, **kwargs: Any) -> None:
    """Propagate prompts through z or t with the SAM2 (or SAM3) video predictor: one object id per track."""
    from qpsam.jobs import TrackOptions, track

    common = _common(kwargs, DEFAULT_TRACK_MODEL)
    if kwargs["stop"] < kwargs["start"]:
        raise click.BadParameter("--to must be >= --from", param_hint="--to")
    report = _run(track, steps=False, options=TrackOptions(**kwargs), debug=_debug(ctx), **common)
    _finish(ctx, report)


def register(group: click.Group) -> None:
    for command in (detect_command, automask_command, track_command):
        group.add_command(command)
