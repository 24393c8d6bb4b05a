"""The OpenVINO engine with the real MobileSAM weights on the real nuclei image (examples/data).

It runs the graphs that the onnx engine exports (shared per session through ``weights_copy``); the torch engine of
the same weights (fp32) is the reference. Speed is measured in benchmarks/bench_onnx.py, never here.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from truth import gt_boxes, mask_iou

from qpsam.engines import EmbeddingCache, auto_engine, load_engine
from qpsam.engines.openvino_sam import (
    OpenVinoGraph,
    OpenVinoSamEngine,
    choose_precision,
    cpu_flags,
    host_native_bf16,
    native_bf16,
    openvino_available,
    require_openvino,
)
from qpsam.errors import ModelError
from qpsam.sam import AutomaskParams, Prompt, to_rgb8

pytest.importorskip("openvino", reason="the openvino engine needs OpenVINO: pip install 'qpsam[openvino]'")
pytest.importorskip("torch", reason="the export and the reference need PyTorch")

pytestmark = pytest.mark.weights


@pytest.fixture(scope="session")
def ov_engine(weights_copy) -> OpenVinoSamEngine:
    engine = load_engine("vit_t", weights_copy, device="cpu", engine="openvino", cache=EmbeddingCache(64 << 20),
                         threads=2)
    assert isinstance(engine, OpenVinoSamEngine) and engine.precision == "fp32"
    assert engine.files.folder.parent == weights_copy.parent / "mobile_sam.pt.onnx"
    return engine


@pytest.fixture(scope="session")
def torch_boxes(mobile_sam, nuclei):
    """The torch fp32 engine's masks for the 125 ground-truth boxes, computed once."""
    image, gt = nuclei
    boxes = gt_boxes(gt)
    mobile_sam.set_image(image)
    return boxes, mobile_sam.predict([Prompt(box=b, key=label) for label, b in boxes])




def _hold(engine, image, gt, boxes, ref) -> tuple[float, float]:
    """(mean mask IoU against torch fp32, ground-truth score minus torch's) on the 125 boxes; asserts the bar."""
    engine.set_image(image)
    ours = engine.predict([Prompt(box=b, key=label) for label, b in boxes])
    agree = float(np.mean([mask_iou(a[0].mask, b[0].mask) for a, b in zip(ours, ref)]))
    truth_ours = np.mean([mask_iou(m[0].mask, gt == label) for (label, _), m in zip(boxes, ours)])
    truth_ref = np.mean([mask_iou(m[0].mask, gt == label) for (label, _), m in zip(boxes, ref)])
    assert agree >= 0.99, f"mean IoU against torch fp32 {agree:.4f}"
    assert abs(truth_ours - truth_ref) <= 0.005, (truth_ours, truth_ref)
    assert all(m[0].mask.shape == gt.shape for m in ours)
    return agree, float(truth_ours - truth_ref)


# ---------------------------------------------------------------------------------------------- quality


def test_fp32_box_masks_equal_torch_fp32(ov_engine, torch_boxes, nuclei):
    image, gt = nuclei
    boxes, ref = torch_boxes
    assert len(boxes) == 125
    agree, _ = _hold(ov_engine, image, gt, boxes, ref)
    assert agree >= 0.999  # fp32 is torch's arithmetic: only rounding differs


