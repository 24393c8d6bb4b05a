"""Export a SAM1-family checkpoint to ONNX (image encoder + prompt decoder), once, and find the files again.

The files live in a folder next to the weights, ``<weights>.onnx/<sha256[:16]>/``, or under qpsam's cache folder
(``onnx/<model_type>-<sha256[:16]>/``) when the weights' folder is read-only. Each folder holds the graphs below
(vit_h's encoder with its weights in ``encoder.onnx.data``, past protobuf's 2 GB) and ``manifest.json`` (the
weights' SHA-256, the format version and the SHA-256 of every file).
A folder whose manifest or files do not check out is rebuilt. Folders are built under a temporary name and
renamed into place, so a crash or a second process never leaves a half-written folder behind.

Graphs:

* encoder: ``image`` (1, 3, 1024, 1024) float32, normalised and zero-padded as SAM's ``preprocess`` does ->
  ``embeddings`` (1, 256, 64, 64).
* prepare: ``embeddings`` -> ``image_k``, ``image_v``, ``image_q`` (1, 8, 4096, 16): the projections of the
  image tokens that the decoder's first layer shares between all prompts, once per image.
* decoder: ``embeddings``, the three projections, ``point_coords`` (N, P, 2) in the 1024 frame, ``point_labels``
  (N, P) float (-1 pad, 0 background, 1 foreground, 2/3 box corners) -> ``keys`` (N, 4096, 256) image tokens
  after the two-way transformer, ``hyper`` (N, 4, 32) and ``iou`` (N, 4). No mask input.
* upscale: ``keys`` (N, R, 256) for any R tokens and ``hyper`` -> ``logits`` (N, R, 2, 2, 2, 2, 4): the
  low-resolution (256x256) logits of those tokens' 4x4 pixels. The upscaling is per token, so a box prompt
  needs it only around its box; masks are then upsampled to the image in numpy, only where needed
  (:mod:`.lowres`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fileio import atomic_write
from ..types import Progress
from .weights import file_sha256_cached, weights_home

__all__ = ["FORMAT", "GRAPHS", "PREPARED", "OnnxFiles", "check_folder", "ensure_onnx", "export_onnx", "onnx_folders"]

# Bump when the graphs' inputs or outputs change: older folders are then rebuilt.
FORMAT = 5
OPSET = 17
IMG_SIZE = 1024

GRAPHS = ("encoder.onnx", "prepare.onnx", "decoder.onnx", "upscale.onnx")
PREPARED = ("image_k", "image_v", "image_q")  # outputs of prepare.onnx, inputs of decoder.onnx



@dataclass(frozen=True)
class OnnxFiles:
    """A checked folder of exported graphs for one weights file."""

    folder: Path
    encoder: Path
    prepare: Path
    decoder: Path
    upscale: Path
    rebuilt: bool  # exported by this call (first use, changed weights or a damaged folder)


def _files(folder: Path, rebuilt: bool) -> OnnxFiles:
    return OnnxFiles(
        folder, folder / "encoder.onnx", folder / "prepare.onnx", folder / "decoder.onnx", folder / "upscale.onnx",
        rebuilt,
    )


def onnx_folders(model_type: str, weights: Path, sha256: str) -> list[Path]:
    """Where the files for ``weights`` may live, preferred first: beside the weights, then qpsam's cache."""
    key = sha256[:16]
    return [
        weights.parent / f"{weights.name}.onnx" / key,
        weights_home() / "onnx" / f"{model_type}-{key}",
    ]


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
    for name in GRAPHS:
        if name not in files:
            return f"manifest lacks {name}"
    for name, meta in files.items():
        path = folder / name
        try:
            if path.stat().st_size != int(meta["size"]):
                return f"{name} has the wrong size"
            if file_sha256_cached(path) != meta["sha256"]:
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
                return _files(folder, rebuilt=False)
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
            try:
                folder.parent.rmdir()  # only when empty: a failed first export leaves nothing behind
            except OSError:
                pass
        return _files(folder, rebuilt=True)
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


