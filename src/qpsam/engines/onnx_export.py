"""Export a SAM1-family checkpoint to ONNX (image encoder + prompt decoder), once, and find the files again.

The files live in a folder next to the weights, ``<weights>.onnx/<sha256[:16]>/``, or under qpsam's cache folder
(``onnx/<model_type>-<sha256[:16]>/``) when the weights' folder is read-only. Each folder holds ``encoder.onnx``,
``decoder.onnx`` and ``manifest.json`` (the weights' SHA-256, the format version and the SHA-256 of every file).
A folder whose manifest or files do not check out is rebuilt. Folders are built under a temporary name and
renamed into place, so a crash or a second process never leaves a half-written folder behind.

Graphs:

* encoder: ``image`` (1, 3, 1024, 1024) float32, normalised and zero-padded as SAM's ``preprocess`` does ->
  ``embeddings`` (1, 256, 64, 64).
* decoder: ``embeddings``, ``point_coords`` (N, P, 2) in the 1024 frame, ``point_labels`` (N, P) float (-1 pad,
  0 background, 1 foreground, 2/3 box corners) -> ``low_res_masks`` (N, 4, 256, 256) logits and ``iou`` (N, 4).
  No mask input and no upsampling: masks are upsampled in numpy, only where needed (:mod:`.lowres`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError

__all__ = ["OnnxFiles", "FORMAT", "ensure_onnx", "onnx_folders", "check_folder", "export_onnx"]

# Bump when the graphs' inputs or outputs change: older folders are then rebuilt.
FORMAT = 1
OPSET = 17
IMG_SIZE = 1024

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class OnnxFiles:
    """A checked folder of exported graphs for one weights file."""

    folder: Path
    encoder: Path
    decoder: Path
    rebuilt: bool  # exported by this call (first use, changed weights or a damaged folder)


def onnx_folders(model_type: str, weights: Path, sha256: str) -> list[Path]:
    """Where the files for ``weights`` may live, preferred first: beside the weights, then qpsam's cache."""
    from ..weights import weights_home

    key = sha256[:16]
    return [
        weights.parent / f"{weights.name}.onnx" / key,
        weights_home() / "onnx" / f"{model_type}-{key}",
    ]


_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) in this process (large encoders are GBs)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = value
    return value


