"""The ``qpsam`` command line: one entry point, sub-commands registered from :mod:`qpsam.commands`.

Exit codes: 0 success, 2 usage error (click's own), 1 failure with a one-line message on stderr. ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Sequence

import click

from qpsam._version import __version__
from qpsam.errors import DataWarning, QpsamError

# Modules under qpsam.commands that provide register(group); a module that is missing is skipped so that a
# partial checkout still has a working CLI.
COMMAND_MODULES: tuple[str, ...] = (
    "geojson",
    "project",
    "weights",
    "jobs",
    "script",
    "serve",
    "demo",
    "live",
    "relocate",
)

# Library messages name Python arguments; on the command line the same advice names the flag.
CLI_WORDS: tuple[tuple[str, str], ...] = (
    ("pass on_invalid='fix' or 'keep' to accept it", "use --fix-invalid to repair it"),
    ("use replace_objects to change objects", "use --replace to replace objects with the same id"),
    ("(use backend='paquo')", "(use --backend paquo)"),
    ("(pass allow_duplicates=True to add it again)", "(it is added once only)"),
    ("needs engine='torch'", "needs --engine torch"),
    ("needs engine='openvino'", "needs --engine openvino"),
    ("or engine='torch'", "or --engine torch"),
    ("use engine='torch' (or 'auto')", "use --engine torch (or auto)"),
)


def cli_message(message: str) -> str:
    """``message`` with its Python-argument advice put in terms of CLI flags."""
    for python, flag in CLI_WORDS:
        message = message.replace(python, flag)
    return message


class _Group(click.Group):
    """A click group that turns qpsam errors into one-line messages and exit code 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            result = super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            raise  # the reader went away (`qpsam info | head`): click ends quietly
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _DATA_WARNINGS.clear()  # the error names the same damage: one line
            message = cli_message(str(exc)) if isinstance(exc, QpsamError) else f"{type(exc).__name__}: {exc}"
            click.echo(f"qpsam: error: {message}", err=True)
            ctx.exit(1)
        for text in dict.fromkeys(_DATA_WARNINGS):
            click.echo(f"qpsam: warning: {text}", err=True)
        _DATA_WARNINGS.clear()
        return result


_default_showwarning = warnings.showwarning
_DATA_WARNINGS: list[str] = []


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings about the user's data as one line each, like errors (others as Python prints them)."""
    if issubclass(category, DataWarning):
        _DATA_WARNINGS.append(str(message))  # shown once the command ends, unless an error says it all
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="qpsam")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run Segment Anything models on QuPath projects."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    warnings.showwarning = _show_warning


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"qpsam.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"qpsam.commands.{name}":
                continue
            raise
        module.register(cli)


_register_all()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="qpsam", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
