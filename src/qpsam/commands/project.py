"""QuPath project commands: ``qpsam info``, ``qpsam export``, ``qpsam import``, ``qpsam new-project``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # the CLI imports the project layer only when a command runs
    from ..project import Backend

_BACKEND = click.option("--backend", type=click.Choice(["auto", "native", "paquo"]), default="auto",
                        show_default=True, help="native (pure Python) or paquo (needs QuPath); auto picks paquo "
                        "when QuPath is installed.")
_KEEP_VERSION = click.option("--keep-version/--upgrade-version", "keep_version", default=None,
                             help="paquo, on a project of another QuPath version: keep its version in "
                             "project.qpproj, or let QuPath write its own (auto keeps it).")


def _entry(project: Any, image: str | None) -> Any:
    if image is not None:
        return project.entry(image)
    if len(project) == 1:
        return project.images[0]
    raise click.UsageError(f"the project has {len(project)} images; choose one with --image ID or NAME")


def _entry_info(entry: Any) -> dict[str, Any]:
    counts = entry.counts()
    return {
        "id": entry.id,
        "name": entry.name,
        "uri": entry.uri,
        "width": entry.width,
        "height": entry.height,
        "channels": [c.name for c in entry.channels],
        "sizeZ": entry.size_z,
        "sizeT": entry.size_t,
        "pixelSize": list(entry.pixel_size) if entry.pixel_size else None,
        "imageType": entry.image_type,
        "description": entry.description,
        "metadata": dict(entry.metadata),
        "nObjects": counts["nObjects"] - 1,
        "objectTypeCounts": {k: v for k, v in counts["objectTypeCounts"].items() if k != "Root objects"},
        "annotationClassificationCounts": counts["annotationClassificationCounts"],
        "detectionClassificationCounts": counts["detectionClassificationCounts"],
    }


@click.command("info")
@click.argument("project", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--image", help="Only this image (id or name).")
@_BACKEND
def info(project: Path, as_json: bool, image: str | None, backend: Backend) -> None:
    """Show a project's images with their object counts by type and class."""
    from qpsam.project import open_project

    with open_project(project, "r", backend=backend) as proj:
        entries = [proj.entry(image)] if image is not None else proj.images
        items = [_entry_info(e) for e in entries]
        if as_json:
            click.echo(json.dumps({"project": str(proj.file), "version": proj.version, "backend": proj.backend,
                                   "images": items}, indent=1, ensure_ascii=False))
            return
        click.echo(f"{proj.file}: QuPath {proj.version}, {len(proj)} image(s)")
        for item in items:
            size = f"{item['width']} x {item['height']}, {len(item['channels'])} channel(s)"
            click.echo(f"[{item['id']}] {item['name']} ({size}, {item['imageType'] or 'type unset'}): "
                       f"{item['nObjects']} object(s)")
            for kind, n in item["objectTypeCounts"].items():
                click.echo(f"    {kind:<12} {n}")
            for title, key in (("annotations", "annotationClassificationCounts"),
                               ("detections", "detectionClassificationCounts")):
                for cls, n in item[key].items():
                    click.echo(f"    {title:<12} {cls:<24} {n}")


