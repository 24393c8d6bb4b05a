"""Fault campaigns against qpsam's file handling: crash, race, full disk, corrupt files. Prints one table.

    python benchmarks/fault_campaign.py [--kills 27] [--races 200] [--variants 300] [--seed 1] [--only crash,race]

Each campaign feeds qpsam many inputs and sorts every outcome into one column:

- clean error: a ``QpsamError`` whose message names the file (what the CLI prints as one line, exit 1);
- traceback: any other exception (the CLI would print a raw Python error);
- hang: no answer within the time limit, or a project locked for good;
- silent wrong: an answer that is wrong without a word: impossible values read without a warning, a coercion, a
  write that should have been refused, a backup replaced by a failed write, a summary that disagrees with the
  data, two holders of one lock, temporary files left for good;
- objects lost: objects a writer was told were saved but that are not in the file afterwards.

The judges here are written independently of qpsam's own checks. Everything is bounded (per-input time limit,
fixed counts) and local; the full-disk campaign mounts a small tmpfs and is skipped, with the reason, where that
is not allowed. Other campaigns (the server's) add rows through ``CAMPAIGNS``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fault_table import Row, print_table

# The race campaign's writers are the lock test's (tests/lock_race.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lock_race import Holders, append_entry  # noqa: E402

LIMIT_S = 20  # per input


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int = LIMIT_S):
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def classify(row: Row, label: str, path: Path | str, fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run ``fn``; returns ('ok', value) or records a clean error, traceback or hang and returns its kind."""
    from qpsam.errors import QpsamError

    row.tried += 1
    try:
        with time_limit():
            return "ok", fn()
    except Hang:
        row.bad("hangs", label)
        return "hang", None
    except QpsamError as exc:
        if str(path) not in str(exc) and Path(path).name not in str(exc):
            row.bad("tracebacks", f"{label}: error does not name {path}: {exc}")
            return "traceback", exc
        row.clean += 1
        return "clean", exc
    except Exception as exc:  # noqa: BLE001 - what the campaign counts
        import traceback

        where = "; ".join(f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)[-3:])
        row.bad("tracebacks", f"{label}: {type(exc).__name__}: {exc} (at {where})")
        return "traceback", exc


# ---------------------------------------------------------------------------------------------------------------
# Shared fixtures


def make_project(folder: Path, size: int = 512) -> Path:
    """A native project with one size x size image (1 z, 1 t, 1 channel) and a few objects of each kind."""
    import tifffile
    from shapely.geometry import Point, box

    from qpsam.objects import ObjectType, PathClass, PathObject
    from qpsam.project import open_project

    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "img.tif", np.zeros((size, size), np.uint8))
    with open_project(folder / "project", "x", backend="native") as p:
        entry = p.add_image(folder / "img.tif")
        cell = PathObject(box(30, 30, 60, 60), object_type=ObjectType.CELL, nucleus=box(40, 40, 50, 50),
                          path_class=PathClass("Tumor", (200, 0, 0)), measurements={"Area": 900.0})
        entry.add_objects([
            PathObject(box(123.25, 77.5, 200.75, 150.125), name="box", children=(cell,)),
            PathObject(Point(5, 5).buffer(3), object_type=ObjectType.DETECTION, measurements={"x": 1.5}),
            PathObject(box(300, 300, 400, 420), name="other", path_class=PathClass("Stroma")),
        ])
    return folder / "project"


def impossible(objects: Any, size: int = 512) -> str | None:
    """The campaign's own judge: values a size x size, 1-plane image cannot hold."""
    import shapely

    from qpsam.objects import walk

    for obj in walk(objects):
        p = obj.plane
        if p.z != 0 or p.t != 0 or p.c not in (-1, 0):
            return f"{obj.id}: plane {p}"
        for geom in (obj.geometry, obj.nucleus):
            if geom is None:
                continue
            xy = shapely.get_coordinates(geom)
            if xy.size and (not np.isfinite(xy).all() or xy.min() < -size or xy.max() > 2 * size):
                return f"{obj.id}: coordinates {xy.min():.3g}..{xy.max():.3g}"
    return None


