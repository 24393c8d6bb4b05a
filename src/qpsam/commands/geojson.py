"""``qpsam geojson``: check QuPath GeoJSON files and show the SAM prompts they hold."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click


def _parse_region(text: str, downsample: float):
    from qpsam.geometry import Region

    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected x,y,width,height, got {text!r}", param_hint="--region") from None
    return Region(x, y, w, h, downsample)


@click.group("geojson")
def geojson_group() -> None:
    """Read and check QuPath GeoJSON files."""


@geojson_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fix-invalid", is_flag=True, help="Repair invalid polygons instead of failing.")
def check(file: Path, fix_invalid: bool) -> None:
    """Read FILE as QuPath GeoJSON and count its objects by type and class."""
    from qpsam import geojson
    from qpsam.objects import walk

    objects = list(walk(geojson.read(file, on_invalid="fix" if fix_invalid else "error")))
    counts = Counter((o.object_type.value, o.class_name or "Unclassified") for o in objects)
    click.echo(f"{file}: {len(objects)} objects")
    for (kind, cls), n in sorted(counts.items()):
        click.echo(f"  {kind:<11} {cls:<24} {n}")


@geojson_group.command("prompts")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--region", required=True, help="Region in image pixels: x,y,width,height.")
@click.option("--downsample", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
def prompts(file: Path, region: str, downsample: float) -> None:
    """Print the SAM prompts (JSON) that the annotations in FILE give for a region."""
    from qpsam import geojson
    from qpsam.prompts import prompts_from_objects

    reg = _parse_region(region, downsample)
    out = [
        {"key": str(p.key), "box": p.box, "points": p.points, "labels": p.labels}
        for p in prompts_from_objects(geojson.read(file), reg)
    ]
    click.echo(json.dumps(out, indent=1))


def register(group: click.Group) -> None:
    group.add_command(geojson_group)