def check_folder(folder: Path, model_type: str, sha256: str) -> str | None:
    """None when ``folder`` holds intact graphs for these weights, else why not (missing, stale or corrupt)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return "no manifest"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        files = dict(data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable manifest"
    if data.get("format") != FORMAT or data.get("model_type") != model_type:
        return f"format {data.get('format')} for {data.get('model_type')}, need {FORMAT} for {model_type}"
    if data.get("weights_sha256") != sha256:
        return "exported from other weights"
    for name in ("encoder.onnx", "decoder.onnx"):
        if name not in files:
            return f"manifest lacks {name}"
    for name, meta in files.items():
        path = folder / name
        try:
            if path.stat().st_size != int(meta["size"]):
                return f"{name} has the wrong size"
            if _sha256(path) != meta["sha256"]:
                return f"{name} fails its checksum"
        except (OSError, KeyError, TypeError, ValueError):
            return f"{name} is missing"
    return None


def ensure_onnx(
    model_type: str, weights: Path, sha256: str, progress: Progress | None = None, rebuild: bool = False
) -> OnnxFiles:
    """The exported graphs for ``weights`` (SHA-256 ``sha256``): found and checked, or exported now."""
    folders = onnx_folders(model_type, Path(weights), sha256)
    if not rebuild:
        for folder in folders:
            if folder.is_dir() and check_folder(folder, model_type, sha256) is None:
                return OnnxFiles(folder, folder / "encoder.onnx", folder / "decoder.onnx", rebuilt=False)
    errors = []
    for folder in folders:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = folder.parent / f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            staging.mkdir()
        except OSError as exc:  # read-only weights folder: try the next place
            errors.append(f"{folder.parent}: {exc.strerror or exc}")
            continue
        try:
            export_onnx(model_type, Path(weights), sha256, staging, progress)
            _move_into_place(staging, folder, model_type, sha256)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return OnnxFiles(folder, folder / "encoder.onnx", folder / "decoder.onnx", rebuilt=True)
    raise ModelError(f"cannot write ONNX files for {weights} anywhere: {'; '.join(errors)}")


def _move_into_place(staging: Path, folder: Path, model_type: str, sha256: str) -> None:
    """Rename ``staging`` to ``folder``; a damaged ``folder`` is moved aside first, an intact one (another
    process finished first) is kept."""
    for _ in range(3):
        try:
            os.rename(staging, folder)
            return
        except OSError:
            if not folder.exists():
                raise
        if check_folder(folder, model_type, sha256) is None:
            return
        aside = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.bad"
        try:
            os.rename(folder, aside)
        except OSError:
            continue
        shutil.rmtree(aside, ignore_errors=True)
    raise ModelError(f"cannot replace the ONNX folder {folder}")


# ------------------------------------------------------------------------------------------------------ export


def _decoder_module(model: Any) -> Any:
    """The prompt encoder + mask decoder as one traceable module (built on segment-anything's SamOnnxModel)."""
    import torch
    from segment_anything.utils.onnx import SamOnnxModel

    class LowResDecoder(SamOnnxModel):
        """SamOnnxModel's point embedding, without mask input or upsampling; all four masks and scores."""

        @torch.no_grad()
        def forward(self, embeddings: Any, point_coords: Any, point_labels: Any) -> tuple[Any, Any]:  # type: ignore[override]
            sparse = self._embed_points(point_coords, point_labels)
            dense = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            masks, iou = self.model.mask_decoder.predict_masks(
                image_embeddings=embeddings,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
            )
            return masks, iou

    return LowResDecoder(model, return_single_mask=False).eval()


class _Encoder:
    """Wraps the image encoder so that export sees a plain module (built lazily: torch is imported late)."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self, encoder: Any) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, image: Any) -> Any:
                return self.encoder(image)

        return Encoder(model.image_encoder).eval()


def _export(module: Any, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic or None,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_onnx(model_type: str, weights: Path, sha256: str, folder: Path, progress: Progress | None = None) -> None:
    """Build the model from ``weights`` and write ``encoder.onnx``, ``decoder.onnx`` and the manifest to ``folder``."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            f"exporting {model_type} to ONNX needs PyTorch once per weights file: pip install 'qpsam[sam]'"
        ) from exc
    from ._torch import load_into, read_checkpoint
    from .torch_sam import build_sam1

    state = read_checkpoint(weights, model_type)
    model, _ = build_sam1(model_type)
    load_into(model, state, weights, model_type)
    del state
    model.eval()
    if progress:
        progress(0, 2)
    image = torch.zeros(1, 3, IMG_SIZE, IMG_SIZE)
    _export(_Encoder.build(model), (image,), folder / "encoder.onnx", ["image"], ["embeddings"], {})
    if progress:
        progress(1, 2)
    embed = model.prompt_encoder.image_embedding_size
    embeddings = torch.zeros(1, model.prompt_encoder.embed_dim, *embed)
    coords = torch.randint(0, IMG_SIZE, (2, 3, 2)).float()
    labels = torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0]])
    _export(
        _decoder_module(model),
        (embeddings, coords, labels),
        folder / "decoder.onnx",
        ["embeddings", "point_coords", "point_labels"],
        ["low_res_masks", "iou"],
        {
            "point_coords": {0: "prompts", 1: "points"},
            "point_labels": {0: "prompts", 1: "points"},
            "low_res_masks": {0: "prompts"},
            "iou": {0: "prompts"},
        },
    )
    files = {
        p.name: {"sha256": _sha256(p), "size": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }
    manifest = {
        "format": FORMAT,
        "model_type": model_type,
        "weights": str(weights),
        "weights_sha256": sha256,
        "opset": OPSET,
        "torch": str(torch.__version__),
        "files": files,
    }
    tmp = folder / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "manifest.json")
    if progress:
        progress(2, 2)
