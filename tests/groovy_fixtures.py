"""Fixtures for tests of Groovy scripts: one Groovy 4 JVM per test session, and two ways to read a script back.

Import the fixtures into a test module (``from groovy_fixtures import groovy, reader``).
"""

from __future__ import annotations

import atexit
import functools
from decimal import Decimal
from typing import Any, Callable

import pytest
import script_reader
from groovy_parse import GroovyParser, ParseResult, unavailable_reason
from qupath_judge import in_ci


@functools.lru_cache(maxsize=1)
def _parser() -> GroovyParser:
    parser = GroovyParser()
    atexit.register(parser.close)
    return parser


def need_groovy() -> None:
    """Skip without Groovy 4 here; in CI (CI=true), where `tests/run.sh` fetches it, fail."""
    reason = unavailable_reason()
    if reason and in_ci():
        pytest.fail(f"Groovy 4 is required in CI: {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture()
def groovy() -> GroovyParser:
    """The session's Groovy 4 parser (skips when Java or the jar is missing; fails in CI)."""
    need_groovy()
    return _parser()


def parse_ok(parser: GroovyParser, text: str, name: str = "script") -> ParseResult:
    result = parser.parse_text(text, name)
    assert result.ok, f"Groovy 4 rejects the script: {result.message()}\n{text}"
    return result


Reader = Callable[[str], ParseResult]


@pytest.fixture(params=["python", pytest.param("groovy", marks=pytest.mark.groovy)])
def reader(request: pytest.FixtureRequest) -> Reader:
    """Reads a script's calls back: with qpsam's own text reader, and with Groovy 4's parser."""
    if request.param == "python":
        return lambda text: ParseResult("<text>", True, (), tuple(script_reader.calls(text)))
    need_groovy()
    parser = _parser()
    return lambda text: parse_ok(parser, text)


def text_of(arg: Any) -> str:
    """The source text of a non-literal argument (property, variable or expression)."""
    if isinstance(arg, dict):
        for key in ("prop", "var", "expr"):
            if key in arg:
                return str(arg[key])
    raise AssertionError(f"not an expression: {arg!r}")


def same_number(arg: Any, expected: float) -> bool:
    """A literal read back equals ``expected`` exactly (decimals are read as Decimal, so no rounding hides)."""
    if isinstance(arg, bool) or not isinstance(arg, (int, Decimal)):
        return False
    return Decimal(arg) == Decimal(repr(float(expected)))
