"""What a server process is configured with: one frozen value, built from arguments or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["Settings", "TOKEN_ENV", "DEVICES"]

TOKEN_ENV = "QPSAM_SERVER_TOKEN"
DEVICES = ("auto", "cpu", "cuda", "mps")

# Environment names for every setting, so that ``--workers N`` (one process per worker, started by uvicorn from
# an import string) gives each worker the same configuration.
_ENV_PREFIX = "QPSAM_SERVER_"


def _default_home() -> Path:
    root = os.environ.get("QPSAM_HOME")
    if root:
        return Path(root).expanduser() / "server"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "qpsam" / "server"


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Server configuration.

    ``token``: bearer token every request except version and health must present (``None``: open server).
    ``max_body_bytes``: largest request body; ``max_image_pixels``: largest decoded image (width x height);
    both answer 413 beyond. ``cache_bytes``: memory for cached image embeddings, shared by all requests.
    ``max_models``: models kept loaded at once (least recently used goes first). ``home``: where uploads,
    download progress and the cancel flag live (fixed names only; nothing there is named by a client).
    ``timing``: answer prompts with a ``Server-Timing`` header of their stages (:mod:`.timing`; for profiling).
    """

    device: str = "auto"
    token: str | None = None
    max_body_bytes: int = 256 * 1024 * 1024
    max_image_pixels: int = 64 * 1024 * 1024
    max_upload_frames: int = 2000
    cache_bytes: int = 1024 * 1024 * 1024
    max_models: int = 2
    home: Path | None = None
    upload_ttl_s: float = 24 * 3600.0
    max_automask_points: int = 2 * 1024 * 1024
    max_automask_crops: int = 341  # crop_n_layers up to 4
    automask_batch_bytes: int = 2 * 1024 * 1024 * 1024
    timing: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.token is not None and not self.token.strip():
            object.__setattr__(self, "token", None)
        for name in ("max_body_bytes", "max_image_pixels", "max_upload_frames", "max_models", "max_automask_points",
                     "max_automask_crops", "automask_batch_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"server setting {name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.cache_bytes) < 0:
            raise ValueError(f"server setting cache_bytes must be >= 0, got {self.cache_bytes!r}")
        object.__setattr__(self, "home", Path(self.home).expanduser() if self.home else _default_home())

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> "Settings":
        """Settings from ``QPSAM_SERVER_<NAME>`` variables (``QPSAM_SERVER_TOKEN`` for the token)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(_ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            if f.name in ("device", "token"):
                values[f.name] = raw
            elif f.name == "home":
                values[f.name] = Path(raw)
            elif f.name == "upload_ttl_s":
                values[f.name] = float(raw)
            elif f.name == "timing":
                values[f.name] = _flag(_ENV_PREFIX + f.name.upper(), raw)
            else:
                values[f.name] = int(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The inverse of :meth:`from_env` (for worker processes)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[_ENV_PREFIX + f.name.upper()] = str(value)
        return out

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]
