"""The command line: help, version, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import qpsam
from qpsam.cli import cli, main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qpsam.cli", *args], capture_output=True, text=True)


def _all_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _all_commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_version_and_help_for_every_command() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and qpsam.__version__ in result.output
    commands = _all_commands(cli)
    assert ("geojson", "check") in commands
    for command in commands:
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage:" in result.output


def test_usage_error_exits_2() -> None:
    assert main(["no-such-command"]) == 2
    assert main(["geojson", "prompts", "x.geojson"]) == 2  # missing --region


def test_failure_is_one_line_on_stderr_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}}]}')
    result = run("geojson", "check", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"qpsam: error: {bad}: feature 0: has no geometry"]
    assert "Traceback" not in result.stderr
    debug = run("--debug", "geojson", "check", str(bad))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_check_counts_objects_of_a_qupath_export(lmd: Path) -> None:
    result = CliRunner().invoke(cli, ["geojson", "check", str(lmd / "Single_cells.geojson")])
    assert result.exit_code == 0
    assert "131 objects" in result.output
    assert "single_cells_demo" in result.output and "121" in result.output


def test_prompts_command_prints_region_prompts(lmd: Path) -> None:
    result = CliRunner().invoke(
        cli, ["geojson", "prompts", str(lmd / "TD_01_verysmall_mIF.geojson"), "--region", "0,0,1000,1000", "--downsample", "2"]
    )
    assert result.exit_code == 0, result.output
    prompts = json.loads(result.output)
    assert any(p["box"] for p in prompts) and any(p["points"] for p in prompts)


def test_import_is_light() -> None:
    code = "import sys, qpsam, qpsam.geojson, qpsam.prompts, qpsam.cli; print(any(m in sys.modules for m in ('torch', 'jpype', 'paquo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
