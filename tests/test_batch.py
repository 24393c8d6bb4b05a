"""Batch runs: per-image errors do not stop a run, changes are committed image by image, --resume skips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import box

from qpsam.errors import ImageReadError
from qpsam.jobs.batch import Change, Target, run_batch, run_key
from qpsam.jobs.sources import ArraySource
from qpsam.objects import PathObject


def _targets(store: dict, names: list[str]) -> list[Target]:
    def make(name: str) -> Target:
        def commit(change: Change, key: str, scripts: list[str]) -> None:
            store.setdefault(name, []).extend(change.added)
            store.setdefault("done", set()).add((name, key))

        return Target(
            key=name,
            name=name,
            objects=lambda: [],
            source=lambda: ArraySource(np.zeros((8, 8), np.uint8), name),
            commit=commit,
            done_before=lambda key: (name, key) in store.get("done", set()),
        )

    return [make(n) for n in names]


def _work(target: Target) -> Change:
    if target.name == "broken":
        raise ImageReadError(f"image {target.name!r}: file is missing")
    target.source()  # reads pixels like a real job
    return Change(added=(PathObject(box(0, 0, 1, 1)),), windows=1)


def test_failures_are_reported_and_the_run_goes_on(tmp_path) -> None:
    store: dict = {}
    report = run_batch("detect", {"model": "vit_t"}, _targets(store, ["a", "broken", "c"]), _work)
    assert [r.status for r in report.images] == ["done", "failed", "done"]
    assert report.failed[0].error == "image 'broken': file is missing"
    assert len(store["a"]) == 1 and len(store["c"]) == 1 and "broken" not in store
    assert "2 image(s) done, 0 skipped, 1 failed; 2 objects added" in report.summary()
    data = json.loads(report.write(tmp_path / "report.json").read_text())
    assert data["images"][1]["status"] == "failed" and data["params"]["run_key"] == run_key("detect", {"model": "vit_t"})


def test_resume_skips_images_done_with_the_same_parameters() -> None:
    store: dict = {}
    run_batch("detect", {"model": "vit_t"}, _targets(store, ["a", "b"]), _work)
    again = run_batch("detect", {"model": "vit_t"}, _targets(store, ["a", "b", "c"]), _work, resume=True)
    assert [r.status for r in again.images] == ["skipped", "skipped", "done"]
    other = run_batch("detect", {"model": "vit_b"}, _targets(store, ["a"]), _work, resume=True)
    assert [r.status for r in other.images] == ["done"]  # other parameters: not the same run


def test_debug_raises_instead_of_reporting() -> None:
    with pytest.raises(ImageReadError):
        run_batch("detect", {}, _targets({}, ["broken"]), _work, debug=True)
