"""``--channels`` (what SAM sees of a fluorescence image) and ``--precision`` on the jobs, with the real MobileSAM."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from shapely.geometry import box
from test_jobs_project import make_project, objects_of

from qpsam.cli import main
from qpsam.errors import JobError
from qpsam.jobs import QUALITY, EngineSpec, detect
from qpsam.jobs.channels import ChannelChoice, channel_displays, parse_channels
from qpsam.jobs.executors import engine_for
from qpsam.objects import PathClass, PathObject
from qpsam.project import open_project

pytestmark = pytest.mark.weights
NATIVE = "native"


def _two_channel_project(folder: Path, nuclei) -> Path:
    """Nuclei in channel 1 and uniform noise as bright as the nuclei in channel 2, with box prompts."""
    image, labels = nuclei
    crop, crop_labels = image[:192, :192], labels[:192, :192]
    rng = np.random.default_rng(0)
    hi = int(np.percentile(crop, 99.9))
    noise = rng.integers(0, hi, crop.shape, dtype=np.uint16)
    (folder / "images").mkdir(parents=True)
    path = folder / "images" / "two.ome.tif"
    tifffile.imwrite(path, np.stack([crop, noise]), metadata={"axes": "CYX"}, ome=True)
    with open_project(folder / "project", "x", backend=NATIVE) as project:
        entry = project.add_image(path)
        assert [c.name for c in entry.channels] == ["Channel 1", "Channel 2"]
        prompts = []
        for v in [v for v in np.unique(crop_labels)[1:] if (crop_labels == v).sum() > 80][:8]:
            ys, xs = np.nonzero(crop_labels == v)
            prompts.append(PathObject(box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), path_class=PathClass("N")))
        entry.add_objects(prompts)
        project.save()
    return folder / "project"


def _qualities(project: Path) -> list[float]:
    (objects,) = objects_of(project).values()
    return [o.measurements[QUALITY] for o in objects]


def test_parse_channels() -> None:
    assert parse_channels("DAPI:white, 3:#00ff00 ,2") == (
        ChannelChoice("DAPI", (255, 255, 255)), ChannelChoice(3, (0, 255, 0)), ChannelChoice(2))
    assert parse_channels(None) is None
    with pytest.raises(JobError, match="unknown colour 'purpleish'"):
        parse_channels("1:purpleish")


def test_channels_leave_a_noise_channel_out_and_raise_sams_quality(tmp_path: Path, nuclei, mobile_sam,
                                                                   qupath_check) -> None:
    project = _two_channel_project(tmp_path / "a", nuclei)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    other = tmp_path / "b" / "project"
    with open_project(other, "r+", backend=NATIVE) as p:
        p.relocate(lambda uri: uri.replace(str(tmp_path / "a"), str(tmp_path / "b")))
        p.save()

    with open_project(project, "r+", backend=NATIVE) as p:
        assert detect(p, engine=mobile_sam).ok  # both channels, in their own colours
    with open_project(other, "r+", backend=NATIVE) as p:
        report = detect(p, engine=mobile_sam, channels="1:white")
    assert report.ok and report.params["channels"] == ["1:#ffffff"]
    noisy, clean = np.array(_qualities(project)), np.array(_qualities(other))
    assert len(noisy) == len(clean) == 8
    print(f"SAM quality with the noise channel {noisy.mean():.3f} ({noisy.min():.2f}-{noisy.max():.2f}), "
          f"channel 1 only {clean.mean():.3f} ({clean.min():.2f}-{clean.max():.2f})")
    assert clean.mean() > noisy.mean() + 0.02
    qupath_check(other)

    with open_project(project, "r", backend=NATIVE) as p:  # channels the image does not have
        entry = p.images[0]
        with pytest.raises(JobError, match=r"no channel named 'DAPI' \(channels: Channel 1, Channel 2\)"):
            channel_displays(entry, parse_channels("DAPI"))
        with pytest.raises(JobError, match=r"no channel 3 \(it has 2"):
            channel_displays(entry, parse_channels("3"))


def test_precision_reaches_the_engine_and_the_report(tmp_path: Path, nuclei, mobile_sam, capsys,
                                                     qupath_check) -> None:
    import torch

    project = make_project(tmp_path, nuclei, n_images=1, n_prompts=2)
    with open_project(project, "r+", backend=NATIVE) as p:
        report = detect(p, engine=EngineSpec("vit_t", engine="torch", device="cpu", precision="bf16"))
    assert report.ok and report.params["precision"] == "bf16" and report.images[0].added == 2
    assert engine_for(EngineSpec("vit_t", engine="torch", device="cpu", precision="bf16")).dtype == torch.bfloat16
    assert all(q > 0.5 for q in _qualities(project))
    qupath_check(project)
    with pytest.raises(JobError, match="precision must be one of auto, fp32, bf16, fp16"):
        EngineSpec(precision="fp8")
    assert main(["detect", str(project), "--precision", "fp64"]) == 2
    assert main(["detect", str(project), "--model", "vit_t", "--engine", "onnx", "--precision", "bf16",
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "precision 'bf16' needs --engine openvino" in err and "or --engine torch" in err