def names_in(project: Path) -> set[str]:
    from qpsam.objects import walk
    from qpsam.project.qpdata import read_qpdata

    return {o.name for o in walk(read_qpdata(project / "data" / "1" / "data.qpdata").objects) if o.name}


def summary_agrees(project: Path) -> bool:
    from qpsam.project.qpdata import read_qpdata, summarize

    data_dir = project / "data" / "1"
    summary = json.loads((data_dir / "summary.json").read_text())
    return summary.get("hierarchy") == summarize(read_qpdata(data_dir / "data.qpdata").objects)


def leftovers(project: Path) -> list[Path]:
    return [p for p in project.rglob(".*.tmp")]


# ---------------------------------------------------------------------------------------------------------------
# Crash: kill -9 a writer at random moments


WRITER = """
import sys, time
from shapely.geometry import box
from qpsam.objects import PathObject
from qpsam.project import open_project
project = sys.argv[1]
print("ready", flush=True)
n = 0
while True:
    with open_project(project, "r+", backend="native", lock_timeout=10) as p:
        p.images[0].add_objects([PathObject(box(i, n % 400, i + 3, n % 400 + 3), name=f"k{sys.argv[2]}-{n}-{i}")
                                 for i in range(25)])
    print(n, flush=True)
    n += 1
"""


def crash(args: argparse.Namespace, work: Path) -> Row:
    from qpsam.errors import ProjectError
    from qpsam.project import open_project

    row = Row("crash (kill -9 of a writer)")
    rng = random.Random(args.seed)
    from shapely.geometry import box

    from qpsam.objects import PathObject

    project = make_project(work / "crash")
    with open_project(project, "r+", backend="native") as p:  # a file large enough that kills land mid-write
        p.images[0].add_objects([PathObject(box(i % 500, i // 500, i % 500 + 1, i // 500 + 1),
                                            measurements={f"m{j}": float(j) for j in range(20)})
                                 for i in range(300)])
    saved: set[str] = set()
    stale_locks = stale_tmp = 0
    for k in range(args.kills):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(project), str(k)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 3.0))  # from the writer's start: anywhere in its open/add/save loop
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        saved |= {f"k{k}-{n}-{i}" for n in map(int, out.split()) for i in range(25)}
        stale_locks += (project / "project.qpproj.lock").exists()
        stale_tmp += bool(leftovers(project))
        row.tried += 1
        try:
            with time_limit():
                p = open_project(project, "r+", backend="native")  # no waiting: a stale lock must not block
                p.close()
        except Hang:
            row.bad("hangs", f"kill {k}: opening hung")
            continue
        except ProjectError as exc:
            row.bad("hangs", f"kill {k}: the project stays locked: {exc}")
            (project / "project.qpproj.lock").unlink(missing_ok=True)
            continue
        except Exception as exc:  # noqa: BLE001
            row.bad("tracebacks", f"kill {k}: {type(exc).__name__}: {exc}")
            continue
        try:
            missing = saved - names_in(project)
        except Exception as exc:  # noqa: BLE001
            row.bad("lost", f"kill {k}: data.qpdata unreadable: {exc}")
            row.lost += len(saved) - 1
            continue
        row.lost += len(missing)
        if missing:
            row.example(f"lost: kill {k}: {len(missing)} objects")
        if not summary_agrees(project):
            row.bad("wrong", f"kill {k}: summary.json disagrees with data.qpdata after the next writer")
        if leftovers(project):
            row.bad("wrong", f"kill {k}: temporary files left after the next writer: {leftovers(project)}")
    row.note = (f"{args.kills} kills, {len(saved)} objects confirmed saved; the kill left a lock file "
                f"{stale_locks} times and temporary files {stale_tmp} times, none blocked or stayed")
    return row


# ---------------------------------------------------------------------------------------------------------------
# Race: writers meeting at a stale lock