@pytest.mark.skipif(not openvino_available() or not host_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_box_masks_hold_against_torch_fp32(weights_copy, torch_boxes, nuclei):
    image, gt = nuclei
    boxes, ref = torch_boxes
    engine = load_engine("vit_t", weights_copy, device="cpu", engine="openvino", cache=False, threads=2,
                         precision="bf16")
    assert engine.precision == "bf16" and engine.cache_tag == "-openvino-bf16"
    assert engine._encoder.property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    _hold(engine, image, gt, boxes, ref)


def test_automask_equals_torch_fp32(ov_engine, mobile_sam, nuclei):
    image, _ = nuclei
    crop = image[:192, :192]
    params = AutomaskParams(points_per_side=8, include_image_edge=True)
    ours = ov_engine.automask(crop, params)
    ref = mobile_sam.automask(crop, params)
    assert len(ref) >= 5
    matrix = np.array([[mask_iou(a.mask, b.mask) for b in ref] for a in ours])
    assert matrix.max(axis=0).mean() >= 0.99 and matrix.max(axis=1).mean() >= 0.99


# ------------------------------------------------------------------------------------ cache and options


def test_cache_and_set_image_path(ov_engine, nuclei):
    image, gt = nuclei
    prompts = [Prompt(box=b) for _, b in gt_boxes(gt)[:4]]
    view = np.ascontiguousarray(image[::-1])  # pixels no other test encoded
    runs = ov_engine.encoder_runs
    ov_engine.set_image(view)
    assert ov_engine.encoder_runs == runs + 1 and not ov_engine.last_from_cache
    first = ov_engine.predict(prompts)
    ov_engine.set_image(image[:200, :200])
    ov_engine.set_image(view)  # back from the cache: the same masks without the encoder
    assert ov_engine.encoder_runs == runs + 2 and ov_engine.last_from_cache
    again = ov_engine.predict(prompts)
    assert all(np.array_equal(a[0].mask, b[0].mask) for a, b in zip(first, again))
    # its own cache entries: an onnx or bf16 encoding of the same pixels is not taken for this one
    key = ov_engine._cache_key(to_rgb8(view))
    assert key in ov_engine.cache and key.model_type == "vit_t-openvino-fp32"


def test_threads_reach_openvino(ov_engine):
    assert ov_engine._encoder.property("INFERENCE_NUM_THREADS") == 2
    # fp32 asked for explicitly: OpenVINO's own default on a bf16 CPU is bf16
    assert ov_engine._encoder.property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    ov = require_openvino()
    one = OpenVinoGraph(ov.Core(), ov_engine.files.prepare, {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1})
    assert one.property("INFERENCE_NUM_THREADS") == 1
    (k, v, q) = one.run(None, {"embeddings": np.zeros((1, 256, 64, 64), np.float32)})
    assert k.shape == v.shape == q.shape == (1, 8, 4096, 16)


def test_bad_options_name_the_parameter(weights_copy):
    for precision in ("fp16", "int8"):
        with pytest.raises(ModelError, match=f"precision '{precision}'"):
            load_engine("vit_t", weights_copy, device="cpu", engine="openvino", precision=precision)
    with pytest.raises(ModelError, match="device 'cuda'"):
        load_engine("vit_t", weights_copy, device="cuda", engine="openvino")
    with pytest.raises(ModelError, match="openvino engine runs SAM1-family"):
        load_engine("sam2_t", engine="openvino")
    with pytest.raises(ModelError, match="openvino_graphs"):
        OpenVinoSamEngine("vit_t", weights_copy, openvino_graphs=("decoder",))


@pytest.mark.parametrize(
    "requested, capabilities, flags, auto_bf16, expected",
    [
        ("auto", ["BF16", "FP32", "INT8"], {"avx512f", "avx512_bf16"}, True, "bf16"),
        ("auto", ["BF16", "FP32"], {"amx_bf16", "amx_tile"}, True, "bf16"),
        ("auto", ["BF16", "FP32"], None, True, "bf16"),  # no /proc/cpuinfo: OpenVINO's word
        ("auto", ["BF16", "FP32"], {"avx512f"}, True, "fp32"),  # listed, but it would be emulated
        ("auto", ["FP32", "INT8"], {"avx512_bf16"}, True, "fp32"),
        ("auto", ["BF16", "FP32"], {"avx512_bf16"}, False, "fp32"),  # bf16 not trusted for auto
        ("fp32", ["BF16", "FP32"], {"avx512_bf16"}, True, "fp32"),
        ("float32", ["BF16"], {"avx512_bf16"}, True, "fp32"),
        (None, ["FP32"], set(), True, "fp32"),
        ("bf16", ["BF16"], {"avx512_bf16"}, False, "bf16"),
        ("BFloat16", ["BF16"], {"amx_bf16"}, False, "bf16"),
    ],
)
def test_precision_choice(requested, capabilities, flags, auto_bf16, expected):
    assert choose_precision(requested, capabilities, flags, auto_bf16) == expected


def test_precision_choice_refuses():
    with pytest.raises(ModelError, match="precision 'bf16' needs a CPU with bf16"):
        choose_precision("bf16", ["BF16", "FP32"], {"avx512f"})
    with pytest.raises(ModelError, match="precision 'fp16' is not one the openvino engine runs"):
        choose_precision("fp16", ["BF16", "FP32"], {"avx512_bf16"})


def test_cpu_flags_and_native_bf16(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") is None
    assert native_bf16(["bf16"], cpu_flags(info)) and not native_bf16(["FP32"], cpu_flags(info))


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert not openvino_available() and not host_native_bf16()
    with pytest.raises(ModelError, match=r"pip install 'qpsam\[openvino\]'"):
        require_openvino()
    with pytest.raises(ModelError, match=r"qpsam\[openvino\]"):
        load_engine("vit_t", device="cpu", engine="openvino")
    assert auto_engine(True) == "onnx"  # the next engine down (onnxruntime is installed with the sam extra)


def test_without_onnxruntime_openvino_runs_every_graph(weights_copy, nuclei, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    engine = load_engine("vit_t", weights_copy, device="cpu", cache=False, threads=1)  # auto
    assert isinstance(engine, OpenVinoSamEngine)
    assert engine.openvino_graphs == ("encoder", "prepare", "decoder", "upscale")
    assert all(isinstance(g, OpenVinoGraph) for g in (engine._prepare, engine._decoder, engine._upscale))
    image, gt = nuclei
    engine.set_image(image[:160, :160])
    (mask,) = engine.predict([Prompt(box=(20, 20, 60, 60))])[0]
    assert mask.mask.shape == (160, 160) and mask.mask.any()


def test_auto_engine_choice():
    assert auto_engine(True) == "openvino"
    assert auto_engine(True, "fp32") == "openvino"
    assert auto_engine(True, "bf16") == ("openvino" if host_native_bf16() else "torch")
    assert auto_engine(True, "fp16") == "torch"
    assert auto_engine(False) == "torch"  # not SAM1, or not the CPU


def test_cli_offers_the_engine(capsys):
    from qpsam.cli import main

    for command in (["detect", "--help"], ["automask", "--help"], ["demo", "--help"]):
        assert main(command) == 0
        assert "openvino" in capsys.readouterr().out, command


def test_compiled_encoder_is_kept_beside_the_graphs_and_reused(ov_engine, weights_copy, nuclei):
    cache = ov_engine.files.encoder.parent / "openvino-cache"
    blobs = sorted(cache.iterdir())
    assert blobs  # the compiled encoder, which the next load reads instead of compiling
    again = load_engine("vit_t", weights_copy, device="cpu", engine="openvino", cache=False, threads=2)
    assert sorted(cache.iterdir()) == blobs  # same options: the same blob, nothing compiled anew
    image, gt = nuclei
    label, box = gt_boxes(gt)[0]
    again.set_image(image)
    ov_engine.set_image(image)
    ((a,),), ((b,),) = again.predict([Prompt(box=box)]), ov_engine.predict([Prompt(box=box)])
    assert a.mask.any() and np.array_equal(a.mask, b.mask)
