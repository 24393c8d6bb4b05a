"""The package face: ``import qpsam`` is light, and every name it offers resolves to the real thing."""

from __future__ import annotations

import subprocess
import sys

import qpsam


def test_every_public_name_resolves() -> None:
    for name in qpsam.__all__:
        assert getattr(qpsam, name) is not None, name
    assert set(qpsam.__all__) <= set(dir(qpsam))
    assert set(qpsam.__all__) == {"QpsamError", "__version__", *qpsam._LAZY}  # one list, kept in step
    from qpsam.jobs import detect
    from qpsam.sam import Prompt

    assert qpsam.Prompt is Prompt and qpsam.detect is detect


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        qpsam.no_such_name  # noqa: B018 - the lookup is the test
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("qpsam.no_such_name resolved")


def test_import_does_not_load_heavy_libraries() -> None:
    code = ("import sys, qpsam; heavy = ('torch', 'jpype', 'paquo', 'shapely', 'numpy'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_submodules_still_import_through_the_face() -> None:
    from qpsam import history

    assert history.__name__ == "qpsam.history"
