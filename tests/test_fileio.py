"""Files are replaced safely: modes and groups kept, umask for new files, the backup replaced only once the new
file is on disk (tested on a small full filesystem), leftovers of killed writes cleaned up, summary.json never
left disagreeing with data.qpdata."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from shapely.geometry import box

from qpsam.errors import FileWriteError, ProjectError
from qpsam.fileio import atomic_write, remove_leftovers
from qpsam.objects import PathObject
from qpsam.project import open_project
from qpsam.project.qpdata import read_qpdata, summarize


def lmd_copy(lmd: Path, dst: Path) -> Path:
    """The sample project without its large GeoJSON exports (they do not matter here)."""
    shutil.copytree(lmd, dst, ignore=shutil.ignore_patterns("*.geojson"))
    return _writable(dst)


def _writable(folder: Path) -> Path:
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            (Path(root) / name).chmod(0o755)
        for name in files:
            (Path(root) / name).chmod(0o644)
    folder.chmod(0o755)
    return folder


def _umask(mask: int) -> int:
    return os.umask(mask)


def test_atomic_write_keeps_mode_and_group_and_new_files_follow_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    target.chmod(0o664)
    if os.geteuid() == 0:
        os.chown(target, -1, 100)
    atomic_write(target, "new", backup=True)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o664
    assert (tmp_path / "a.json.backup").read_text() == "old"
    if os.geteuid() == 0:
        assert target.stat().st_gid == 100
    old = _umask(0o027)
    try:
        atomic_write(tmp_path / "fresh.json", "x")
        atomic_write(tmp_path / "fresh.bin", b"\0")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "fresh.bin").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.json.backup", "fresh.bin", "fresh.json"]


def test_project_files_keep_their_modes(tmp_path: Path, lmd: Path, qupath_check) -> None:
    project = lmd_copy(lmd, tmp_path / "lmd")
    files = {project / "project.qpproj": 0o660, project / "data" / "1" / "data.qpdata": 0o664,
             project / "data" / "1" / "summary.json": 0o644}
    for path, mode in files.items():
        path.chmod(mode)
        if os.geteuid() == 0:
            os.chown(path, -1, 100)
    old = _umask(0o002)
    try:
        with open_project(project, "r+", backend="native") as p:
            entry = p.images[0]
            entry.remove_objects([entry.objects[-1]])
            entry.metadata["edited"] = "yes"
            p.path_classes = [*p.path_classes, "NewClass"]
    finally:
        os.umask(old)
    for path, mode in files.items():
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
        if os.geteuid() == 0:
            assert path.stat().st_gid == 100, path
    assert stat.S_IMODE((project / "data" / "1" / "data.qpdata.backup").stat().st_mode) == 0o664
    assert stat.S_IMODE((project / "classifiers" / "classes.json").stat().st_mode) == 0o664  # new: umask 002
    qupath_check(project)


def test_leftover_temporary_files_are_removed_by_the_next_writer(tmp_path: Path, lmd: Path) -> None:
    project = lmd_copy(lmd, tmp_path / "lmd")
    old = [project / "data" / "1" / ".data.qpdata.4242.deadbeef.tmp", project / ".project.qpproj.4242.beef.tmp"]
    for path in old:
        path.write_bytes(b"\0" * 1000)
        os.utime(path, (time.time() - 60, time.time() - 60))
    kept = project / "data" / "1" / "notes.tmp"  # not one of ours
    kept.write_text("mine")
    with open_project(project, "r", backend="native"):
        pass  # readers leave them: a writer may be using them
    assert all(p.exists() for p in old)
    with open_project(project, "r+", backend="native"):
        pass
    assert not any(p.exists() for p in old)
    assert kept.exists()
    assert remove_leftovers([project], older_than=0) == []


def test_summary_left_behind_by_a_kill_is_repaired_and_info_shows_the_data(tmp_path: Path, lmd: Path) -> None:
    project = lmd_copy(lmd, tmp_path / "lmd")
    data_dir = project / "data" / "1"
    stale = (data_dir / "summary.json").read_bytes()
    with open_project(project, "r+", backend="native") as p:
        entry = p.images[0]
        entry.remove_objects(entry.objects[-3:])
    # What a kill between the data's rename and the summary's rename leaves: the old summary, older than the data.
    (data_dir / "summary.json").write_bytes(stale)
    past = (data_dir / "data.qpdata").stat().st_mtime - 5
    os.utime(data_dir / "summary.json", (past, past))
    truth = summarize(read_qpdata(data_dir / "data.qpdata").objects)
    assert json.loads(stale)["hierarchy"] != truth

    out = subprocess.run([sys.executable, "-m", "qpsam.cli", "info", str(project), "--json", "--backend", "native"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)["images"][0]
    assert shown["nObjects"] == truth["nObjects"] - 1  # the root is not counted

    with open_project(project, "r+", backend="native"):
        pass  # nothing changed, yet the summary is put right
    assert json.loads((data_dir / "summary.json").read_text())["hierarchy"] == truth


# ---------------------------------------------------------------------------------------------------------------
# Full disk


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 3 MiB tmpfs mounted for the test (needs root and mount rights: skipped with the reason otherwise)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root (full-disk tests)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` until about ``leave`` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb") as fh:
        todo = max(0, free - leave)
        block = b"\0" * 65536
        try:
            while todo > 0:
                todo -= fh.write(block[:min(len(block), todo)])
        except OSError:
            pass
    return filler


def state(project: Path) -> dict[str, bytes | None]:
    data_dir = project / "data" / "1"
    names = ["data.qpdata", "data.qpdata.backup", "summary.json"]
    return {n: (data_dir / n).read_bytes() if (data_dir / n).exists() else None for n in names} | {
        "project.qpproj": (project / "project.qpproj").read_bytes()}


def test_a_full_disk_keeps_data_backup_and_summary(small_fs: Path, lmd: Path, qupath_check) -> None:
    project = lmd_copy(lmd, small_fs / "lmd")
    with open_project(project, "r+", backend="native") as p:  # a first save, so there is a backup to lose
        p.images[0].remove_objects([p.images[0].objects[-1]])
    size = (project / "data" / "1" / "data.qpdata").stat().st_size
    outcomes = []
    for leave in (0, 8192, size // 2, size - 8192, size + 8192, 2 * size + 65536):
        before = state(project)
        filler = fill(small_fs, leave)
        added = [PathObject(box(i, i, i + 5, i + 5), name=f"full-{leave}-{i}") for i in range(20)]
        try:
            with open_project(project, "r+", backend="native") as p:
                p.images[0].add_objects(added)
        except ProjectError as exc:
            outcomes.append("refused")
            assert isinstance(exc, FileWriteError) or "lock file" in str(exc), exc
            assert str(project) in str(exc)
            assert state(project) == before, f"{leave} bytes free: a failed save changed the project"
        else:
            outcomes.append("saved")
            after = state(project)
            assert after["data.qpdata.backup"] == before["data.qpdata"]
            names = {o.name for o in read_qpdata(project / "data" / "1" / "data.qpdata").objects}
            assert {o.name for o in added} <= names
        finally:
            filler.unlink()
        summary = json.loads((project / "data" / "1" / "summary.json").read_text())
        assert summary["hierarchy"] == summarize(read_qpdata(project / "data" / "1" / "data.qpdata").objects)
        assert not [p for p in project.rglob(".*.tmp")], f"{leave} bytes free: temporary files left"
        assert not (project / "project.qpproj.lock").exists()
    assert "refused" in outcomes and "saved" in outcomes, outcomes
    qupath_check(project)


def test_a_full_disk_gives_one_line_from_the_cli(small_fs: Path, lmd: Path, tmp_path: Path) -> None:
    project = lmd_copy(lmd, small_fs / "lmd")
    geojson = tmp_path / "cells.geojson"
    shutil.copy(lmd / "TD_01_verysmall_mIF.geojson", geojson)
    before = state(project)
    filler = fill(small_fs, 0)
    try:
        out = subprocess.run([sys.executable, "-m", "qpsam.cli", "import", str(project), str(geojson), "--image", "1",
                              "--backend", "native"],
                             capture_output=True, text=True, timeout=120)
    finally:
        filler.unlink()
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(project) in lines[0] and ("No space" in lines[0] or "disk" in lines[0]), lines[0]
    assert state(project) == before
    with open_project(project, "r+", backend="native"):  # and the next writer is not locked out
        pass
