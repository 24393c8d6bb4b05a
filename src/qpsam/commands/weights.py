"""``qpsam weights``: list, register, show the catalog of, and locate model weights."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import click

from qpsam.types import Progress

__all__ = ["register"]


@contextmanager
def _progress_bar(label: str) -> Iterator[Progress]:
    """A byte progress bar on stderr, fed by qpsam's ``progress(done, total)`` callbacks."""
    bar: Any = None  # made at the first call, when the total is known
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=total or None, label=label, file=sys.stderr,
                                    show_pos=not total)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


@click.group("weights")
def weights_group() -> None:
    """Model weights: official defaults, fine-tuned catalog, registered files and the cache folder."""


@weights_group.command("list")
@click.option("--type", "model_type", help="Only this model type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def list_cmd(model_type: str | None, as_json: bool) -> None:
    """Registered weights (and weights shipped by installed packages)."""
    from qpsam.engines import weights as W
    from qpsam.sam import MODELS

    records: list[dict[str, Any]] = [r.to_json() for r in W.list_weights(model_type)]
    for t in [model_type] if model_type else list(MODELS):
        packaged = W.packaged_weights(t)
        if packaged is not None:
            records.append({"type": t, "name": "(package)", "source": str(packaged),
                            "sha256": W.MOBILE_SAM_SHA256, "size": packaged.stat().st_size, "file": str(packaged)})
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo(f"no weights registered under {W.weights_home()}")
        return
    for r in records:
        click.echo(f"{r['type']:<8} {r['name']:<24} {int(r['size']):>13,} {str(r['sha256'])[:12]}  {r['source']}")


@weights_group.command("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def catalog_cmd(as_json: bool) -> None:
    """Model types with their official weights, and fine-tuned weights registrable by name."""
    from qpsam.engines import weights as W
    from qpsam.sam import MODELS

    # One row per model type: its registry entry joined with its official checkpoint.
    models = [{"type": m.type, "family": m.family, "label": m.label, **vars(W.CHECKPOINTS[m.weights])}
              for m in MODELS.values()]
    if as_json:
        click.echo(json.dumps({
            "models": models,
            "catalog": [vars(e) for e in W.CATALOG.values()],
        }, indent=2))
        return
    click.echo("model types (default weights):")
    for m in models:
        click.echo(f"  {m['type']:<8} {m['label']:<22} {m['url']}")
    click.echo("fine-tuned weights (qpsam weights register NAME):")
    for e in W.CATALOG.values():
        click.echo(f"  {e.name:<22} {e.type:<6} {e.origin:<10} {e.description}")


@weights_group.command("register")
@click.argument("source")
@click.option("--type", "model_type", help="Model type (taken from the catalog for catalog names).")
@click.option("--name", help="Name to register under (default: the catalog name or the file's stem).")
@click.option("--sha256", help="Expected SHA-256 of the file.")
@click.option("--link", is_flag=True, help="Record a local file where it is instead of copying it into the cache.")
@click.option("--force", is_flag=True, help="Replace weights registered under the same name.")
def register_cmd(source: str, model_type: str | None, name: str | None, sha256: str | None, link: bool,
                 force: bool) -> None:
    """Register SOURCE (a catalog name, a URL or a local file) for a model type."""
    from pathlib import Path

    from qpsam.engines import weights as W
    from qpsam.errors import WeightsError

    entry = W.CATALOG.get(source)
    if entry is not None:
        if model_type and model_type != entry.type:
            raise WeightsError(f"catalog weights {source!r} are for {entry.type}, not {model_type}")
        model_type, name, source = entry.type, name or entry.name, entry.url
    if not model_type:
        raise click.UsageError("--type is needed unless SOURCE is a catalog name")
    if name is None:
        name = W.name_from_url(source) if W.is_url(source) else Path(source).stem
    with _progress_bar(f"{model_type}/{name}") as progress:
        record = W.register_weights(model_type, name, source, sha256=sha256, link=link, force=force,
                                    progress=progress)
    click.echo(f"registered {record.type}/{record.name}: {record.path} ({record.size:,} bytes, "
               f"sha256 {record.sha256})")


@weights_group.command("remove")
@click.argument("model_type")
@click.argument("name")
def remove_cmd(model_type: str, name: str) -> None:
    """Forget registered weights (deleting the cached copy, never a linked file)."""
    from qpsam.engines import weights as W

    W.remove_weights(model_type, name)
    click.echo(f"removed {model_type}/{name}")


@weights_group.command("path")
@click.argument("model_type", required=False)
@click.option("--weights", help="A registered or catalog name, URL or file (default: the type's default).")
@click.option("--no-download", is_flag=True, help="Fail instead of downloading missing weights.")
def path_cmd(model_type: str | None, weights: str | None, no_download: bool) -> None:
    """Print the cache folder, or the weights file a model type would load (downloading it if needed)."""
    from qpsam.engines import weights as W

    if model_type is None:
        click.echo(str(W.weights_home()))
        return
    with _progress_bar(f"{model_type} weights") as progress:
        path = W.resolve_weights(model_type, weights, allow_download=not no_download, progress=progress)
    click.echo(str(path))


def register(group: click.Group) -> None:
    """Add ``qpsam weights`` to the command line."""
    group.add_command(weights_group)
