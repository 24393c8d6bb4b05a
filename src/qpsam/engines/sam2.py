"""Local SAM2 engine (``sam2_t``, ``sam2_s``, ``sam2_bp``, ``sam2_l``): image prompts, automask and video propagation.

One model serves both the image predictor and the video predictor. SAM2 and SAM2.1 checkpoints are told apart
by their keys, so either loads under the same model type. Video frames stay in memory (no JPEG round trip):
they are resized and normalised exactly as the sam2 package does for its frame folders.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ModelError
from ..sam import Mask, OutputType, Prompt, check_model_type, to_rgb8
from ..types import Progress
from ._torch import autocast, autocast_dtype, collect_torch_masks, load_into, pick_device, read_checkpoint
from .base import video_objects
from .cache import Embedding, EmbeddingCache
from .cached import CachedEngine
from .weights import resolve_weights, weights_sha256

__all__ = ["Sam2Engine", "build_sam2_model", "sam2_config"]


_SIZES = {"sam2_t": "t", "sam2_s": "s", "sam2_bp": "b+", "sam2_l": "l"}
# Keys only SAM2.1 checkpoints carry (its configs enable these modules).
_SAM21_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")
_FRAMES_LOCK = threading.Lock()


def sam2_config(model_type: str, version: str = "2.0") -> str:
    """The sam2 package's Hydra config name for a model type and SAM2 version (``2.0`` or ``2.1``)."""
    info = check_model_type(model_type)
    if info.family != "sam2":
        raise ModelError(f"model type {model_type} is not a SAM2 model ({', '.join(_SIZES)})")
    size = _SIZES[info.type]
    if version == "2.1":
        return f"configs/sam2.1/sam2.1_hiera_{size}.yaml"
    return f"configs/sam2/sam2_hiera_{size}.yaml"


def _import_sam2() -> Any:
    from .quiet import quiet_imports

    try:
        with quiet_imports():
            import sam2  # noqa: F401  (initialises Hydra's config module)
            from sam2 import build_sam
    except ImportError as exc:
        raise ModelError(
            "SAM2 models need the sam2 package: SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0 "
            "(plus hydra-core and iopath)"
        ) from exc
    return build_sam


def _has_c_extension() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def build_sam2_model(model_type: str, version: str = "2.0") -> Any:
    """The SAM2 architecture (no weights), as the video predictor class so one model serves images and video."""
    _import_sam2()
    overrides = [
        "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        # hole filling needs sam2's optional CUDA extension; without it sam2 warns on every frame
        f"++model.fill_hole_area={8 if _has_c_extension() else 0}",
    ]
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from .quiet import quiet_imports

    cfg = compose(config_name=sam2_config(model_type, version), overrides=overrides)
    OmegaConf.resolve(cfg)
    with quiet_imports():  # its transforms use torch.jit.script, deprecated in recent torch
        return instantiate(cfg.model, _recursive_=True)


@dataclass(frozen=True)
class _Frames:
    images: Any
    height: int
    width: int