@click.command("export")
@click.argument("project", type=click.Path(exists=True, path_type=Path))
@click.option("--image", help="Image id or name (needed when the project has several images).")
@click.option("--all", "all_images", is_flag=True,
              help="Every image, one file per image, ID.geojson in the -o folder (default: qpsam/geojson in the "
                   "project folder), as `qpsam script project-import` reads them.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="GeoJSON file to write (default: standard output); with --all, a folder.")
@click.option("--nested", is_flag=True, help="Keep the hierarchy (childObjects) instead of QuPath's flat list.")
@click.option("--precision", type=click.IntRange(min=0), help="Round coordinates (QuPath writes 2 decimals).")
@_BACKEND
def export(project: Path, image: str | None, all_images: bool, output: Path | None, nested: bool,
           precision: int | None, backend: Backend) -> None:
    """Export an image's objects as QuPath GeoJSON (a FeatureCollection, like exportAllObjectsToGeoJson)."""
    from qpsam import geojson
    from qpsam.objects import walk
    from qpsam.project import open_project

    if all_images:
        if image is not None:
            raise click.UsageError("give either --image or --all, not both")
        _export_all(project, output, nested, precision, backend)
        return
    if output is not None and output.is_dir():
        raise click.BadParameter(f"{output} is a folder; name a file, or use --all to write one file per image",
                                 param_hint="-o")

    with open_project(project, "r", backend=backend) as proj:
        entry = _entry(proj, image)
        objects = entry.objects if nested else [o.replace(children=()) for o in walk(entry.objects)]
    if output is None:
        click.echo(geojson.dumps(objects, indent=2, precision=precision))
    else:
        geojson.write(output, objects, indent=2, precision=precision)
        click.echo(f"{output}: {len(list(walk(objects)))} object(s) from image {entry.id} ({entry.name})", err=True)


def _export_all(project: Path, folder: Path | None, nested: bool, precision: int | None, backend: Backend) -> None:
    from qpsam import geojson
    from qpsam.objects import walk
    from qpsam.project import open_project

    with open_project(project, "r", backend=backend) as proj:
        base = Path(proj.file).parent
        folder = folder if folder is not None else base / "qpsam" / "geojson"
        if folder.exists() and not folder.is_dir():
            raise click.BadParameter(f"{folder} is a file; with --all, -o names a folder", param_hint="-o")
        folder.mkdir(parents=True, exist_ok=True)
        total = 0
        for entry in proj.images:
            objects = entry.objects if nested else [o.replace(children=()) for o in walk(entry.objects)]
            path = folder / f"{entry.id}.geojson"
            geojson.write(path, objects, indent=2, precision=precision)
            n = len(list(walk(objects)))
            total += n
            click.echo(f"{path}: {n} object(s) from image {entry.id} ({entry.name})")
    inside = folder.resolve().is_relative_to(base.resolve())
    where = folder.resolve().relative_to(base.resolve()).as_posix() if inside else str(folder.resolve())
    click.echo(f"{len(proj.images)} file(s), {total} object(s); import them in QuPath with the script of "
               f"`qpsam script project-import --folder {where}`")


@click.command("import")
@click.argument("project", type=click.Path(exists=True, path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--image", required=True, help="Image id or name to add the objects to.")
@click.option("--replace", "replace_existing", is_flag=True,
              help="Objects whose id is already in the image replace the old ones (otherwise that is an error).")
@click.option("--clear", is_flag=True, help="Remove all of the image's objects first.")
@click.option("--fix-invalid", is_flag=True, help="Repair invalid polygons instead of failing.")
@_BACKEND
@_KEEP_VERSION
def import_(project: Path, file: Path, image: str, replace_existing: bool, clear: bool, fix_invalid: bool,
            backend: Backend, keep_version: bool | None) -> None:
    """Add the objects of a QuPath GeoJSON FILE to an image of PROJECT and save."""
    from qpsam import geojson
    from qpsam.objects import walk
    from qpsam.project import open_project

    objects = geojson.read(file, on_invalid="fix" if fix_invalid else "error")
    with open_project(project, "r+", backend=backend, keep_version=keep_version) as proj:
        entry = proj.entry(image)
        if clear:
            entry.set_objects([])
        known = {o.id for o in entry.all_objects()}
        if replace_existing:
            replacing = [o for o in objects if o.id in known]
            entry.replace_objects(replacing)
            objects = [o for o in objects if o.id not in known]
        entry.add_objects(objects)
        proj.save()
        total = len(entry.all_objects())
    click.echo(f"{file}: {len(list(walk(objects)))} object(s) added to image {entry.id} ({entry.name}); "
               f"it now has {total}")


@click.command("new-project")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--image-type", type=click.Choice(["BRIGHTFIELD_H_DAB", "BRIGHTFIELD_H_E", "BRIGHTFIELD_OTHER",
                                                 "FLUORESCENCE", "OTHER", "UNSET"]),
              help="Image type for every image (default: fluorescence for multichannel images, else unset).")
@click.option("--qupath-version", default=None,
              help="QuPath version to write the project for (default: 0.6.0 natively, QuPath's own with paquo).")
@_BACKEND
def new_project(directory: Path, images: tuple[Path, ...], image_type: str | None, qupath_version: str | None,
                backend: Backend) -> None:
    """Create a QuPath project in DIRECTORY (new or empty) from image files."""
    from qpsam.project import open_project

    with open_project(directory, "x", backend=backend, version=qupath_version) as proj:
        with click.progressbar(images, label="Adding images", file=sys.stderr) as bar:
            for image in bar:
                proj.add_image(image, image_type=image_type)
        proj.save()
        for entry in proj.images:
            click.echo(f"[{entry.id}] {entry.name}: {entry.width} x {entry.height}, {entry.n_channels} channel(s)")
    click.echo(f"{directory}: project with {len(images)} image(s)")


def register(group: click.Group) -> None:
    group.add_command(info)
    group.add_command(export)
    group.add_command(import_)
    group.add_command(new_project)
