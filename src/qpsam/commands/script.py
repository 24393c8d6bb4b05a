"""``qpsam script ...`` prints Groovy scripts without running anything; ``qpsam history`` prints a project's.

Coordinates on the command line are full-resolution image pixels, as in QuPath.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import click

from ..sam import DEFAULT_MODEL, MODEL_TYPES, AutomaskParams, OutputType

_OUTPUTS = [o.value for o in OutputType]
_DEFAULTS = AutomaskParams()


def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise click.BadParameter(f"{what} needs {count} comma-separated numbers, got {text!r}")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"{what} needs numbers, got {text!r}") from None


def _corners(values: tuple[float, ...]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = values  # _numbers(..., 4, ...) checked the count
    return x1, y1, x2, y2


def _framed(text: str, count: int, what: str, default_frame: int) -> tuple[int, tuple[float, ...]]:
    """``[FRAME:]a,b,...`` -> (frame, numbers)."""
    frame = default_frame
    if ":" in text:
        head, text = text.split(":", 1)
        try:
            frame = int(head)
        except ValueError:
            raise click.BadParameter(f"{what}: frame before ':' must be an integer, got {head!r}") from None
    return frame, _numbers(text, count, what)


def _write(text: str, out: str | None) -> None:
    if out is None or out == "-":
        click.echo(text, nl=False)
        return
    from ..groovy import write_script

    click.echo(f"wrote {write_script(out, text)}", err=True)


def _run_options(func: Callable) -> Callable:
    """Options every replayed run has: server, model, weights, region, output file."""
    options = [
        click.option("--server", default="http://localhost:8000/sam/", show_default=True,
                     help="samapi server URL (the /sam/ prefix)."),
        click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help=f"Model type: {', '.join(MODEL_TYPES)}."),
        click.option("--weights-url", "--weights", "weights_url", default=None,
                     help="Weights URL the server loads (server default if unset)."),
        click.option("--verify-ssl", is_flag=True, help="Verify the server's SSL certificate."),
        click.option("--region", "region_text", required=True, metavar="X,Y,W,H",
                     help="Region in full-resolution pixels (whole numbers)."),
        click.option("--downsample", type=float, default=1.0, show_default=True, help="Downsample of the region."),
        click.option("--z", type=int, default=0, show_default=True, help="z-slice of the region."),
        click.option("--t", type=int, default=0, show_default=True, help="Time point of the region."),
        click.option("--names", is_flag=True, help="Name results 'SAM (Quality=...)' (as the job commands)."),
        click.option("--random-colors", is_flag=True, help="Random colours for unclassified results."),
        click.option("-o", "--out", default=None, metavar="FILE", help="Write the script to FILE (default: print)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _common(kw: dict) -> dict:
    from ..geometry import Region
    from ..objects import ImagePlane

    x, y, w, h = _numbers(kw.pop("region_text"), 4, "--region")
    region = Region(x, y, w, h, kw.pop("downsample"), ImagePlane(-1, kw.pop("z"), kw.pop("t")))
    return dict(
        region=region,
        model=kw.pop("model"),
        server_url=kw.pop("server"),
        weights_url=kw.pop("weights_url"),
        verify_ssl=kw.pop("verify_ssl"),
        set_name=bool(kw.pop("names")),
        random_color=bool(kw.pop("random_colors")),
    )


@click.group("script")
def script_group() -> None:
    """Print the Groovy script of a run (for QuPath's script editor) without running anything."""


@script_group.command("detect")
@_run_options
@click.option("--box", "boxes", multiple=True, metavar="X1,Y1,X2,Y2", help="Box prompt (repeatable); SAM3: positive.")
@click.option("--point", "points", multiple=True, metavar="X,Y", help="Foreground point; all form one prompt.")
@click.option("--bg-point", "bg_points", multiple=True, metavar="X,Y", help="Background point (repeatable).")
@click.option("--neg-box", "neg_boxes", multiple=True, metavar="X1,Y1,X2,Y2", help="SAM3 negative box.")
@click.option("--class", "class_name", default=None, help="Class of the prompts (and so of the results).")
@click.option("--text", default=None, help="SAM3 text prompt.")
@click.option("--reset-prompts", is_flag=True, help="SAM3: reset the server's prompts first.")
@click.option("--confidence", type=float, default=0.4, show_default=True, help="SAM3 confidence threshold.")
@click.option("--output", type=click.Choice(_OUTPUTS), default=OutputType.SINGLE.value, show_default=True)
def detect_command(**kw: Any) -> None:
    """Script for a prompt detection (SAM1 family, SAM2, SAM3 text and boxes)."""
    from shapely.geometry import MultiPoint, Point, box

    from ..groovy import DetectionSpec, detection_script
    from ..objects import PathClass, PathObject

    out = kw.pop("out")
    common = _common(kw)
    plane = common["region"].plane
    cls = PathClass(kw["class_name"]) if kw["class_name"] else None

    def rectangles(values: Sequence[str], what: str, path_class: PathClass | None) -> list[PathObject]:
        return [PathObject(box(*_corners(_numbers(v, 4, what))), path_class=path_class, plane=plane) for v in values]

    def points(values: Sequence[str], what: str, path_class: PathClass | None) -> list[PathObject]:
        coords = [_numbers(v, 2, what) for v in values]
        if not coords:
            return []
        return [PathObject(MultiPoint(coords) if len(coords) > 1 else Point(coords[0]), path_class=path_class,
                           plane=plane)]

    prompts = rectangles(kw["boxes"], "--box", cls) + points(kw["points"], "--point", cls)
    if common["model"].lower() == "sam3":
        if kw["points"] or kw["bg_points"]:
            raise click.UsageError("SAM3 takes boxes and text, not points")
        background = rectangles(kw["neg_boxes"], "--neg-box", PathClass("Ignore*"))
    else:
        if kw["neg_boxes"]:
            raise click.UsageError("--neg-box needs --model sam3")
        background = points(kw["bg_points"], "--bg-point", PathClass("Ignore*"))
    spec = DetectionSpec(
        **common,
        prompts=tuple(prompts),
        background=tuple(background),
        output=OutputType.parse(kw["output"]),
        text=kw["text"],
        reset_prompts=bool(kw["reset_prompts"]),
        confidence_threshold=float(kw["confidence"]),
    )
    _write(detection_script(spec), out)


@script_group.command("automask")
@_run_options
@click.option("--points-per-side", type=int, default=_DEFAULTS.points_per_side, show_default=True)
@click.option("--points-per-batch", type=int, default=_DEFAULTS.points_per_batch, show_default=True)
@click.option("--pred-iou-thresh", type=float, default=_DEFAULTS.pred_iou_thresh, show_default=True)
@click.option("--stability-score-thresh", type=float, default=_DEFAULTS.stability_score_thresh, show_default=True)
@click.option("--stability-score-offset", type=float, default=_DEFAULTS.stability_score_offset, show_default=True)
@click.option("--box-nms-thresh", type=float, default=_DEFAULTS.box_nms_thresh, show_default=True)
@click.option("--crop-n-layers", type=int, default=_DEFAULTS.crop_n_layers, show_default=True)
@click.option("--crop-nms-thresh", type=float, default=_DEFAULTS.crop_nms_thresh, show_default=True)
@click.option("--crop-overlap-ratio", type=float, default=_DEFAULTS.crop_overlap_ratio, show_default=True)
@click.option("--crop-n-points-downscale-factor", type=int, default=_DEFAULTS.crop_n_points_downscale_factor,
              show_default=True)
@click.option("--min-mask-region-area", type=int, default=_DEFAULTS.min_mask_region_area, show_default=True)
@click.option("--include-image-edge", is_flag=True, help="Keep masks touching the region's edge.")
@click.option("--output", type=click.Choice(_OUTPUTS), default=_DEFAULTS.output.value, show_default=True)
@click.option("--clear-current-objects", is_flag=True, help="The script removes every object of the image first.")
def automask_command(**kw: Any) -> None:
    """Script for an automatic mask generation with every parameter."""
    from ..groovy import AutomaskSpec, automask_script

    out = kw.pop("out")
    common = _common(kw)
    clear = bool(kw.pop("clear_current_objects"))
    kw["output"] = OutputType.parse(kw["output"])
    params = AutomaskParams(**kw)
    _write(automask_script(AutomaskSpec(**common, params=params, clear_current_objects=clear)), out)


@script_group.command("track")
@_run_options
@click.option("--axis", type=click.Choice(["z", "t"]), required=True, help="Track over z-slices or time points.")
@click.option("--from", "start", type=int, required=True, help="First z or t (included).")
@click.option("--to", "end", type=int, required=True, help="Last z or t (included).")
@click.option("--box", "boxes", multiple=True, metavar="[FRAME:]X1,Y1,X2,Y2",
              help="One tracked object per box, on FRAME (default --from).")
@click.option("--point", "points", multiple=True, metavar="[FRAME:]X,Y", help="One tracked object per point (SAM2).")
@click.option("--bg-point", "bg_points", multiple=True, metavar="[FRAME:]X,Y",
              help="Background point for every SAM2 object prompted on its frame.")
@click.option("--neg-box", "neg_boxes", multiple=True, metavar="[FRAME:]X1,Y1,X2,Y2", help="SAM3 negative box.")
@click.option("--text", default=None, help="SAM3 text prompt.")
def track_command(**kw: Any) -> None:
    """Script for SAM2/SAM3 tracking over z or t."""
    from ..groovy import SequenceSpec, VideoPrompt, sequence_script
    from ..sam import Prompt

    out = kw.pop("out")
    common = _common(kw)
    start = int(kw["start"])
    backgrounds: dict[int, list[tuple[float, ...]]] = {}
    for value in kw["bg_points"]:
        frame, xy = _framed(value, 2, "--bg-point", start)
        backgrounds.setdefault(frame, []).append(xy)
    if backgrounds and common["model"].lower() == "sam3":
        raise click.UsageError("SAM3 takes boxes and text, not points")

    def with_background(frame: int, points: tuple, labels: tuple) -> tuple[tuple, tuple]:
        bg = backgrounds.get(frame, [])
        return points + tuple(bg), labels + (0,) * len(bg)

    prompts: list[VideoPrompt] = []
    for value in kw["boxes"]:
        frame, b = _framed(value, 4, "--box", start)
        pts, labels = ((), ()) if common["model"].lower() == "sam3" else with_background(frame, (), ())
        prompts.append(VideoPrompt(len(prompts), frame, Prompt(box=_corners(b), points=pts, labels=labels)))
    for value in kw["points"]:
        frame, xy = _framed(value, 2, "--point", start)
        pts, labels = with_background(frame, (xy,), (1,))
        prompts.append(VideoPrompt(len(prompts), frame, Prompt(points=pts, labels=labels)))
    for value in kw["neg_boxes"]:
        frame, b = _framed(value, 4, "--neg-box", start)
        prompts.append(VideoPrompt(len(prompts), frame, Prompt(box=_corners(b)), negative=True))
    spec = SequenceSpec(
        **common, axis=str(kw["axis"]), start=start, end=int(kw["end"]),
        prompts=tuple(prompts), text=kw["text"],
    )
    _write(sequence_script(spec), out)


@script_group.command("import")
@click.argument("geojson")
@click.option("--remove", type=click.Choice(["same-id", "all", "none"]), default="same-id", show_default=True,
              help="Objects removed before importing: those with the file's ids, all, or none.")
@click.option("--nest", is_flag=True, help="Nest the imported objects by geometry (resolveHierarchy).")
@click.option("-o", "--out", default=None, metavar="FILE", help="Write the script to FILE (default: print).")
def import_command(geojson: str, remove: str, nest: bool, out: str | None) -> None:
    """Script importing GEOJSON (a file qpsam wrote) into the image open in QuPath."""
    from ..groovy import import_script

    _write(import_script(geojson, remove=remove, nest=nest), out)


@script_group.command("project-import")
@click.option("--folder", default="qpsam/geojson", show_default=True,
              help="Folder of the GeoJSON files (relative: inside the project's folder).")
@click.option("--file-name", default="{id}.geojson", show_default=True,
              help="File name per image: {id} = entry id, {name} = image name.")
@click.option("--remove", type=click.Choice(["same-id", "all", "none"]), default="same-id", show_default=True)
@click.option("--nest", is_flag=True, help="Nest the imported objects by geometry (resolveHierarchy).")
@click.option("-o", "--out", default=None, metavar="FILE", help="Write the script to FILE (default: print).")
def project_import_command(folder: str, file_name: str, remove: str, nest: bool, out: str | None) -> None:
    """Script for `QuPath script -p project.qpproj -s FILE` importing each image's GeoJSON."""
    from ..groovy import project_import_script

    _write(project_import_script(folder, file_name=file_name, remove=remove, nest=nest), out)


@click.command("history")
@click.argument("project", type=click.Path(exists=True))
@click.option("--image", default=None, help="Image id or name (needed when several images have runs).")
@click.option("--list", "list_images", is_flag=True, help="List the images with recorded runs instead.")
@click.option("-o", "--out", default=None, metavar="FILE", help="Write the script to FILE (default: print).")
def history_command(project: str, image: str | None, list_images: bool, out: str | None) -> None:
    """Print the command history of an image of PROJECT (folder or .qpproj) as one Groovy script."""
    import warnings

    from .. import history

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = history.read(project)
    for w in caught:
        click.echo(f"qpsam: warning: {w.message}", err=True)
    if list_images:
        counts: dict[str, int] = {}
        for r in records:
            counts[r.image_id] = counts.get(r.image_id, 0) + 1
        for image_id, name in history.images(records).items():
            click.echo(f"{image_id}\t{name or ''}\t{counts[image_id]} runs")
        return
    _write(history.history_script(project, image), out)


def register(group: click.Group) -> None:
    group.add_command(script_group)
    group.add_command(history_command)