class Sam2Engine(CachedEngine):
    """SAM2 on PyTorch: :meth:`set_image`/:meth:`predict`/:meth:`automask` like every engine, plus
    :meth:`propagate` over frames held in memory."""

    def __init__(
        self,
        model_type: str,
        weights: str | Path | None = None,
        device: str = "auto",
        cache: EmbeddingCache | None | bool = None,
        progress: Progress | None = None,
        precision: str = "auto",
        max_batch: int | None = None,
    ) -> None:
        info = check_model_type(model_type)
        if info.family != "sam2":
            raise ModelError(f"model type {model_type} is not a SAM2 model ({', '.join(_SIZES)})")
        _import_sam2()
        self.model_type = info.type
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.weights_path = resolve_weights(info.type, weights, progress=progress)
        state = read_checkpoint(self.weights_path, info.type)
        self.version = "2.1" if any(k in state for k in _SAM21_KEYS) else "2.0"
        self.weights_sha256 = weights_sha256(self.weights_path)
        model = build_sam2_model(info.type, self.version)
        load_into(model, state, self.weights_path, info.type)
        del state
        self.model = model.to(self.device).eval()
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from .quiet import quiet_imports

        with quiet_imports():  # torch.jit.script deprecation, as in build_sam2_model
            self.predictor = SAM2ImagePredictor(self.model)
        self.mask_threshold = float(self.predictor.mask_threshold)
        super().__init__(cache)
        self.max_batch = max(1, int(max_batch)) if max_batch else (64 if self.device.type == "cuda" else 2)

    def __repr__(self) -> str:
        return f"Sam2Engine({self.model_type!r}, weights={str(self.weights_path)!r}, device={self.device})"

    def _encode(self, rgb: np.ndarray) -> Embedding:
        p = self.predictor
        with autocast(self.device, self.dtype):
            p.set_image(rgb)
        feats = p._features
        return Embedding(
            {"image_embed": feats["image_embed"].detach(), "high_res_feats": [t.detach() for t in feats["high_res_feats"]]},
            {"orig_hw": tuple(int(v) for v in p._orig_hw[0])},
        )

    def _restore(self, embedding: Embedding, rgb: np.ndarray) -> None:
        p = self.predictor
        p.reset_predictor()
        p._features = {
            "image_embed": embedding.tensors["image_embed"].to(self.device),
            "high_res_feats": [t.to(self.device) for t in embedding.tensors["high_res_feats"]],
        }
        p._orig_hw = [tuple(embedding.meta["orig_hw"])]
        p._is_image_set = True

    def _image_ready(self) -> bool:
        return bool(self.predictor._is_image_set)

    def _decode(
        self, prompts: Sequence[Prompt], indices: list[int], output: OutputType, results: list[list[Mask]]
    ) -> None:
        p = self.predictor
        first = prompts[indices[0]]
        pts = np.array([prompts[i].points for i in indices], dtype=np.float32) if first.points else None
        lbl = np.array([prompts[i].labels for i in indices], dtype=np.int32) if first.points else None
        box = np.array([prompts[i].box for i in indices], dtype=np.float32) if first.box is not None else None
        with autocast(self.device, self.dtype):
            mask_input, coords, labels, boxes = p._prep_prompts(pts, lbl, box, None, True)
            masks, scores, low = p._predict(
                coords, labels, boxes, mask_input, multimask_output=output.multimask, return_logits=False
            )
        collect_torch_masks(results, indices, masks, scores, low, output)

    def decode_points(self, points: np.ndarray, multimask: bool) -> tuple[Any, Any]:
        """Decoder logits (N, K, H, W) and predicted IoU (N, K) for single foreground points (automask)."""
        import torch

        p = self.predictor
        coords = torch.as_tensor(np.asarray(points, dtype=np.float32), device=self.device)
        coords = p._transforms.transform_coords(coords, normalize=True, orig_hw=p._orig_hw[0])
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=self.device)
        with autocast(self.device, self.dtype):
            logits, iou, _ = p._predict(coords[:, None, :], labels[:, None], multimask_output=multimask, return_logits=True)
        return logits.float(), iou.float()

    # ---------------------------------------------------------------------------------------------- video

    def _frames_tensor(self, frames: Sequence[np.ndarray]) -> _Frames:
        import torch
        from PIL import Image

        if not len(frames):
            raise ModelError("video propagation needs at least one frame")
        size = int(self.model.image_size)
        rgb = [to_rgb8(f) for f in frames]
        height, width = rgb[0].shape[:2]
        for i, frame in enumerate(rgb):
            if frame.shape[:2] != (height, width):
                raise ModelError(f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 is {width}x{height}")
        images = torch.zeros(len(rgb), 3, size, size, dtype=torch.float32)
        for i, frame in enumerate(rgb):
            resized = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
            images[i] = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
        mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
        std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
        images = (images - mean) / std
        return _Frames(images, int(height), int(width))

    def _init_state(self, frames: _Frames, offload: bool) -> dict[str, Any]:
        """sam2's own ``init_state`` with our in-memory frames in place of its JPEG folder reader."""
        import sam2.sam2_video_predictor as svp

        from .quiet import silence_sam2_bars

        silence_sam2_bars(svp)
        images = frames.images if offload else frames.images.to(self.device)

        def _in_memory(**_: Any) -> tuple[Any, int, int]:
            return images, frames.height, frames.width

        with _FRAMES_LOCK:
            original = svp.load_video_frames
            svp.load_video_frames = _in_memory
            try:
                return self.model.init_state(video_path="<frames in memory>", offload_video_to_cpu=offload)
            finally:
                svp.load_video_frames = original

    def propagate(
        self,
        frames: Sequence[np.ndarray],
        prompts: Mapping[int, Sequence[Prompt]],
        *,
        start_frame: int | None = None,
        max_frames: int | None = None,
        reverse: bool = True,
        progress: Progress | None = None,
    ) -> dict[int, dict[Any, Mask]]:
        """Track objects through ``frames`` from the prompted frames, forward and (``reverse``) backward.

        ``prompts`` maps a frame index to prompts on that frame; a prompt's ``key`` names its object (same key
        on several frames = one object; no key = an object of its own). Returns ``{frame: {key: Mask}}`` with
        non-empty masks only; a mask's score is its mean foreground probability.
        """
        import torch

        if not prompts:
            raise ModelError("video propagation needs prompts on at least one frame")
        with self.lock:
            data = self._frames_tensor(frames)
            n = int(data.images.shape[0])
            for frame in sorted(prompts):
                if not 0 <= int(frame) < n:
                    raise ModelError(f"prompt on frame {frame}, but there are {n} frames (0..{n - 1})")
            plan, names = video_objects(prompts)
            start = min(f for f, _, _ in plan) if start_frame is None else int(start_frame)
            if not 0 <= start < n:
                raise ModelError(f"start frame {start} is outside 0..{n - 1}")
            limit = n if max_frames is None else max(0, int(max_frames))
            forward_frames = min(n - 1, start + limit) - start + 1
            # sam2 yields the start frame in both directions and skips the backward pass from frame 0
            backward_frames = (start - max(0, start - limit) + 1) if reverse and start > 0 else 0
            total = forward_frames + backward_frames
            out: dict[int, dict[Any, Mask]] = {}
            done = 0
            offload = self.device.type != "cpu"
            with autocast(self.device, self.dtype):
                state = self._init_state(data, offload)
                seen: set[tuple[int, int]] = set()
                for frame, obj_id, prompt in plan:
                    first = (frame, obj_id) not in seen
                    if not first and prompt.box is not None:
                        raise ModelError(
                            f"object {names[obj_id]!r} has two box prompts on frame {frame}; give one box per frame"
                        )
                    seen.add((frame, obj_id))
                    self.model.add_new_points_or_box(
                        state,
                        frame_idx=frame,
                        obj_id=obj_id,
                        points=np.array(prompt.points, dtype=np.float32) if prompt.points else None,
                        labels=np.array(prompt.labels, dtype=np.int32) if prompt.points else None,
                        box=np.array(prompt.box, dtype=np.float32) if prompt.box is not None else None,
                        clear_old_points=first,
                    )
                directions = [False, True] if reverse else [False]
                for backwards in directions:
                    for frame, obj_ids, logits in self.model.propagate_in_video(
                        state, start_frame_idx=start, max_frame_num_to_track=limit, reverse=backwards
                    ):
                        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
                        masks = (logits[:, 0] > 0.0).cpu().numpy()
                        for row, obj_id in enumerate(obj_ids):
                            if masks[row].any():
                                score = float(probs[row][masks[row]].mean())
                                out.setdefault(int(frame), {})[names[obj_id]] = Mask(masks[row], score, obj_id)
                        done += 1
                        if progress:
                            progress(min(done, total), total)
                self.model.reset_state(state)
            del state
        if progress and done < total:
            progress(total, total)
        return dict(sorted(out.items()))
