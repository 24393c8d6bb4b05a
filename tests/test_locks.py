"""The writer's lock: a stale lock (left by kill -9 or by a full disk) is taken over by exactly one of the writers
that find it at once, and no writer's objects are lost. Workers are long-lived processes that race round after
round, so 200 races stay a few seconds on two cores."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from lock_race import Holders, append_entry
from shapely.geometry import box

from qpsam.errors import ProjectError
from qpsam.objects import PathObject
from qpsam.project import open_project
from qpsam.project.base import ProjectLock

DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: never a live process
ROUNDS = 200
WORKERS = 2


def _stale(lock: Path, round_no: int) -> None:
    """What a crashed writer leaves, in turn: an old qpsam's lock, a new one's, an empty file (full disk), none."""
    kind = round_no % 4
    if kind == 0:
        lock.write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname()}))
    elif kind == 1:
        lock.write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname(), "flock": True}))
    elif kind == 2:
        lock.write_bytes(b"")
    else:
        lock.unlink(missing_ok=True)


def _lock_worker(project_file: str, index: int, start, done, holders: Holders) -> None:
    lock = ProjectLock(Path(project_file))
    ledger = Path(project_file).with_name("ledger.json")
    for n in range(ROUNDS):
        start.wait()
        append_entry(lock, ledger, f"{index}-{n}", holders, timeout_s=10)
        done.wait()


@pytest.fixture
def fast_dir(tmp_path: Path):
    """A folder in memory where there is one (/dev/shm): the races test the lock, not the disk's fsync."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="qpsam-locks-") as folder:
            yield Path(folder)
    else:
        yield tmp_path


def test_200_stale_lock_races_have_one_holder(fast_dir: Path) -> None:
    tmp_path = fast_dir
    project_file = tmp_path / "project.qpproj"
    project_file.write_text("{}")
    (tmp_path / "ledger.json").write_text("[]")
    lock = project_file.with_name("project.qpproj.lock")
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(WORKERS + 1), ctx.Barrier(WORKERS + 1)
    holders = Holders.shared(ctx)
    procs = [ctx.Process(target=_lock_worker, args=(str(project_file), i, start, done, holders))
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        outlived = 0
        for n in range(ROUNDS):
            _stale(lock, n)
            start.wait(timeout=60)
            done.wait(timeout=60)
            outlived += lock.exists()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    entries = json.loads((tmp_path / "ledger.json").read_text())
    lost = WORKERS * ROUNDS - len(entries)
    assert (holders.doubles.value, lost) == (0, 0), \
        f"{ROUNDS} races: {holders.doubles.value} double holders, {lost} entries lost"
    assert all(p.exitcode == 0 for p in procs)
    assert holders.taken.value == WORKERS * ROUNDS
    assert outlived == 0, f"{outlived} of {ROUNDS} lock files outlived their holders"


def _project(folder: Path) -> Path:
    tifffile.imwrite(folder / "img.tif", np.zeros((64, 64), np.uint8))
    with open_project(folder / "project", "x", backend="native") as project:
        project.add_image(folder / "img.tif")
    return folder / "project"


API_ROUNDS = 30
PER_WRITER = 2


def _api_worker(project: str, index: int, start, done, refusals) -> None:
    for n in range(API_ROUNDS):
        start.wait()
        objs = [PathObject(box(i, index, i + 1, index + 1), name=f"w{index}-r{n}-{i}") for i in range(PER_WRITER)]
        deadline = time.monotonic() + 30
        while True:
            try:
                with open_project(project, "r+", backend="native") as p:
                    p.images[0].add_objects(objs)
                break
            except ProjectError as exc:
                if "open for writing" not in str(exc) or time.monotonic() > deadline:
                    raise
                refusals.value += 1
                time.sleep(0.001)
        done.wait()


def test_races_through_the_api_lose_no_objects(tmp_path: Path, qupath_check) -> None:
    project = _project(tmp_path)
    lock = project / "project.qpproj.lock"
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(WORKERS + 1), ctx.Barrier(WORKERS + 1)
    refusals = ctx.Value("i", 0)
    procs = [ctx.Process(target=_api_worker, args=(str(project), i, start, done, refusals)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    lost = 0
    try:
        for n in range(API_ROUNDS):
            _stale(lock, n)
            start.wait(timeout=60)
            done.wait(timeout=60)
        with open_project(project, "r", backend="native") as p:
            names = {o.name for o in p.images[0].objects}
        expected = {f"w{w}-r{n}-{i}" for w in range(WORKERS) for n in range(API_ROUNDS) for i in range(PER_WRITER)}
        lost = len(expected - names)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    assert lost == 0, f"{lost} objects lost in {API_ROUNDS} races"
    assert refusals.value > 0  # the writers did meet
    qupath_check(project)


def test_a_killed_writer_never_blocks_the_next(tmp_path: Path) -> None:
    project = _project(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from qpsam.project import open_project; "
         f"p = open_project({str(project)!r}, 'r+', backend='native'); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ProjectError, match=f"open for writing by process {holder.pid}"):
            open_project(project, "r+", backend="native")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (project / "project.qpproj.lock").exists()  # the kill left it behind
    with open_project(project, "r+", backend="native") as p:
        p.images[0].add_objects([PathObject(box(1, 1, 5, 5))])
    assert not (project / "project.qpproj.lock").exists()


def test_an_empty_lock_file_from_a_full_disk_blocks_no_one(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "project.qpproj.lock").write_bytes(b"")
    with open_project(project, "r+", backend="native") as p:
        p.images[0].add_objects([PathObject(box(1, 1, 5, 5))])
    with open_project(project, "r", backend="native") as p:
        assert len(p.images[0].objects) == 1


def test_a_waiting_writer_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    project = _project(tmp_path)
    first = open_project(project, "r+", backend="native")
    try:
        with pytest.raises(ProjectError, match="open for writing"):
            open_project(project, "r+", backend="native", lock_timeout=0.2)
    finally:
        first.close()
    with open_project(project, "r+", backend="native", lock_timeout=1) as p:
        assert len(p) == 1
