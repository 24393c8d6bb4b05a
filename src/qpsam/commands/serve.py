"""``qpsam serve``: the samapi-compatible server (the QuPath extension and ``--server URL`` talk to it)."""

from __future__ import annotations

import os

import click

__all__ = ["register", "serve"]


def app_from_env() -> object:
    """Application factory for uvicorn workers: settings come from ``QPSAM_SERVER_*`` variables."""
    from qpsam.server import Settings, create_app

    return create_app(Settings.from_env())


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: all interfaces).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
    help="Where models run (auto: cuda, then mps, then cpu).",
)
@click.option(
    "--token", default=None, envvar="QPSAM_SERVER_TOKEN", show_envvar=True,
    help="Bearer token every request except version and health must carry.",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64),
    help="Processes; each loads its own models and cache (1 is best for one GPU).",
)
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--max-body-mb", default=256, show_default=True, type=click.IntRange(1), help="Largest request body.")
@click.option(
    "--max-image-mpx", default=64, show_default=True, type=click.IntRange(1), help="Largest image in megapixels."
)
@click.option("--cache-mb", default=1024, show_default=True, type=click.IntRange(0), help="Embedding cache size.")
@click.option(
    "--max-automask-points", default=2 * 1024 * 1024, show_default=True, type=click.IntRange(1),
    help="Most mask decodings one automask request may ask for (points per crop, summed over crops).",
)
@click.option(
    "--max-automask-crops", default=341, show_default=True, type=click.IntRange(1),
    help="Most crops (encoder runs) one automask request may ask for; 341 allows crop_n_layers up to 4.",
)
@click.option(
    "--automask-batch-mb", default=2048, show_default=True,
    type=click.IntRange(1), help="Memory for one batch of automask points (larger batches are split).",
)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--timing", is_flag=True, default=False,
    help="Answer each prompt with a Server-Timing header: milliseconds per stage (body read, parse, decoder, ...).",
)
def serve(
    host: str,
    port: int,
    device: str,
    token: str | None,
    workers: int,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    max_body_mb: int,
    max_image_mpx: int,
    cache_mb: int,
    max_automask_points: int,
    max_automask_crops: int,
    automask_batch_mb: int,
    log_level: str,
    timing: bool,
) -> None:
    """Serve SAM over HTTP with samapi's protocol.

    In QuPath's SAM extension set the server URL to http://HOST:PORT/sam/ (with a token:
    http://HOST:PORT/t/TOKEN/sam/). From qpsam: --server http://HOST:PORT/sam/.
    SIGTERM or Ctrl+C stops it within seconds: running model work is abandoned and requests answer 503.
    """
    import uvicorn

    from qpsam.server import Settings
    from qpsam.server.thread import GRACE_S

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    settings = Settings.from_env(
        device=device,
        token=token,
        max_body_bytes=max_body_mb * 1024 * 1024,
        max_image_pixels=max_image_mpx * 1024 * 1024,
        cache_bytes=cache_mb * 1024 * 1024,
        max_automask_points=max_automask_points,
        max_automask_crops=max_automask_crops,
        automask_batch_bytes=automask_batch_mb * 1024 * 1024,
        timing=True if timing else None,  # without the flag QPSAM_SERVER_TIMING decides
    )
    if host not in ("127.0.0.1", "localhost", "::1") and settings.token is None:
        click.echo(
            f"qpsam serve: warning: listening on {host} without a token; anyone who reaches this port can use it",
            err=True,
        )
    if workers > 1:
        click.echo(
            f"qpsam serve: {workers} workers each load their own models and embedding cache; "
            "SAM3 prompt state is per worker",
            err=True,
        )
    scheme = "https" if ssl_certfile else "http"
    click.echo(f"qpsam serve: {scheme}://{host}:{port}/sam/ (device {device})", err=True)
    common = dict(
        host=host,
        port=port,
        log_level=log_level,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=GRACE_S,
    )
    if workers == 1:
        from qpsam.server import create_app

        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    # Worker processes rebuild the app from the environment.
    os.environ.update(settings.to_env())
    uvicorn.run("qpsam.commands.serve:app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]


def register(group: click.Group) -> None:
    group.add_command(serve)
