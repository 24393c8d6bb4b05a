"""Model weights: the known checkpoints (:mod:`.data`), fetching and checking files (:mod:`.download`) and the
registry that says which file a model type loads (:mod:`.registry`). Nothing here imports torch."""

from __future__ import annotations

from .data import CATALOG, CHECKPOINTS, MOBILE_SAM_SHA256, MOBILE_SAM_SIZE, CatalogEntry, Checkpoint
from .download import Downloaded, direct_url, download, file_sha256, file_sha256_cached, verify_file
from .registry import (
    WeightsRecord,
    WeightsSource,
    default_weights,
    find_weights,
    is_url,
    list_weights,
    name_from_url,
    packaged_weights,
    register_weights,
    remove_weights,
    resolve_weights,
    weights_dir,
    weights_home,
    weights_sha256,
    weights_source,
)

__all__ = [
    "CATALOG",
    "CHECKPOINTS",
    "MOBILE_SAM_SHA256",
    "MOBILE_SAM_SIZE",
    "CatalogEntry",
    "Checkpoint",
    "Downloaded",
    "WeightsRecord",
    "WeightsSource",
    "default_weights",
    "direct_url",
    "download",
    "file_sha256",
    "file_sha256_cached",
    "find_weights",
    "is_url",
    "list_weights",
    "name_from_url",
    "packaged_weights",
    "register_weights",
    "remove_weights",
    "resolve_weights",
    "verify_file",
    "weights_dir",
    "weights_home",
    "weights_sha256",
    "weights_source",
]
