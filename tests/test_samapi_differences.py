"""What the README's "differences from samapi" section states, checked: MobileSAM's attention biases are used,
and polygons keep their holes and every piece."""

from __future__ import annotations

import numpy as np
import pytest

from qpsam.geometry import Region, mask_to_geometry


@pytest.mark.weights
def test_mobile_sam_attention_biases_are_loaded_not_zero(mobile_sam) -> None:
    import torch
    from mobile_sam.modeling.tiny_vit_sam import Attention

    from qpsam.engines._torch import read_checkpoint
    from qpsam.engines.torch_sam import build_sam1

    attentions = [m for m in mobile_sam.predictor.model.image_encoder.modules() if isinstance(m, Attention)]
    assert attentions
    for m in attentions:  # the table eval mode uses is the checkpoint's biases, gathered
        assert torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]) and m.ab.abs().sum() > 0
    # samapi's order (the builder sets eval mode, then the weights are loaded) leaves that table at its initial zeros
    model, _ = build_sam1("vit_t")
    model.load_state_dict(read_checkpoint(mobile_sam.weights_path, "vit_t"))
    stale = [m for m in model.image_encoder.modules() if isinstance(m, Attention)]
    assert all(m.ab.abs().sum() == 0 for m in stale)


def test_polygons_keep_holes_and_every_piece() -> None:
    mask = np.zeros((40, 60), bool)
    mask[5:30, 5:30] = True
    mask[12:20, 12:20] = False  # a hole
    mask[10:20, 40:55] = True  # a second piece
    geometry = mask_to_geometry(mask, Region(100, 200, 60, 40))
    assert geometry.geom_type == "MultiPolygon" and len(geometry.geoms) == 2
    assert sum(len(p.interiors) for p in geometry.geoms) == 1
    assert geometry.area == pytest.approx(mask.sum())
