"""``qpsam detect --executor dask://HOST:PORT`` on a real ``dask.distributed`` cluster: a scheduler and two workers
started as separate processes on loopback (``dask scheduler``, ``dask worker``), one of them killed mid-run.

The workers start in a folder of their own, so that paths which only make sense in the client's working directory
(the project, ``--weights``) fail there. They run without a nanny, so a killed worker stays dead and its task must
be retried on the other one. Small probes (:func:`_probe_loads`, :func:`_worker_state`) run inside the workers
through ``Client.run``: this folder is on the workers' ``PYTHONPATH`` for that.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box
from test_jobs_project import make_project, objects_of

from qpsam import history
from qpsam.cli import main
from qpsam.jobs import QUALITY, detect
from qpsam.objects import PathObject
from qpsam.project import open_project

distributed = pytest.importorskip("dask.distributed", reason="needs qpsam[dask]")

pytestmark = [pytest.mark.weights, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
CORNERS = [(0, 0), (320, 0), (0, 320), (320, 320)]  # four 192-pixel crops of the 512-pixel nuclei image
SIDE = 192  # make_project's crops


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


# ------------------------------------------------------------------------------------------------------------
# Probes that run inside the workers (Client.run imports this module there).

_LOADS: list[float] = []  # in a worker: when each model load started
_LOADING: list[int] = [0]  # in a worker: model loads in progress


def _probe_loads() -> int:
    """In a worker: count calls of qpsam.engines.load_engine from now on (every model load goes through it)."""
    import qpsam.engines as engines

    original = engines.load_engine
    if getattr(original, "_probed", False):
        return os.getpid()

    def counted(*args, **kwargs):
        _LOADS.append(time.time())
        _LOADING[0] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _LOADING[0] -= 1

    counted._probed = True  # type: ignore[attr-defined]
    engines.load_engine = counted
    return os.getpid()


def _worker_state(dask_worker) -> dict:
    """In a worker: its pid, the tasks it is executing, the tasks it computed, and its model loads."""
    log = list(dask_worker.state.log)
    computed = [str(e[0]) for e in log if len(e) == 7 and e[1] == "executing" and e[3] == "memory"]
    executing = [str(ts.key) for ts in dask_worker.state.tasks.values() if ts.state == "executing"]
    return {"pid": os.getpid(), "executing": executing, "computed": computed, "loads": len(_LOADS),
            "loading": _LOADING[0]}


# ------------------------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """A scheduler and workers, each a process of its own, and this test's own client to watch them."""

    folder: Path
    address: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)
    client: object = None

    def start(self, args: list[str], name: str, env: dict[str, str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=self.folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        proc.log = log  # type: ignore[attr-defined]
        self.processes.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.log.close()


@pytest.fixture
def cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on loopback: ephemeral ports, one thread each, no
    dashboard, no nanny (a killed worker stays dead), started in their own folder."""
    folder = tmp_path / "cluster"
    folder.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    c = Cluster(folder)
    try:
        scheduler_file = folder / "scheduler.json"
        c.start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                 str(scheduler_file)], "scheduler", env)
        deadline = time.monotonic() + 60
        while not (scheduler_file.is_file() and scheduler_file.stat().st_size):
            assert time.monotonic() < deadline, f"the scheduler did not start\n{c.logs()}"
            assert c.processes[0].poll() is None, f"the scheduler exited\n{c.logs()}"
            time.sleep(0.2)
        c.address = json.loads(scheduler_file.read_text())["address"]
        for i in range(2):
            c.start(["worker", c.address, "--name", f"w{i}", "--host", "127.0.0.1", "--nthreads", "1",
                     # a worker with MobileSAM peaks near 1.4 GB here; Dask pauses a worker at 80 % of its limit
                     "--memory-limit", "3GiB", "--no-dashboard", "--no-nanny"], f"worker{i}", env)
        c.client = distributed.Client(c.address, timeout="30s")
        try:
            c.client.wait_for_workers(2, timeout=90)
        except TimeoutError:
            pytest.fail(f"the workers did not join\n{c.logs()}")
        yield c
    finally:
        c.stop()


def _client_env() -> dict[str, str]:
    # The native project backend in the client, as in the local run (paquo reads pixels through QuPath's own
    # image servers, which is not what is compared here); the workers always read pixels natively.
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("PAQUO_QUPATH_DIR", None)
    return env


def _kill_a_worker_while_it_loads(c: Cluster, run: subprocess.Popen) -> dict:
    """Wait until a worker is executing a detection window while it loads the model, then SIGKILL it.

    Killing during the load (seconds, before the window is even encoded) makes sure that the task is still in
    flight when the worker dies, however slow the machine is; the state returned is the killed worker's.
    """
    deadline = time.monotonic() + 150
    while True:
        assert run.poll() is None, f"the run ended before a worker was seen loading the model\n{c.logs()}"
        assert time.monotonic() < deadline, f"no worker was seen loading the model\n{c.logs()}"
        for state in c.client.run(_worker_state).values():
            if state["loading"] and any(k.startswith("detect_window") for k in state["executing"]):
                os.kill(state["pid"], signal.SIGKILL)
                return state
        time.sleep(0.05)


def test_detect_on_a_dask_cluster_equals_the_local_run_and_survives_a_killed_worker(
        tmp_path, nuclei, mobile_sam, cluster) -> None:
    local = make_project(tmp_path / "local", nuclei, n_prompts=3, corners=CORNERS)
    make_project(tmp_path / "remote", nuclei, n_prompts=3, corners=CORNERS)
    with open_project(local, "r+", backend="native") as project:  # the same model in this process, image by image
        expected = detect(project, engine=mobile_sam)
    assert expected.ok and all(r.added for r in expected.images)

    # The weights as a path relative to the client's folder: the workers, started elsewhere, must still find them.
    (tmp_path / "mobile_sam.pt").symlink_to(mobile_sam.weights_path)
    pids = cluster.client.run(_probe_loads)
    code = "import sys; from qpsam.cli import main; sys.exit(main(sys.argv[1:]))"
    with open(tmp_path / "run.log", "wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-c", code, "detect", "remote/project", "--executor", f"dask://{cluster.address[6:]}",
             "--model", "vit_t", "--weights", "mobile_sam.pt", "--engine", "torch", "--device", "cpu",
             "--report", "report.json"],
            cwd=tmp_path, env=_client_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            killed = _kill_a_worker_while_it_loads(cluster, run)
            run.wait(timeout=240)
        finally:
            if run.poll() is None:
                run.kill()
    output = (tmp_path / "run.log").read_text(errors="replace")
    assert run.returncode == 0, f"{output}\n{cluster.logs()}"
    assert "detect: 4 image(s) done, 0 skipped, 0 failed" in output

    # The killed worker's window was computed again by the survivor, which loaded the model once for all windows.
    (survivor,) = cluster.client.run(_worker_state).values()
    assert survivor["pid"] != killed["pid"] and {survivor["pid"], killed["pid"]} == set(pids.values())
    windows = [k for k in survivor["computed"] if k.startswith("detect_window")]
    assert set(killed["executing"]) <= set(windows)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(windows) == sum(r["windows"] for r in report["images"]) == 4  # one window per image
    assert survivor["loads"] == 1  # once per worker, never per task

    # The objects equal the local run's, field by field (ids aside), each written once.
    got, want = objects_of(tmp_path / "remote" / "project"), objects_of(local)
    assert sorted(got) == sorted(want) == [f"crop{i}.tif" for i in range(4)]
    for name in want:
        assert len(got[name]) == len(want[name]) == 3, name  # results in, prompts out, nothing twice
        matched = [max(got[name], key=lambda o: iou(o.geometry, w.geometry)) for w in want[name]]
        assert len({g.id for g in matched}) == len(matched), name  # one to one
        for w, g in zip(want[name], matched):
            assert iou(g.geometry, w.geometry) > 0.98, name
            assert (g.object_type, g.path_class, g.name, g.color, g.plane, g.locked) == \
                (w.object_type, w.path_class, w.name, w.color, w.plane, w.locked)
            assert g.measurements.keys() == w.measurements.keys() == {QUALITY}
            assert g.measurements[QUALITY] == pytest.approx(w.measurements[QUALITY], abs=2e-3)
    records = history.read(tmp_path / "remote" / "project")
    assert sorted(r.image_name for r in records) == sorted(want)  # one record per image
    assert len({r.run_key for r in records}) == 1 and all(r.kind == "detect" for r in records)


def test_an_unreachable_scheduler_is_one_line_and_exit_code_1(tmp_path, nuclei, capsys) -> None:
    project = make_project(tmp_path, nuclei, n_prompts=1, corners=CORNERS)
    before = (project / "data" / "1" / "data.qpdata").read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # a loopback port that nobody listens on once closed
    code = main(["detect", str(project), "--executor", f"dask://127.0.0.1:{port}", "--engine", "torch"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1
    assert (project / "data" / "1" / "data.qpdata").read_bytes() == before
    assert not history.read(project)


def test_an_image_source_named_from_the_clients_folder_reads_the_same_in_a_workers_folder(
        tmp_path, nuclei, monkeypatch) -> None:
    from qpsam.geometry import Region
    from qpsam.jobs.targets import EntrySource

    make_project(tmp_path / "client", nuclei, n_prompts=1, corners=CORNERS)
    with open_project(tmp_path / "client" / "project", "r", backend="native") as project:
        entry = project.images[1]
        name, entry_id = entry.name, entry.id
    monkeypatch.chdir(tmp_path / "client")
    source = EntrySource("project", entry_id, name, SIDE, SIDE)  # as `qpsam detect project` names it
    region = Region(10, 20, 64, 48)
    here = source.read_region(region)
    travelled = pickle.dumps(EntrySource("project", entry_id, name, SIDE, SIDE))
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "worker")  # a worker started somewhere else
    assert np.array_equal(pickle.loads(travelled).read_region(region), here)
    assert here.shape == (48, 64, 3) and here.std() > 0  # real pixels, not an empty frame


@pytest.mark.parametrize("value", ["dask://", "dask://127.0.0.1", "dask://:8786", "dask://127.0.0.1:port",
                                   "dask://127.0.0.1:70000", "tcp://127.0.0.1:8786", "dask"])
def test_a_malformed_executor_is_one_line_naming_the_option(tmp_path, nuclei, capsys, value) -> None:
    project = make_project(tmp_path, nuclei, n_prompts=1, corners=CORNERS)
    before = (project / "data" / "1" / "data.qpdata").read_bytes()
    started = time.monotonic()
    assert main(["detect", str(project), "--executor", value, "--engine", "torch"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--executor" in err and repr(value) in err, err
    assert time.monotonic() - started < 5  # refused before any connection attempt
    assert (project / "data" / "1" / "data.qpdata").read_bytes() == before


def test_threads_of_a_worker_sharing_its_model_never_predict_on_each_others_image(mobile_sam, nuclei,
                                                                                  monkeypatch) -> None:
    """A worker started with ``--nthreads 2`` runs two units at once on its one model. Here the other unit sets
    its image at the worst moment: right after this unit's ``set_image``, before its ``predict``."""
    from qpsam.geometry import Region
    from qpsam.jobs.detect import detect_window
    from qpsam.jobs.sources import ArraySource
    from qpsam.prompts import PromptSet, prompts_from_objects
    from qpsam.sam import OutputType

    image, labels = nuclei
    region = Region(0, 0, SIDE, SIDE)
    mine, other = ArraySource(image[:SIDE, :SIDE], "mine"), ArraySource(image[-SIDE:, -SIDE:], "other")
    crop_labels = labels[:SIDE, :SIDE]
    boxes = []
    for v in np.unique(crop_labels)[1:4]:
        ys, xs = np.nonzero(crop_labels == v)
        boxes.append(PathObject(box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)))
    prompts = prompts_from_objects(PromptSet(tuple(boxes), ()), region)
    expected = detect_window(mobile_sam, mine, region, prompts, OutputType.SINGLE)
    detect_window(mobile_sam, other, region, prompts, OutputType.SINGLE)  # cached: the other unit is quick

    real_set_image = mobile_sam.set_image
    others: list[threading.Thread] = []

    def set_image_then_the_other_unit(pixels) -> None:
        real_set_image(pixels)
        if not others:
            others.append(threading.Thread(target=real_set_image, args=(other.read_region(region),)))
            others[0].start()
            others[0].join(timeout=2)  # done by then, unless it must wait for this unit

    monkeypatch.setattr(mobile_sam, "set_image", set_image_then_the_other_unit)
    got = detect_window(mobile_sam, mine, region, prompts, OutputType.SINGLE)
    others[0].join(timeout=60)
    assert [k for k, _ in got] == [k for k, _ in expected]
    for (_, got_shapes), (_, want_shapes) in zip(got, expected):
        assert len(got_shapes) == len(want_shapes) == 1
        assert iou(got_shapes[0][0], want_shapes[0][0]) > 0.999
        assert got_shapes[0][1] == pytest.approx(want_shapes[0][1], abs=1e-5)


def test_the_executors_client_does_not_become_the_processs_default_dask_client() -> None:
    from qpsam.jobs.executors import make_executor

    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as free:
        executor = make_executor(f"dask://{free.scheduler.address[len('tcp://'):]}")
        try:
            with pytest.raises(ValueError, match="No clients found"):
                distributed.default_client()  # a user's own dask code keeps its scheduler
        finally:
            executor.close()