def _race_worker(project: str, index: int, rounds: int, start: Any, done: Any, holders: Holders) -> None:
    from shapely.geometry import box

    from qpsam.objects import PathObject
    from qpsam.project import open_project
    from qpsam.project.base import ProjectLock

    lock = ProjectLock(Path(project) / "project.qpproj")
    ledger = Path(project) / "ledger.json"
    for n in range(rounds):
        start.wait()
        if n % 5 == 4:  # every fifth round through the public API, with objects
            obj = PathObject(box(index, n % 500, index + 2, n % 500 + 2), name=f"w{index}-{n}")
            with open_project(project, "r+", backend="native", lock_timeout=30) as p:
                with holders.holding():
                    p.images[0].add_objects([obj])
        else:
            append_entry(lock, ledger, f"{index}-{n}", holders, timeout_s=30)
        done.wait()


def race(args: argparse.Namespace, work: Path) -> Row:
    row = Row("race (2 writers at a stale lock)")
    project = make_project(work / "race")
    (project / "ledger.json").write_text("[]")
    lock = project / "project.qpproj.lock"
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(3), ctx.Barrier(3)
    holders = Holders.shared(ctx)
    procs = [ctx.Process(target=_race_worker, args=(str(project), i, args.races, start, done, holders))
             for i in range(2)]
    for p in procs:
        p.start()
    try:
        for n in range(args.races):
            kind = n % 3
            if kind == 0:
                lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
            elif kind == 1:
                lock.write_bytes(b"")  # what a full disk left
            row.tried += 1
            try:
                start.wait(timeout=LIMIT_S)
                done.wait(timeout=LIMIT_S * 2)
            except Exception:  # noqa: BLE001 - a broken barrier: a worker hung or died
                row.bad("hangs", f"round {n}: a writer did not finish")
                break
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for p in procs:
        if p.exitcode != 0:
            row.bad("tracebacks", f"worker exit code {p.exitcode}")
    row.wrong += holders.doubles.value
    if holders.doubles.value:
        row.example(f"wrong: {holders.doubles.value} rounds with two lock holders")
    api_rounds = [n for n in range(args.races) if n % 5 == 4]
    ledger = set(json.loads((project / "ledger.json").read_text()))
    row.lost += sum(f"{i}-{n}" not in ledger for i in range(2) for n in range(args.races) if n % 5 != 4)
    names = names_in(project)
    row.lost += sum(f"w{i}-{n}" not in names for i in range(2) for n in api_rounds)
    row.note = (f"{args.races} rounds (every 5th through open_project with objects), stale lock: dead pid, "
                "empty file or none")
    return row


# ---------------------------------------------------------------------------------------------------------------
# Full disk