def _heads(x: Any, heads: int) -> Any:
    """(B, L, H * d) -> (B, H, L, d)."""
    b, length, width = x.shape
    return x.reshape(b, length, heads, width // heads).transpose(1, 2)


def _image_tokens(prompt_encoder: Any, embeddings: Any) -> tuple[Any, Any]:
    """The decoder's image tokens (embeddings plus the no-mask embedding) and their positional encoding, (1, L, C)
    each."""
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    keys = (embeddings + dense).flatten(2).transpose(1, 2)
    return keys, prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)


def _decoder_module(model: Any) -> Any:
    """The prompt encoder + the mask decoder's transformer as one traceable module, built on segment-anything's
    SamOnnxModel (the upscaling is :func:`_upscale_module`, run per token where it is needed).

    The same function as SAM's two-way transformer, arranged for many prompts on one image:

    * Layer 0 sees the same image tokens for every prompt, so their projections come from the prepare graph
      (:func:`_prepare_module`, once per image) and each prompt only attends to them.
    * From layer 1 on every prompt has its own image tokens. Their projections are folded into the few prompt
      tokens (``(x W_k) q = x (W_k q)``, likewise values and outputs): per-prompt work on image tokens at the
      width of ``heads x tokens`` (8 x 7) instead of 128.
    * The positional encoding is never added to the per-prompt image tokens: its projections are constants of
      the graph, and its part of the attention logits is added at that narrow width.
    """
    import math

    import torch
    from segment_anything.utils.onnx import SamOnnxModel

    def token_to_image(attn: Any, q: Any, keys: Any, pos: Any) -> Any:
        """``attn(q=tokens, k=keys + pos, v=keys)`` for per-prompt ``keys`` (N, L, C) and shared ``pos``; the
        key bias drops out of the softmax."""
        n, t, _ = q.shape
        heads = attn.num_heads
        d = attn.internal_dim // heads
        c = keys.shape[-1]
        qh = _heads(attn.q_proj(q), heads)  # (N, H, T, d)
        folded = (qh @ attn.k_proj.weight.reshape(heads, d, c)).reshape(n, heads * t, c)
        pos_k = _heads(pos @ attn.k_proj.weight.t(), heads)  # (1, H, L, d): a constant of the graph
        logits = (folded @ keys.transpose(1, 2)).reshape(n, heads, t, -1) + qh @ pos_k.transpose(2, 3)
        probs = torch.softmax(logits / math.sqrt(d), dim=-1)
        pv = (probs.reshape(n, heads * t, -1) @ keys).reshape(n, heads, t, c)  # value bias after: rows sum to 1
        out = pv @ attn.v_proj.weight.reshape(heads, d, c).transpose(1, 2) + attn.v_proj.bias.reshape(heads, 1, d)
        return attn.out_proj(out.transpose(1, 2).reshape(n, t, heads * d))

    def shared_token_to_image(attn: Any, q: Any, image_k: Any, image_v: Any) -> Any:
        """``attn(q=tokens, k=keys + pos, v=keys)`` with the image side projected beforehand (1, H, L, d)."""
        n, t, _ = q.shape
        heads = attn.num_heads
        d = attn.internal_dim // heads
        qh = _heads(attn.q_proj(q), heads)  # (N, H, T, d)
        probs = torch.softmax((qh @ image_k.transpose(2, 3)) / math.sqrt(d), dim=-1)
        return attn.out_proj((probs @ image_v).transpose(1, 2).reshape(n, t, heads * d))

    def image_to_token(attn: Any, keys: Any, pos: Any, k: Any, v: Any, image_q: Any = None) -> Any:
        """``attn(q=keys + pos, k=tokens, v=tokens)``; for layer 0 the image side comes projected (``image_q``)."""
        n, t, c = k.shape
        heads = attn.num_heads
        d = attn.internal_dim // heads
        kh = _heads(attn.k_proj(k), heads)  # (N, H, T, d)
        if image_q is not None:
            logits = (image_q @ kh.transpose(2, 3)).transpose(1, 2)  # (N, L, H, T)
        else:
            folded = (kh @ attn.q_proj.weight.reshape(heads, d, c)).reshape(n, heads * t, c)
            pos_q = _heads(pos @ attn.q_proj.weight.t() + attn.q_proj.bias, heads)  # constant (1, H, L, d)
            logits = (keys @ folded.transpose(1, 2)).reshape(n, -1, heads, t) + (
                pos_q @ kh.transpose(2, 3)
            ).transpose(1, 2)
        length = logits.shape[1]
        probs = torch.softmax(logits / math.sqrt(d), dim=-1).reshape(n, length, heads * t)
        vh = _heads(attn.v_proj(v), heads)
        w_out = attn.out_proj.weight.reshape(c, heads, d).permute(1, 2, 0)  # (H, d, C)
        # each head's probabilities sum to 1, so a row of probs sums to H: the output bias rides in the product
        # (one pass over the N x 4096 x 256 result fewer)
        return probs @ ((vh @ w_out).reshape(n, heads * t, c) + attn.out_proj.bias / heads)

    def block(layer: Any, queries: Any, keys: Any, query_pe: Any, key_pe: Any,
              shared: tuple[Any, Any, Any] | None = None) -> tuple[Any, Any]:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        q = queries + query_pe
        if shared is not None:
            attended = shared_token_to_image(layer.cross_attn_token_to_image, q, shared[0], shared[1])
        else:
            attended = token_to_image(layer.cross_attn_token_to_image, q, keys, key_pe)
        queries = layer.norm2(queries + attended)
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + image_to_token(layer.cross_attn_image_to_token, keys, key_pe,
                                                 queries + query_pe, queries, None if shared is None else shared[2]))
        return queries, keys

    class TokenDecoder(SamOnnxModel):
        """SamOnnxModel's point embedding and the two-way transformer, without mask input or upscaling: the
        image tokens after the transformer (N, L, C), the hypernetwork outputs (N, K, C') and the IoU scores."""

        @torch.no_grad()
        def forward(
            self, embeddings: Any, image_k: Any, image_v: Any, image_q: Any, point_coords: Any, point_labels: Any
        ) -> tuple[Any, Any, Any]:
            prompt_encoder = self.model.prompt_encoder
            decoder = self.model.mask_decoder
            sparse = self._embed_points(point_coords, point_labels)
            n = sparse.shape[0]
            output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
            tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
            keys, pos = _image_tokens(prompt_encoder, embeddings)  # keys shared until layer 0 ends
            transformer = decoder.transformer
            queries = tokens
            for i, layer in enumerate(transformer.layers):
                queries, keys = block(layer, queries, keys, tokens, pos, (image_k, image_v, image_q) if i == 0 else None)
            final = token_to_image(transformer.final_attn_token_to_image, queries + tokens, keys, pos)
            queries = transformer.norm_final_attn(queries + final)
            hyper = torch.stack(
                [mlp(queries[:, 1 + i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
            )
            return keys, hyper, decoder.iou_prediction_head(queries[:, 0])

    return TokenDecoder(model, return_single_mask=False).eval()


def _prepare_module(model: Any) -> Any:
    """The projections of the image tokens that the decoder's first layer shares between all prompts: keys and
    values of its token-to-image attention and queries of its image-to-token attention, as (1, H, L, d)."""
    import torch

    class Prepare(torch.nn.Module):
        def __init__(self, sam: Any) -> None:
            super().__init__()
            self.prompt_encoder = sam.prompt_encoder
            self.layer = sam.mask_decoder.transformer.layers[0]

        @torch.no_grad()
        def forward(self, embeddings: Any) -> tuple[Any, Any, Any]:
            keys, pos = _image_tokens(self.prompt_encoder, embeddings)
            positioned = keys + pos
            t2i, i2t = self.layer.cross_attn_token_to_image, self.layer.cross_attn_image_to_token
            return (_heads(t2i.k_proj(positioned), t2i.num_heads), _heads(t2i.v_proj(keys), t2i.num_heads),
                    _heads(i2t.q_proj(positioned), i2t.num_heads))

    return Prepare(model).eval()


def _upscale_module(model: Any) -> Any:
    """SAM's ``output_upscaling`` and hypernetwork product for any set of image tokens, channels last.

    Each 2x2 transposed convolution (stride 2) is one matrix product per token, and every step after it (layer
    norm, GELU) is per pixel too, so tokens are independent: the graph takes ``keys`` (N, R, C) for R tokens of
    the 64x64 grid (all of them, or only those around a box) and returns ``logits`` (N, R, 2, 2, 2, 2, K): the
    4x4 low-resolution pixels of each token in (row, column, row, column) subpixel order, for each of K masks.
    """
    import torch

    class Upscale(torch.nn.Module):
        def __init__(self, layers: Any) -> None:
            super().__init__()
            self.layers = layers  # a submodule, so that tracing sees its weights as parameters

        @torch.no_grad()
        def forward(self, keys: Any, hyper: Any) -> Any:
            conv1, norm, act1, conv2, act2 = self.layers
            n, r, _ = keys.shape
            c1, c2 = conv1.out_channels, conv2.out_channels
            w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)
            x = (keys @ w1).reshape(n, -1, c1) + conv1.bias
            x = act1(torch.nn.functional.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
            w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
            x = act2((x @ w2).reshape(n, -1, c2) + conv2.bias)
            masks = x @ hyper.transpose(1, 2)  # (N, R * 16, K) in (token, a, b, a2, b2) order
            return masks.reshape(n, r, 2, 2, 2, 2, hyper.shape[1])

    return Upscale(model.mask_decoder.output_upscaling).eval()


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
    """Export ``module`` to ``path``; a graph over protobuf's 2 GB (vit_h's encoder) keeps its weights in one
    ``<name>.data`` file beside it instead of the file per tensor that torch writes."""
    import tempfile
    import warnings

    import torch

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        out = Path(scratch) / path.name
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(out),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic or None,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        if len(list(Path(scratch).iterdir())) == 1:
            # not fileio.atomic_write: a graph with its weights inside is up to 2 GB (vit_l's encoder), too much to
            # read back into memory; torch wrote it in this folder, so the rename alone is atomic
            os.replace(out, path)
            return
        import onnx

        onnx.save_model(onnx.load(str(out)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)


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
    prepare = _prepare_module(model)
    _export(prepare, (embeddings,), folder / "prepare.onnx", ["embeddings"], list(PREPARED), {})
    coords = torch.randint(0, IMG_SIZE, (2, 3, 2)).float()
    labels = torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0]])
    _export(
        _decoder_module(model),
        (embeddings, *prepare(embeddings), coords, labels),
        folder / "decoder.onnx",
        ["embeddings", *PREPARED, "point_coords", "point_labels"],
        ["keys", "hyper", "iou"],
        {
            "point_coords": {0: "prompts", 1: "points"},
            "point_labels": {0: "prompts", 1: "points"},
            "keys": {0: "prompts"},
            "hyper": {0: "prompts"},
            "iou": {0: "prompts"},
        },
    )
    tokens = torch.zeros(2, 5, model.prompt_encoder.embed_dim)
    hyper = torch.zeros(2, model.mask_decoder.num_mask_tokens, model.mask_decoder.transformer_dim // 8)
    _export(
        _upscale_module(model),
        (tokens, hyper),
        folder / "upscale.onnx",
        ["keys", "hyper"],
        ["logits"],
        {
            "keys": {0: "prompts", 1: "tokens"},
            "hyper": {0: "prompts", 1: "masks"},
            "logits": {0: "prompts", 1: "tokens", 6: "masks"},
        },
    )
    files = {
        p.name: {"sha256": file_sha256_cached(p), "size": p.stat().st_size}
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
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    if progress:
        progress(2, 2)
