"""``qpsam relocate``: fix a project's image paths after the images moved."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the CLI imports the project layer only when a command runs
    from ..project import Backend

__all__ = ["register"]


@click.command("relocate")
@click.argument("project", type=click.Path(exists=True, path_type=Path))
@click.option("--from", "old", type=click.Path(path_type=Path), help="The folder the images were in.")
@click.option("--to", "new", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder they are in now (same layout below it).")
@click.option("--search", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Find missing images by file name anywhere under this folder.")
@click.option("--backend", type=click.Choice(["auto", "native", "paquo"]), default="auto", show_default=True,
              help="native (pure Python) or paquo (needs QuPath).")
@click.pass_context
def relocate_command(ctx: click.Context, project: Path, old: Path | None, new: Path | None, search: Path | None,
                     backend: Backend) -> None:
    """Point PROJECT's images at their new place: --from OLD --to NEW, or --search DIR (or both)."""
    from qpsam.project import open_project
    from qpsam.project.relocate import relocate_images

    if (old is None) != (new is None):
        raise click.UsageError("give --from and --to together")
    if old is None and search is None:
        raise click.UsageError("give --from OLD --to NEW, or --search DIR")
    with open_project(project, "r+", backend=backend) as proj:
        result = relocate_images(proj, old, new, search)
        if result.moved:
            proj.save()
    for m in result.moved:
        click.echo(f"[{m.entry_id}] {m.name}: {m.old} -> {m.new}")
    click.echo(f"{project}: {len(result.moved)} image path(s) changed, {len(result.missing)} image(s) still missing")
    for line in result.missing:
        click.echo(f"  missing: {line}")
    if result.missing:
        ctx.exit(1)


def register(group: click.Group) -> None:
    group.add_command(relocate_command)
