"""SAM3 concept prompts on project images (``detect --text``/``--exemplars``), through the engine seam.

SAM3's weights cannot be had here, so, as in the server's SAM3 tests, an engine stands in for it behind the same
``set_image``/``segment`` calls. It records what the job sends (phrase, exemplar boxes in tile pixels) and
"finds" the bright blobs of the real nuclei image it is given, each with a score, plus one faint mask under the
confidence threshold. The job side is real: tiles, box conversion, merging, the project writes, history,
``--resume``, the Groovy replay (parsed by Groovy 4 where it is installed) and QuPath reading the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from groovy_fixtures import groovy, parse_ok  # noqa: F401
from shapely.geometry import box
from test_jobs_project import make_project, objects_of

from qpsam import history
from qpsam.cli import main
from qpsam.errors import JobError
from qpsam.jobs import QUALITY, DetectOptions, EngineSpec, detect
from qpsam.objects import PathClass, PathObject
from qpsam.project import open_project
from qpsam.sam import Mask

NUCLEUS = PathClass("Nucleus", (230, 60, 60))


class BlobSam3:
    """Stands in for SAM3: every bright blob (of at least 40 pixels) of the image is an instance of the concept."""

    model_type = "sam3"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list, list, tuple[int, int]]] = []
        self.image: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.image = np.asarray(image)

    def segment(self, text: Any, positive: list, negative: list) -> list[Mask]:
        import cv2

        assert self.image is not None
        gray = self.image.mean(axis=2) if self.image.ndim == 3 else self.image
        self.calls.append((text, list(positive), list(negative), gray.shape))
        n, labels = cv2.connectedComponents((gray > np.percentile(gray, 80)).astype(np.uint8))
        masks = [Mask(labels == i, 0.9) for i in range(1, n) if (labels == i).sum() >= 40]
        faint = np.zeros(gray.shape, bool)
        faint[:4, :4] = True
        return masks + [Mask(faint, 0.1)]


def _native(path: Path) -> Any:
    return open_project(path, "r+", backend="native")


@pytest.mark.groovy
def test_text_prompt_finds_every_blob_with_history_resume_and_groovy(tmp_path: Path, nuclei, qupath_check,
                                                                    groovy) -> None:
    project = make_project(tmp_path, nuclei, n_images=2, n_prompts=0)
    sam3 = BlobSam3()
    options = DetectOptions(text="nucleus", path_class="Blob", names=True)
    with _native(project) as p:
        report = detect(p, engine=sam3, options=options, groovy=tmp_path / "run.groovy")
    assert report.ok and report.params["text"] == "nucleus"
    assert [c[0] for c in sam3.calls] == ["nucleus", "nucleus"] and all(c[1] == [] == c[2] for c in sam3.calls)
    found = objects_of(project)
    assert all(len(objs) >= 5 for objs in found.values())
    for objs in found.values():
        assert all(o.measurements[QUALITY] == pytest.approx(0.9) and o.class_name == "Blob" for o in objs)
        assert all(o.name == "SAM (Quality=0.9)" for o in objs)
        assert not any(o.geometry.bounds == (0, 0, 4, 4) for o in objs)  # under the confidence threshold
    qupath_check(project)
    records = history.read(project)
    assert [r.kind for r in records] == ["detect", "detect"]
    scripts = sorted(tmp_path.glob("run-*.groovy"))  # one per image
    assert [f.name for f in scripts] == ["run-crop0.tif.groovy", "run-crop1.tif.groovy"]
    script = scripts[0].read_text()
    assert "SAM3DetectionTask" in script and "'nucleus'" in script
    with _native(project) as p:
        again = detect(p, engine=sam3, options=options, resume=True)
    assert [r.status for r in again.images] == ["skipped", "skipped"] and len(sam3.calls) == 2
    parse_ok(groovy, script, "run.groovy")  # Groovy 4 parses the replay


def test_exemplar_boxes_and_ignored_counter_examples_go_to_the_tiles_holding_them(tmp_path: Path, nuclei,
                                                                                  qupath_check) -> None:
    project = make_project(tmp_path, nuclei, n_images=1, n_prompts=0)
    example = PathObject(box(20.2, 30, 40, 50.6), path_class=NUCLEUS)
    other = PathObject(box(60, 60, 70, 70), path_class=PathClass("Other"))
    counter = PathObject(box(150, 150, 170, 180), path_class=PathClass("Ignore*"))
    with _native(project) as p:
        p.images[0].add_objects([example, other, counter])
        p.save()
    sam3 = BlobSam3()
    steps: list[tuple] = []
    with _native(project) as p:  # tiles of 128 pixels with 16 of overlap on the 192-pixel image: 2 x 2
        report = detect(p, engine=sam3, options=DetectOptions(exemplars=True, prompts="class:Nucleus", model_input=128),
                        step_progress=lambda *a: steps.append(a), preview=tmp_path / "preview")
    assert report.ok and report.images[0].windows == 1 and report.images[0].removed == 1
    # only the tile holding the positive exemplar is searched without a phrase; boxes are in tile pixels
    ((text, positive, negative, shape),) = sam3.calls
    assert text is None and positive == [(20, 30, 40, 51)] and negative == [] and shape == (128, 128)
    assert steps == [("crop0.tif", "tile", 1, 1)]
    (objs,) = objects_of(project).values()
    assert {o.id for o in objs} >= {other.id, counter.id} and example.id not in {o.id for o in objs}
    results = [o for o in objs if QUALITY in o.measurements]
    assert results and all(o.path_class == NUCLEUS for o in results)  # the exemplars' class
    qupath_check(project)
    assert list((tmp_path / "preview").glob("*.png"))

    sam3.calls.clear()
    with _native(project) as p:  # a phrase searches every tile; the counter-example goes where it lies
        assert detect(p, engine=sam3, options=DetectOptions(text="cell", exemplars=True, model_input=128,
                                                            keep_prompts=True)).ok
    assert len(sam3.calls) == 4 and all(c[0] == "cell" for c in sam3.calls)
    assert sum(bool(c[2]) for c in sam3.calls) == 1  # the tile holding (150,150)-(170,180)
    assert [c[2] for c in sam3.calls if c[2]] == [[(86, 86, 106, 116)]]  # the last tile starts at 64


def test_concept_prompts_need_sam3(tmp_path: Path, nuclei, capsys) -> None:
    project = make_project(tmp_path, nuclei, n_images=1, n_prompts=1)
    with pytest.raises(JobError, match=r"need SAM3 \(--model sam3\); model vit_t"):
        detect(project, engine=EngineSpec("vit_t"), options=DetectOptions(text="nucleus"))
    assert main(["detect", str(project), "--text", "nucleus"]) == 1
    assert "need SAM3 (--model sam3)" in capsys.readouterr().err
    # SAM3 itself: without the sam3 package and its weights, one line says what is missing
    assert main(["detect", str(project), "--model", "sam3", "--text", "nucleus"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qpsam: error: SAM3 needs the sam3 package") and err.count("\n") == 1
    with pytest.raises(JobError, match="--text must not be empty"):
        DetectOptions(text="  ")