@contextlib.contextmanager
def small_fs(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        raise PermissionError("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        raise PermissionError(done.stderr.strip() or "mount failed")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    st = os.statvfs(folder)
    todo = max(0, st.f_bavail * st.f_frsize - leave)
    filler = folder / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb") as fh:
        with contextlib.suppress(OSError):
            while todo > 0:
                todo -= fh.write(b"\0" * min(65536, todo))
    return filler


def snapshot(project: Path) -> dict[str, bytes | None]:
    files = ["project.qpproj", "data/1/data.qpdata", "data/1/data.qpdata.backup", "data/1/summary.json"]
    return {f: (project / f).read_bytes() if (project / f).exists() else None for f in files}


def full_disk(args: argparse.Namespace, work: Path) -> Row:
    from shapely.geometry import box

    from qpsam import geojson, history
    from qpsam.objects import PathObject
    from qpsam.project import open_project

    row = Row("full disk (tmpfs, 12 fill levels x 5 operations)")
    try:
        mount = small_fs(work / "fs", "2m")
        fs = mount.__enter__()
    except PermissionError as exc:
        row.note = f"skipped: {exc}"
        return row
    try:
        project = make_project(fs / "p")
        big = [PathObject(box(i % 500, i // 500, i % 500 + 1, i // 500 + 1), name=f"b{i}") for i in range(300)]
        with open_project(project, "r+", backend="native") as p:
            p.images[0].add_objects(big)
        with open_project(project, "r+", backend="native") as p:  # so there is a backup to lose
            p.images[0].add_objects([PathObject(box(1, 1, 2, 2), name="first")])
        size = (project / "data" / "1" / "data.qpdata").stat().st_size
        levels = [0, 1024, 4096, 16384, 65536, size // 4, size // 2, size - 4096, size, size + 8192,
                  2 * size + 65536, 4 * size]
        n = 0

        def save_objects() -> None:
            with open_project(project, "r+", backend="native") as p:
                p.images[0].add_objects([PathObject(box(2, 2, 3, 3), name=f"full-{n}")])

        def import_geojson() -> None:
            src = fs / "import.geojson"
            with open_project(project, "r+", backend="native") as p:
                p.images[0].add_objects(geojson.read(src))

        def new_project() -> None:
            target = fs / f"new-{n}"
            with open_project(target, "x", backend="native") as p:
                p.add_image(fs / "img.tif")

        def export() -> None:
            geojson.write(fs / "export.geojson", [PathObject(box(0, 0, 9, 9), name=f"e{n}")] * 1)

        def append_history() -> None:
            history.append(project, history.make_record("qpsam", "1", run_key=f"key-{n}"))

        shutil.copy(project.parent / "img.tif", fs / "img.tif")
        operations = {"save": save_objects, "import": import_geojson, "new project": new_project,
                      "export": export, "history": append_history}
        for leave in levels:
            for name, op in operations.items():
                n += 1
                geojson.write(fs / "import.geojson", [PathObject(box(3, 3, 4, 4), name=f"imp-{n}")])
                before = snapshot(project)
                export_before = (fs / "export.geojson").read_bytes() if (fs / "export.geojson").exists() else None
                filler = fill(fs, leave)
                try:
                    kind, _ = classify(row, f"{name} with {leave} bytes free", fs, op)
                finally:
                    filler.unlink()
                label = f"{name}, {leave} bytes free"
                if kind == "clean":
                    if name in ("save", "import") and snapshot(project) != before:
                        row.bad("wrong", f"{label}: a failed write changed the project (backup or data)")
                    if name == "export" and (fs / "export.geojson").exists() and \
                            (fs / "export.geojson").read_bytes() != export_before:
                        row.bad("wrong", f"{label}: a failed export changed the file")
                elif kind == "ok":
                    if name in ("save", "import"):
                        expected = f"full-{n}" if name == "save" else f"imp-{n}"
                        if expected not in names_in(project):
                            row.lost += 1
                            row.examples.append(f"lost: {label}")
                        if snapshot(project)["data/1/data.qpdata.backup"] != before["data/1/data.qpdata"]:
                            row.bad("wrong", f"{label}: the backup is not the previous file")
                    if name == "history":
                        keys = [r.run_key for r in history.read(project)]
                        if f"key-{n}" not in keys:
                            row.lost += 1
                if name in ("save", "import") and not summary_agrees(project):
                    row.bad("wrong", f"{label}: summary.json disagrees with data.qpdata")
                if leftovers(project):
                    row.bad("wrong", f"{label}: temporary files left: {leftovers(project)}")
                if (project / "project.qpproj.lock").exists():
                    row.bad("hangs", f"{label}: lock file left behind")
                    (project / "project.qpproj.lock").unlink()
                shutil.rmtree(fs / f"new-{n}", ignore_errors=True)
        row.note = f"2 MiB tmpfs, data.qpdata {size // 1024} KiB, fill levels 0 B .. 4x the file"
    finally:
        mount.__exit__(None, None, None)
    return row


# ---------------------------------------------------------------------------------------------------------------
# Corrupt files


EXTREME_DOUBLES = [3.45e35, -1e20, float("nan"), float("inf"), -float("inf"), 1e308, 5e9]
EXTREME_FLOATS = [3.45e35, -1e20, float("nan"), float("inf"), -float("inf"), 3e38, 5e9]
EXTREME_INTS = [2**31 - 1, -(2**31), 25088, -1, 65536, 7]


def _variants_qpdata(original: bytes, rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    floats = [i for i in range(len(original) - 8)
              if original[i:i + 4] in {struct.pack(">f", v) for v in (123.25, 77.5, 200.75, 150.125)}]
    for _ in range(count):
        data = bytearray(original)
        how = rng.choice(["flip", "truncate", "double", "float", "int", "bytes", "float-coordinate"])
        if how == "flip":
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        elif how == "truncate":
            data = data[:rng.randrange(len(data))]
        elif how == "double":
            i = rng.randrange(len(data) - 8)
            data[i:i + 8] = struct.pack(">d", rng.choice(EXTREME_DOUBLES))
        elif how == "float":
            i = rng.randrange(len(data) - 4)
            data[i:i + 4] = struct.pack(">f", rng.choice(EXTREME_FLOATS))
        elif how == "float-coordinate" and floats:
            i = rng.choice(floats)
            data[i:i + 4] = struct.pack(">f", rng.choice(EXTREME_FLOATS))
        elif how == "int":
            i = rng.randrange(len(data) - 4)
            data[i:i + 4] = struct.pack(">i", rng.choice(EXTREME_INTS))
        else:
            i = rng.randrange(len(data))
            data[i:i + 16] = bytes(rng.randrange(256) for _ in range(16))
        out.append((how, bytes(data)))
    return out


def _corrupt_qpdata(row: Row, project: Path, rng: random.Random, count: int) -> None:
    from shapely.geometry import box

    from qpsam.errors import DataWarning
    from qpsam.objects import PathObject
    from qpsam.project import open_project

    data_file = project / "data" / "1" / "data.qpdata"
    original = data_file.read_bytes()
    for how, variant in _variants_qpdata(original, rng, count):
        data_file.write_bytes(variant)
        (project / "data" / "1" / "data.qpdata.backup").unlink(missing_ok=True)

        def read() -> tuple[Any, bool]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with open_project(project, "r", backend="native") as p:
                    objects = p.images[0].objects
                    p.images[0].counts()
            return objects, any(issubclass(w.category, DataWarning) for w in caught)

        kind, value = classify(row, f"data.qpdata ({how})", data_file, read)
        if kind != "ok":
            continue
        objects, warned = value
        why = impossible(objects)
        if why and not warned:
            row.bad("wrong", f"data.qpdata ({how}) read without a warning: {why}")
        # Writing: refused when the data is impossible; otherwise nothing may be lost.

        def write() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with open_project(project, "r+", backend="native") as p:
                    p.images[0].add_objects([PathObject(box(1, 1, 2, 2), name="added")])

        before = data_file.read_bytes()
        row.tried -= 1  # the write is part of the same input
        kind, _ = classify(row, f"write after data.qpdata ({how})", data_file, write)
        if kind == "clean":
            row.clean -= 1
            if data_file.read_bytes() != before:
                row.bad("wrong", f"({how}) a refused write changed data.qpdata")
        elif kind == "ok":
            if why:
                row.bad("wrong", f"({how}) impossible objects were written back: {why}")
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with open_project(project, "r", backend="native") as p:
                        ids = {o.id for o in p.images[0].all_objects()}
                from qpsam.objects import walk

                missing = [o for o in walk(objects) if o.id not in ids]
                row.lost += len(missing)
    data_file.write_bytes(original)


def _qpproj_variants(original: dict, rng: random.Random) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []

    def with_(label: str, change: Callable[[dict], None]) -> None:
        data = json.loads(json.dumps(original))
        change(data)
        out.append((label, json.dumps(data).encode()))

    for value in ["1", 1.5, True, None, -1, 2**31, [1], {"a": 1}]:
        with_(f"entryID={value!r}", lambda d, v=value: d["images"][0].__setitem__("entryID", v))
    with_("duplicate entry", lambda d: d["images"].append(dict(d["images"][0])))
    for key in ("serverBuilder", "imageName", "metadata", "description", "tags"):
        for value in ("text", 7, [1], {"x": 1}, True):
            with_(f"{key}={value!r}", lambda d, k=key, v=value: d["images"][0].__setitem__(k, v))
    for key, value in (("images", {}), ("images", "x"), ("version", 6), ("lastID", "3"), ("images", [1])):
        with_(f"{key}={value!r}", lambda d, k=key, v=value: d.__setitem__(k, v))
    text = json.dumps(original).encode()
    for _ in range(15):
        out.append(("truncated", text[:rng.randrange(len(text))]))
    out.append(("not UTF-8", b"\xff\xfe" + text))
    out.append(("deep nesting", b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
    out.append(("empty", b""))
    return out


def _corrupt_qpproj(row: Row, project: Path, rng: random.Random) -> None:
    from qpsam.project import open_project

    path = project / "project.qpproj"
    original_bytes = path.read_bytes()
    original = json.loads(original_bytes)
    for label, variant in _qpproj_variants(original, rng):
        path.write_bytes(variant)

        def read() -> list[tuple[int, str]]:
            with open_project(project, "r", backend="native") as p:
                return [(e.id, e.name) for e in p.images] + [(0, str(e.counts()["nObjects"])) for e in p.images]

        kind, _ = classify(row, f"project.qpproj ({label})", path, read)
        if kind == "ok":
            try:
                data = json.loads(variant)
                images = data.get("images", [])
                ids = [e.get("entryID") for e in images]
                typed = all(type(i) is int for i in ids) and len(set(ids)) == len(ids)
                kinds = all(isinstance(e.get(k), t) for e in images for k, t in
                            (("serverBuilder", dict), ("imageName", str)) if k in e)
            except Exception:  # noqa: BLE001
                typed = kinds = False
            if not (typed and kinds):
                row.bad("wrong", f"project.qpproj ({label}) accepted")
    path.write_bytes(original_bytes)


def _geojson_variants(rng: random.Random) -> list[tuple[str, bytes, dict | None]]:
    def feature(plane: Any = None, fid: str | None = None, coords: Any = None) -> dict:
        geometry: dict[str, Any] = {"type": "Polygon",
                                    "coordinates": coords or [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
        if plane is not None:
            geometry["plane"] = plane
        f: dict[str, Any] = {"type": "Feature", "geometry": geometry, "properties": {"objectType": "annotation"}}
        if fid:
            f["id"] = fid
        return f

    out: list[tuple[str, bytes, dict | None]] = []
    for key in ("c", "z", "t"):
        for value in (2.7, 2**31, 2**40, -5, "1", True, float("nan"), 1e300, [1]):
            plane = {"c": -1, "z": 0, "t": 0, key: value}
            text = json.dumps([feature(plane)]).encode()
            out.append((f"plane {key}={value!r}", text, plane))
    fid = str(uuid.UUID(int=rng.getrandbits(128)))
    out.append(("duplicate ids", json.dumps([feature(fid=fid), feature(fid=fid)]).encode(), None))
    out.append(("coordinates as text", json.dumps([feature(coords=[[["0", 0], [4, 0], [4, 4], [0, 0]]])]).encode(),
                None))
    out.append(("nan coordinates", b'[{"type":"Feature","geometry":{"type":"Polygon","coordinates":'
                                   b'[[[NaN,0],[4,0],[4,4],[0,0]]]},"properties":{}}]', None))
    good = json.dumps([feature() for _ in range(5)]).encode()
    for _ in range(10):
        out.append(("truncated", good[:rng.randrange(len(good))], None))
    out.append(("not UTF-8", b"\xff\xfe" + good, None))
    out.append(("deep nesting", b"[" * 100_000 + b"]" * 100_000, None))
    out.append(("bad gzip", b"\x1f\x8b\x08\x00" + bytes(rng.randrange(256) for _ in range(40)), None))
    return out


def _corrupt_geojson(row: Row, folder: Path, rng: random.Random) -> None:
    from qpsam import geojson

    path = folder / "input.geojson"
    for label, content, plane in _geojson_variants(rng):
        path.write_bytes(content)
        kind, objects = classify(row, f"GeoJSON ({label})", path, lambda: geojson.read(path))
        if kind != "ok":
            continue
        if plane is not None:
            got = objects[0].plane
            exact = all(type(plane[k]) is int and plane[k] == getattr(got, k) for k in "czt")
            if not exact or impossible(objects, size=2**31):
                row.bad("wrong", f"GeoJSON ({label}) read as {got}")
        elif label == "duplicate ids":
            row.bad("wrong", "GeoJSON with duplicate ids accepted")
        elif impossible(objects, size=2**31):
            row.bad("wrong", f"GeoJSON ({label}) read with impossible values")
    row.tried += 1
    try:
        geojson.loads("[]", on_invalid="bogus")  # type: ignore[arg-type]
        row.bad("wrong", "on_invalid='bogus' accepted")
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "GeoJSONError":
            row.clean += 1
        else:
            row.bad("tracebacks", f"on_invalid: {type(exc).__name__}")


def _corrupt_history(row: Row, project: Path) -> None:
    from qpsam import history

    path = history.history_path(project)
    for label, junk in (("not UTF-8", b'{"kind":"\xff\xfe"}'), ("torn", b'{"format":1,"ki'),
                        ("wrong types", b'{"kind":"a","image_id":"1","time":"t","qpsam_version":"x","params":5}'),
                        ("deep nesting", b"[" * 100_000), ("NUL bytes", b"\0" * 50)):
        path.unlink(missing_ok=True)
        history.append(project, history.make_record("qpsam", "1", run_key="before"))
        with path.open("ab") as fh:
            fh.write(junk + b"\n")
        history.append(project, history.make_record("qpsam", "1", run_key="after"))

        def read() -> list[str | None]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [r.run_key for r in history.read(project)]

        kind, keys = classify(row, f"history ({label})", path, read)
        if kind == "ok" and keys != ["before", "after"]:
            row.lost += 2 - len([k for k in keys if k in ("before", "after")])
            row.bad("wrong", f"history ({label}): read {keys}")


def corrupt(args: argparse.Namespace, work: Path) -> Row:
    row = Row("corrupt files (data.qpdata, project.qpproj, GeoJSON, history)")
    rng = random.Random(args.seed)
    project = make_project(work / "corrupt")
    _corrupt_qpdata(row, project, rng, args.variants)
    _corrupt_qpproj(row, project, rng)
    _corrupt_geojson(row, work, rng)
    _corrupt_history(row, project)
    row.note = f"{args.variants} data.qpdata variants (bit flips, truncation, extreme numbers), project.qpproj " \
               "types/ids/truncation/encoding/nesting, GeoJSON planes/ids/encoding/nesting, history lines"
    return row


CAMPAIGNS: dict[str, Callable[[argparse.Namespace, Path], Row]] = {
    "crash": crash,
    "race": race,
    "full-disk": full_disk,
    "corrupt-file": corrupt,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=27)
    parser.add_argument("--races", type=int, default=200)
    parser.add_argument("--variants", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default=",".join(CAMPAIGNS))
    args = parser.parse_args(argv)
    rows = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="qpsam-faults-") as tmp:
        for name in args.only.split(","):
            t0 = time.time()
            row = CAMPAIGNS[name](args, Path(tmp))
            row.note = (row.note + f"; {time.time() - t0:.0f} s").lstrip("; ")
            rows.append(row)
            print(f"{name}: done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    print()
    for r in rows:
        print(f"- {r.campaign}: {r.note}")
        for example in r.examples:
            print(f"    - {example}")
    print(f"\n{time.time() - started:.0f} s in all")
    bad = sum(r.failures for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
