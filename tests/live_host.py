"""A real Py4J gateway into QuPath's core for the tests of :mod:`qpsam.live` (``live_gateway.groovy`` in a JVM).

:class:`GatewayHost` starts the JVM of one harness QuPath version (0.6.0 or 0.7.0) with Groovy 4 and py4j's own jar,
on one image of a project, and waits until the gateway listens. ``open()`` switches to another image; ``stop()`` shuts the gateway down while the JVM and
its hierarchy stay; ``save()`` has QuPath save the image data into the project, for QuPath's reader to check.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from pathlib import Path

from qupath_judge import groovy_jar, qupath_dir

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "live_gateway.groovy"
VERSIONS = ("0.6.0", "0.7.0")


def py4j_jar() -> Path | None:
    """The jar the py4j wheel ships (``share/py4j/py4j*.jar`` under the environment's prefix)."""
    try:
        from py4j.java_gateway import find_jar_path
    except ImportError:
        return None
    found = find_jar_path()
    return Path(found) if found else None


def unavailable_reason(version: str) -> str | None:
    """Why a gateway on QuPath ``version`` cannot run here (None when it can)."""
    java = qupath_dir(version) / "lib" / "runtime" / "bin" / "java"
    if not java.exists():
        return f"QuPath {version} is not installed in {qupath_dir(version)} (tests/run.sh installs it)"
    if groovy_jar() is None:
        return "Groovy 4's jar is missing (tests/get-groovy.sh, or QPSAM_GROOVY_JAR)"
    if py4j_jar() is None:
        return "py4j is not installed (pip install 'qpsam[live]')"
    return None


class GatewayHost:
    """One JVM serving a Py4J gateway over QuPath ``version``'s core, for image ``image`` of ``project``."""

    def __init__(self, version: str, project: Path, image: str = "1", token: str | None = "test-token",
                 port: int = 0, timeout: float = 90.0) -> None:
        home = qupath_dir(version)
        main = "qpsam.harness.RunGroovy" if (home / "lib/app/harness-groovy-runner.jar").exists() else "groovy.ui.GroovyMain"
        classpath = os.pathsep.join([str(groovy_jar()), str(home / "lib" / "app" / "*"), str(py4j_jar())])
        command = [str(home / "lib/runtime/bin/java"), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                   "-Djava.awt.headless=true", "-cp", classpath, main, str(SCRIPT),
                   str(Path(project) / "project.qpproj" if Path(project).is_dir() else project), image, str(port),
                   token or "-"]
        self.version = version
        self.token = token
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        ready = self._expect("READY", timeout)
        self.port = int(ready.split()[1])

    def _pump_out(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_err(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self._stderr.append(line.rstrip("\n"))

    def _expect(self, word: str, timeout: float) -> str:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"gateway host: no {word} in {timeout} s; stderr:\n" + "\n".join(self._stderr[-30:])) from None
            if line is None:
                raise RuntimeError(f"gateway host ended before {word}; stderr:\n" + "\n".join(self._stderr[-30:]))
            if line.startswith(word):
                return line

    def _command(self, command: str, answer: str, timeout: float = 60.0) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._expect(answer, timeout)

    def stop(self) -> None:
        """Shut the gateway down; the JVM and the image's hierarchy stay."""
        self._command("stop", "STOPPED")

    def save(self) -> int:
        """QuPath saves the image data into the project; returns the number of objects it saved."""
        return int(self._command("save", "SAVED").split()[1])

    def open(self, image: str) -> str:
        """Another image of the project becomes the open one (as in QuPath's viewer); returns its name."""
        return self._command(f"open {image}", "OPENED").split(" ", 1)[1]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "GatewayHost":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
