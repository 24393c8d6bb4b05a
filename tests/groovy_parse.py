"""Parse Groovy scripts with Groovy 4 (the Groovy QuPath runs) without running them.

One JVM parses every script of a test session: :class:`GroovyParser` keeps a driver process
(``groovy_parse_driver.groovy``) that reads file paths on stdin and answers one JSON line per file, with the
syntax errors and the calls Groovy's own parser saw (so tests read values back as Groovy understands them).

The jar comes from ``tests/get-groovy.sh`` (cached beside the QuPath harness, outside the checkout);
``QPSAM_GROOVY_JAR`` points elsewhere.

Command line: ``python tests/groovy_parse.py FILE...`` prints every error and exits 1 if a file does not parse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "groovy_parse_driver.groovy"
GROOVY_VERSION = "4.0.26"
# Parsing is short work: the client compiler alone and the serial collector start faster and use less memory.
JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Dfile.encoding=UTF-8")


def find_jar() -> Path | None:
    """The Groovy 4 jar: ``$QPSAM_GROOVY_JAR`` or the one ``tests/get-groovy.sh`` caches beside the harness."""
    env = os.environ.get("QPSAM_GROOVY_JAR")
    candidates = [Path(env)] if env else []
    home = os.environ.get("QPSAM_QUPATH_HOME")
    harness = Path(home) if home else Path.home() / ".cache" / "qpsam" / "qupath"
    candidates += [harness / "groovy" / f"groovy-{GROOVY_VERSION}.jar", ROOT / ".gl" / f"groovy-{GROOVY_VERSION}.jar"]
    for path in candidates:
        if path.is_file():
            return path
    return None


def find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def unavailable_reason() -> str | None:
    """Why Groovy 4 parsing cannot run here, or None when it can."""
    if find_java() is None:
        return "Java is not installed (needed to run Groovy 4)"
    if find_jar() is None:
        return f"Groovy {GROOVY_VERSION} jar missing: run tests/get-groovy.sh (fetches it from npm)"
    return None


@dataclass(frozen=True)
class Call:
    """A method call, constructor call (``name == 'new'``) or declaration (``name == '='``) in a script."""

    name: str
    receiver: str
    line: int
    args: tuple[Any, ...]


@dataclass(frozen=True)
class ParseResult:
    file: str
    ok: bool
    errors: tuple[dict, ...] = ()
    calls: tuple[Call, ...] = field(default=(), repr=False)

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def one(self, name: str) -> Call:
        found = self.named(name)
        if len(found) != 1:
            raise AssertionError(f"expected one call of {name}, found {len(found)} in {self.file}")
        return found[0]

    def declared(self, variable: str) -> Any:
        """The value a ``var``/``def`` declaration gives ``variable``."""
        found = [c for c in self.calls if c.name == "=" and c.receiver == variable]
        if len(found) != 1:
            raise AssertionError(f"expected one declaration of {variable}, found {len(found)} in {self.file}")
        return found[0].args[0]

    def message(self) -> str:
        return "; ".join(f"line {e['line']}: {e['message'].strip()}" for e in self.errors)


def _result(data: dict) -> ParseResult:
    calls = tuple(Call(c["name"], c["receiver"], c["line"], tuple(c["args"])) for c in data["calls"])
    return ParseResult(data["file"], bool(data["ok"]), tuple(data["errors"]), calls)


class GroovyParser:
    """A running Groovy 4 driver; ``parse_text`` and ``parse_file`` answer in order, one at a time."""

    def __init__(self, jar: Path | None = None, java: str | None = None) -> None:
        jar = jar or find_jar()
        java = java or find_java()
        if jar is None or java is None:
            raise RuntimeError(unavailable_reason() or "Groovy unavailable")
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="qpsam-groovy-")
        self._count = 0
        self._proc = subprocess.Popen(
            [java, *JVM_OPTIONS, "-cp", str(jar), "groovy.ui.GroovyMain", str(DRIVER),
             "--calls", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def parse_file(self, path: str | Path) -> ParseResult:
        with self._lock:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Groovy driver exited: {self._proc.stderr.read()}")  # type: ignore[union-attr]
            assert self._proc.stdin and self._proc.stdout
            self._proc.stdin.write(f"{Path(path).resolve()}\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"Groovy driver died: {self._proc.stderr.read()}")  # type: ignore[union-attr]
            return _result(json.loads(line, parse_float=Decimal))

    def parse_text(self, text: str, name: str = "script") -> ParseResult:
        self._count += 1
        path = Path(self._tmp.name) / f"{self._count:04d}-{name}.groovy"
        path.write_text(text, encoding="utf-8")
        return self.parse_file(path)

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream:
                stream.close()
        self._tmp.cleanup()

    def __enter__(self) -> "GroovyParser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_files(paths: list[str]) -> Iterator[ParseResult]:
    """Parse files in one JVM run (command-line mode of the driver)."""
    jar, java = find_jar(), find_java()
    if jar is None or java is None:
        raise RuntimeError(unavailable_reason() or "Groovy unavailable")
    out = subprocess.run(
        [java, *JVM_OPTIONS, "-cp", str(jar), "groovy.ui.GroovyMain", str(DRIVER), *paths],
        capture_output=True, text=True, encoding="utf-8", check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"Groovy driver failed: {out.stderr.strip()}")
    for line in out.stdout.splitlines():
        yield _result(json.loads(line, parse_float=Decimal))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python tests/groovy_parse.py FILE...", file=sys.stderr)
        return 2
    reason = unavailable_reason()
    if reason:
        print(f"groovy_parse: {reason}", file=sys.stderr)
        return 2
    failed = 0
    for result in parse_files(argv):
        if result.ok:
            print(f"ok    {result.file}")
        else:
            failed += 1
            print(f"FAIL  {result.file}: {result.message()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
