"""``qpsam demo``: the main job on the bundled nuclei image, with real weights, scored against ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from qpsam.engines import ENGINE_KINDS
from qpsam.sam import DEFAULT_MODEL


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("qpsam-demo"), show_default=True,
              help="Folder for the demo's project, previews, scripts and reports.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--weights", default=None, help="Weights name, file or URL (default: the model's default weights).")
@click.option("--engine", type=click.Choice(list(ENGINE_KINDS)), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--no-automask", is_flag=True, help="Skip the automatic-mask step (about a minute on a laptop CPU).")
@click.option("--points-per-side", default=16, show_default=True, type=click.IntRange(min=1))
def demo_command(out: Path, force: bool, model: str, weights: str | None, engine: str, device: str,
                 no_automask: bool, points_per_side: int) -> None:
    """Build a project from the bundled nuclei image, run detect and automask, and score them."""
    from qpsam.jobs.demo import run_demo
    from qpsam.jobs.executors import EngineSpec

    result = run_demo(out, engine=EngineSpec(model, weights, device, engine), automask=not no_automask,
                      points_per_side=points_per_side, force=force, progress=lambda m: click.echo(m, err=True))
    click.echo(f"project:          {result.project}")
    click.echo(f"detect:           {result.detected} objects from {result.prompts} box prompts in "
               f"{result.seconds_detect:.1f} s")
    click.echo(f"mean IoU vs GT:   {result.mean_iou:.3f} (the boxes themselves score {result.box_iou:.3f})")
    if result.automask_objects is not None:
        click.echo(f"automask:         {result.automask_objects} objects in {result.seconds_automask:.1f} s; "
                   f"precision {result.automask_precision:.2f}, recall {result.automask_recall:.2f} at IoU 0.5")
    if result.preview:
        click.echo(f"preview:          {result.preview}")
    click.echo(f"Groovy script:    {result.groovy}")


def register(group: click.Group) -> None:
    group.add_command(demo_command)
