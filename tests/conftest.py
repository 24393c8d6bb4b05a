"""Shared test fixtures: paths to the real QuPath-written samples beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

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
