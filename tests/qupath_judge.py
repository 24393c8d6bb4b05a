"""QuPath itself as the judge of what qpsam writes: its own reader, run from the harness in ``../shared/qupath``.

The harness (``../shared/qupath/install.sh``) lays out QuPath 0.5.1, 0.6.0 and 0.7.0 installations under
``$QPSAM_QUPATH_HOME`` (``tests/run.sh`` installs them in ``~/.cache/qpsam/qupath``). :class:`QuPathJudge` keeps one
process per version (``qupath_judge_driver.py``: JPype and QuPath's ``PathIO``/``ProjectIO``), so one pytest session
asks all three versions while the tests' own process may run paquo on another.

:func:`check_project` and :func:`check_qpdata` read a file with QuPath and with qpsam and compare every object:
type, class name and colour, name, colour, locked flag, measurements (NaN kept), plane, id, parent and children,
ROI class and geometry (within 1e-4 px). ``tests/conftest.py`` offers them as the ``qupath_check`` fixture.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

VERSIONS = ("0.5.1", "0.6.0", "0.7.0")
DEFAULT_VERSION = "0.7.0"
DRIVER = Path(__file__).resolve().parent / "qupath_judge_driver.py"
MARK = "@@qupath-judge "
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QPSAM_SHARED", REPO.parent / "shared"))
TOLERANCE = 1e-4
T = TypeVar("T")


def qupath_home() -> Path:
    """Where ``tests/run.sh`` installs the harness (``$QPSAM_QUPATH_HOME``, else ``~/.cache/qpsam/qupath``)."""
    env = os.environ.get("QPSAM_QUPATH_HOME")
    return Path(env) if env else Path.home() / ".cache" / "qpsam" / "qupath"


def qupath_dir(version: str) -> Path:
    return qupath_home() / f"QuPath-{version}"


def unavailable_reason(version: str) -> str | None:
    """Why QuPath ``version`` cannot be used here (None when it can)."""
    folder = qupath_dir(version)
    if not (folder / "lib" / "runtime" / "lib" / "server" / "libjvm.so").exists():
        return (f"QuPath {version} is not installed in {folder}: run `tests/run.sh`, or "
                f"{SHARED / 'qupath' / 'install.sh'} {qupath_home()}")
    try:
        import jpype  # noqa: F401
    except ImportError:
        return "JPype1 is not installed (pip install 'qpsam[paquo]')"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def groovy_jar() -> Path | None:
    env = os.environ.get("QPSAM_GROOVY_JAR")
    for path in ([Path(env)] if env else []) + [qupath_home() / "groovy" / "groovy-4.0.26.jar"]:
        if path.is_file():
            return path
    return None


class JudgeError(RuntimeError):
    """QuPath could not read a file (the message is QuPath's exception)."""


class QuPathJudge:
    """One QuPath version's reader in a subprocess; requests are answered one at a time."""

    def __init__(self, version: str) -> None:
        self.version = version
        self._lock = threading.Lock()
        env = dict(os.environ)
        env.pop("PAQUO_QUPATH_DIR", None)
        self._proc = subprocess.Popen([sys.executable, str(DRIVER), str(qupath_dir(version))],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, encoding="utf-8", env=env)
        ready = self._answer()
        if not ready.get("ready"):
            raise JudgeError(f"QuPath {version} judge did not start: {ready}")

    def _answer(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise JudgeError(f"QuPath {self.version} judge exited (code {self._proc.poll()})")

    def ask(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(request, default=str) + "\n")
            self._proc.stdin.flush()
            answer = self._answer()
        if "error" in answer:
            raise JudgeError(f"QuPath {self.version}: {answer['error']}")
        return answer

    def hierarchy(self, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        return self.ask(op="hierarchy", path=str(path))["objects"]

    def project(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        return self.ask(op="project", path=str(path))

    def geojson(self, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        return self.ask(op="geojson", path=str(path))["objects"]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


# ------------------------------------------------------------------------------------------------------------
# Comparison: qpsam's objects against QuPath's reading of the same file


def _argb(color: Sequence[int] | None) -> int | None:
    """qpsam's colour as QuPath's packed ARGB int (signed, as Java returns it)."""
    if color is None:
        return None
    r, g, b = color[:3]
    a = color[3] if len(color) > 3 else 255
    value = (a << 24) | (r << 16) | (g << 8) | b
    return value - (1 << 32) if value >= 1 << 31 else value


def _same_number(a: float, b: float | str) -> bool:
    b_value = float(b)
    return (math.isnan(a) and math.isnan(b_value)) or a == b_value or math.isclose(a, b_value, rel_tol=1e-6)


def _geometry_distance(ours: Any, wkb_hex: str) -> float:
    import shapely

    theirs = shapely.from_wkb(bytes.fromhex(wkb_hex))
    if ours.is_empty or theirs.is_empty:
        return 0.0 if ours.is_empty == theirs.is_empty else math.inf
    return float(shapely.hausdorff_distance(ours, theirs))


def compare_object(ours: Any, theirs: Mapping[str, Any], where: str, problems: list[str],
                   tolerance: float = TOLERANCE) -> None:
    """Append to ``problems`` every field in which qpsam's ``PathObject`` differs from QuPath's reading."""
    from qpsam.objects import ObjectType

    def differ(field: str, a: Any, b: Any) -> None:
        problems.append(f"{where}: {field} differs: qpsam {a!r}, QuPath {b!r}")

    if str(ours.id) != theirs["id"]:
        differ("id", str(ours.id), theirs["id"])
    kind = ours.object_type.value if isinstance(ours.object_type, ObjectType) else str(ours.object_type)
    if kind != theirs["type"]:
        differ("type", kind, theirs["type"])
    name = None if ours.path_class is None else ours.path_class.name
    if name != theirs["class"]:
        differ("class", name, theirs["class"])
    if ours.path_class is not None and ours.path_class.color is not None \
            and _argb(ours.path_class.color) != theirs["class_color"]:
        differ("class colour", ours.path_class.color, theirs["class_color"])
    if ours.name != theirs["name"]:
        differ("name", ours.name, theirs["name"])
    if _argb(ours.color) != theirs["color"]:
        differ("colour", ours.color, theirs["color"])
    if bool(ours.locked) != theirs["locked"]:
        differ("locked", ours.locked, theirs["locked"])
    measurements = dict(ours.measurements)
    if list(measurements) != list(theirs["measurements"]) or not all(
            _same_number(measurements[k], theirs["measurements"][k]) for k in measurements):
        differ("measurements", measurements, theirs["measurements"])
    plane = [ours.plane.c, ours.plane.z, ours.plane.t]
    if plane != theirs.get("plane"):
        differ("plane", plane, theirs.get("plane"))
    if "wkb" in theirs:
        distance = _geometry_distance(ours.geometry, theirs["wkb"])
        if theirs["roi"] == "EllipseROI":
            # QuPath's ellipse geometry is its own polygonisation: the ellipse is its bounds.
            distance = max(abs(a - b) for a, b in zip(ours.geometry.bounds, theirs["bounds"]))
            if not ours.ellipse:
                differ("ellipse flag", ours.ellipse, theirs["roi"])
        if distance > tolerance:
            problems.append(f"{where}: geometry differs by {distance:.3g} px ({theirs['roi']})")
    if ours.nucleus is not None or "nucleus_wkb" in theirs:
        if ours.nucleus is None or "nucleus_wkb" not in theirs:
            differ("nucleus", ours.nucleus is not None, "nucleus_wkb" in theirs)
        elif _geometry_distance(ours.nucleus, theirs["nucleus_wkb"]) > tolerance:
            problems.append(f"{where}: nucleus geometry differs")
    compare_trees(ours.children, theirs["children"], f"{where} > ", problems, tolerance)


def compare_trees(ours: Sequence[Any], theirs: Sequence[Mapping[str, Any]], where: str, problems: list[str],
                  tolerance: float = TOLERANCE) -> None:
    """Match objects by id (parents and children included) and compare each pair."""
    by_id = {d["id"]: d for d in theirs}
    ours_ids = [str(o.id) for o in ours]
    missing = [i for i in ours_ids if i not in by_id]
    extra = [i for i in by_id if i not in set(ours_ids)]
    if missing:
        problems.append(f"{where}QuPath lacks {len(missing)} object(s), e.g. {missing[:3]}")
    if extra:
        problems.append(f"{where}QuPath has {len(extra)} object(s) qpsam lacks, e.g. {extra[:3]}")
    for obj in ours:
        theirs_obj = by_id.get(str(obj.id))
        if theirs_obj is not None:
            compare_object(obj, theirs_obj, f"{where}{obj.object_type.value} {obj.id}", problems, tolerance)


def roi_classes(theirs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Object id to QuPath's ROI class name, over a whole tree."""
    out: dict[str, str] = {}
    for d in theirs:
        if "roi" in d:
            out[d["id"]] = d["roi"]
        out.update(roi_classes(d["children"]))
    return out


def count(theirs: Iterable[Mapping[str, Any]]) -> int:
    return sum(1 + count(d["children"]) for d in theirs)


def _release(version: str | None) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in (version or "0.0").split(".")[:2])
    except ValueError:
        return (0, 0)
    return major, minor


class Judges:
    """The judges of every installed version, started on first use and closed at the end of the session."""

    def __init__(self, versions: Sequence[str] = VERSIONS) -> None:
        self.versions = tuple(versions)
        self._judges: dict[str, QuPathJudge] = {}

    def readers_of(self, written_for: str | None) -> tuple[str, ...]:
        """The versions expected to read a file written for QuPath ``written_for``: that release and newer ones
        (QuPath 0.5 cannot read a 0.7 project's flipped entries); the newest one when the file is newer still."""
        newer = tuple(v for v in self.versions if _release(v) >= _release(written_for))
        return newer or self.versions[-1:]

    def missing(self) -> dict[str, str]:
        return {v: r for v in self.versions if (r := unavailable_reason(v)) is not None}

    def __getitem__(self, version: str) -> QuPathJudge:
        if version not in self._judges:
            self._judges[version] = QuPathJudge(version)
        return self._judges[version]

    def _fresh_if_class_colours_differ(self, version: str, judge: Callable[[], tuple[list[str], T]]
                                       ) -> tuple[list[str], T]:
        """QuPath keeps one ``PathClass`` per name for the life of its JVM, with the colour of the first file that
        named it: a colour that differs may be an earlier file's. Ask a fresh JVM before calling it a difference."""
        found, value = judge()
        if any("class colour differs" in problem for problem in found):
            self._judges.pop(version).close()
            found, value = judge()
        return found, value

    def close(self) -> None:
        for judge in self._judges.values():
            judge.close()
        self._judges.clear()

    def check_qpdata(self, path: str | os.PathLike[str], expected: Sequence[Any] | None = None) -> int:
        """QuPath (every version) reads ``path`` to the objects qpsam reads from it (and to ``expected``)."""
        from qpsam.project.qpdata import read_qpdata

        data = read_qpdata(path)
        ours = data.objects
        problems: list[str] = []
        n = 0
        for version in self.readers_of(data.qupath_version):
            def judge(version: str = version) -> tuple[list[str], int]:
                found: list[str] = []
                theirs = self[version].hierarchy(path)
                compare_trees(ours, theirs, f"[QuPath {version}] {path}: ", found)
                if expected is not None:
                    compare_trees(expected, theirs, f"[QuPath {version} vs expected] {path}: ", found)
                return found, count(theirs)

            found, n = self._fresh_if_class_colours_differ(version, judge)
            problems += found
        if problems:
            raise AssertionError("QuPath reads the file differently:\n" + "\n".join(problems[:40]))
        return n

    def check_project(self, path: str | os.PathLike[str],
                      expected: Mapping[int, Sequence[Any]] | None = None) -> dict[int, int]:
        """QuPath (every version) loads the project: the same entries, and each entry's objects equal qpsam's."""
        from qpsam.project import qpproj
        from qpsam.project.qpdata import read_qpdata

        folder = Path(path)
        folder = folder.parent if folder.suffix == ".qpproj" else folder
        project = qpproj.read_json(folder / "project.qpproj", "project")
        ours_entries = {int(e["entryID"]): e for e in project.get("images", [])}
        problems: list[str] = []
        counts: dict[int, int] = {}
        for version in self.readers_of(project.get("version")):
            def judge(version: str = version) -> tuple[list[str], None]:
                found: list[str] = []
                loaded = self[version].project(folder / "project.qpproj")
                ids = [int(e["id"]) for e in loaded["entries"]]
                if sorted(ids) != sorted(ours_entries):
                    found.append(f"[QuPath {version}] {folder}: entries {sorted(ids)}, qpsam {sorted(ours_entries)}")
                for entry in loaded["entries"]:
                    entry_id = int(entry["id"])
                    data = folder / "data" / str(entry_id) / "data.qpdata"
                    ours = read_qpdata(data).objects if data.exists() else []
                    where = f"[QuPath {version}] {folder.name} entry {entry_id}: "
                    compare_trees(ours, entry["objects"], where, found)
                    if expected is not None and entry_id in expected:
                        compare_trees(expected[entry_id], entry["objects"], where + "(vs expected) ", found)
                    counts[entry_id] = count(entry["objects"])
                return found, None

            problems += self._fresh_if_class_colours_differ(version, judge)[0]
        if expected is not None:
            for entry_id in expected:
                if entry_id not in counts:
                    problems.append(f"{folder}: QuPath finds no entry {entry_id}")
        if problems:
            raise AssertionError("QuPath reads the project differently:\n" + "\n".join(problems[:40]))
        return counts
