"""Tracking plans: frames, prompts per frame, tracks by name, and the replay script of a sequence."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPoint, box

from qpsam.errors import JobError
from qpsam.groovy import script_for
from qpsam.jobs import ArraySource, EngineSpec
from qpsam.jobs.tracking import plan_track, sequence_specs, track_image
from qpsam.objects import ImagePlane, PathClass, PathObject

CELL = PathClass("Cell", (0, 200, 0))


def test_plan_groups_prompts_by_frame_and_tracks_by_name() -> None:
    objects = [
        PathObject(box(100, 100, 140, 130), name="a", path_class=CELL, plane=ImagePlane(z=2)),
        PathObject(box(102, 101, 142, 131), name="a", path_class=CELL, plane=ImagePlane(z=5)),
        PathObject(MultiPoint([(300, 300)]), plane=ImagePlane(z=5)),
        PathObject(box(0, 0, 10, 10), plane=ImagePlane(z=9)),  # outside --from/--to
    ]
    plan = plan_track(objects, 2000, 2000, "z", 1, 6)
    assert [p.z for p in plan.planes] == [1, 2, 3, 4, 5, 6]
    assert sorted(plan.prompts) == [1, 4]  # frame indices of z = 2 and z = 5
    assert len(plan.tracks) == 2  # "a" on two planes is one track; the unnamed point another
    assert plan.region.downsample == 1 and plan.region.x <= 100 and plan.region.x + plan.region.width >= 300


def test_plan_refuses_what_cannot_be_tracked() -> None:
    with pytest.raises(JobError, match="no prompt objects on z = 0..3"):
        plan_track([PathObject(box(0, 0, 5, 5), plane=ImagePlane(z=7))], 100, 100, "z", 0, 3)
    with pytest.raises(JobError, match="several t values"):
        plan_track([PathObject(box(0, 0, 5, 5), plane=ImagePlane(z=1, t=0)),
                    PathObject(box(0, 0, 5, 5), plane=ImagePlane(z=1, t=1))], 100, 100, "z", 0, 3)
    with pytest.raises(JobError, match="must not be before"):
        plan_track([], 100, 100, "t", 3, 1)


def test_models_without_a_video_predictor_are_refused_with_a_clear_message(mobile_sam) -> None:
    source = ArraySource(np.zeros((3, 1, 64, 64), np.uint8), "stack")
    with pytest.raises(JobError, match="cannot track: use a SAM2 model"):
        track_image(mobile_sam, source, [PathObject(box(5, 5, 20, 20), plane=ImagePlane(z=0, t=1))], "t", 0, 2)


def test_sequence_replay_script_carries_the_tracks() -> None:
    objects = [PathObject(box(100, 100, 140, 130), name="a", path_class=CELL, plane=ImagePlane(t=3))]
    plan = plan_track(objects, 512, 512, "t", 0, 6)
    (spec,) = sequence_specs(EngineSpec("sam2_t"), plan, "t")
    assert spec.axis == "t" and (spec.start, spec.end) == (0, 6)
    assert spec.prompts[0].frame == 3 and spec.prompts[0].prompt.box == (100, 100, 140, 130)
    assert spec.class_name(0) == "Cell"
    assert "SAMSequenceTask" in script_for(spec)


class _Propagator:
    """A stand-in video predictor: every track is the same square on every frame."""

    model_type = "sam2_t"

    def propagate(self, frames, prompts, reverse=True, progress=None):
        from qpsam.sam import Mask

        keys = {p.key for frame in prompts.values() for p in frame}
        square = np.zeros(frames[0].shape[:2], bool)
        square[10:30, 10:30] = True
        return {i: {k: Mask(square, 0.7) for k in keys} for i in range(len(frames))}


def test_track_on_a_project_commits_tracks_with_history_previews_and_script(tmp_path) -> None:
    import tifffile

    from qpsam import history
    from qpsam.jobs import TrackOptions, track
    from qpsam.project import open_project

    stack = (np.arange(3 * 120 * 160) % 251).astype(np.uint8).reshape(3, 120, 160)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    with open_project(tmp_path / "project", "x", backend="native") as project:
        project.add_image(tmp_path / "stack.tif").add_objects(
            [PathObject(box(20, 20, 60, 60), name="a", path_class=CELL, plane=ImagePlane(z=1))])
        project.save()

    options = TrackOptions(axis="z", start=0, stop=2, backend="native")
    report = track(tmp_path / "project", engine=_Propagator(), options=options, preview=tmp_path / "preview",
                   groovy=tmp_path / "track.groovy")
    assert report.ok and [i.added for i in report.images] == [3]
    assert report.params["from"] == 0 and report.params["to"] == 2 and report.params["model"] == "sam2_t"
    with open_project(tmp_path / "project", "r", backend="native") as project:
        found = project.images[0].objects
    assert sorted(o.plane.z for o in found) == [0, 1, 2] and {o.name for o in found} == {"a"}  # the prompt is gone
    (record,) = history.read(tmp_path / "project")
    assert record.kind == "track" and record.groovy == (tmp_path / "track.groovy").read_text()
    assert sorted(p.name for p in (tmp_path / "preview").iterdir()) == [
        "stack.tif-z0-0.png", "stack.tif-z1-0.png", "stack.tif-z2-0.png"]
