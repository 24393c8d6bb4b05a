"""Keep the model libraries' own noise off a normal run: import warnings and progress bars meant for notebooks.

timm warns about its deprecated module paths that mobile_sam imports and about mobile_sam re-registering TinyViT
models; sam2's video predictor draws a tqdm bar per propagation. None of them is anything a qpsam user can act on,
and they would interleave with qpsam's own progress on stderr.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterable, Iterator

__all__ = ["quiet_imports", "silence_sam2_bars"]

_IGNORED: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"Importing from timm\."),
    (UserWarning, r"Overwriting tiny_vit_\w+ in registry"),
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),  # sam2's transforms, built with its models
)


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Import or build model packages' objects without the library warnings in :data:`_IGNORED` (others still show)."""
    with warnings.catch_warnings():
        for category, message in _IGNORED:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def _no_bar(iterable: Iterable[Any], *args: Any, **kwargs: Any) -> Iterable[Any]:
    return iterable


def silence_sam2_bars(module: Any) -> None:
    """Replace the ``tqdm`` a sam2 module draws its bars with by a pass-through (qpsam reports progress itself)."""
    if getattr(module, "tqdm", None) is not None:
        module.tqdm = _no_bar
