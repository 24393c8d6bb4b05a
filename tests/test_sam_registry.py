"""The one registry of model types, and the light vocabulary module around it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qpsam.engines.weights import CHECKPOINTS, default_weights
from qpsam.errors import ModelError
from qpsam.sam import MODEL_TYPES, MODELS, SAM1_TYPES, SAM2_TYPES, VIDEO_TYPES, check_model_type


def test_lists_of_model_types_come_from_the_registry() -> None:
    assert MODEL_TYPES == ("vit_h", "vit_l", "vit_b", "vit_t", "sam2_l", "sam2_bp", "sam2_s", "sam2_t", "sam3")
    assert SAM1_TYPES == ("vit_h", "vit_l", "vit_b", "vit_t")
    assert SAM2_TYPES == ("sam2_l", "sam2_bp", "sam2_s", "sam2_t")
    assert VIDEO_TYPES == SAM2_TYPES + ("sam3",)
    assert [t for t, m in MODELS.items() if m.text] == ["sam3"]
    assert [t for t, m in MODELS.items() if m.onnx] == list(SAM1_TYPES)


def test_every_model_type_has_official_weights() -> None:
    assert {m.weights for m in MODELS.values()} == set(CHECKPOINTS)
    assert default_weights("vit_t").sha256 is not None and default_weights("sam2_t").config is not None


def test_unknown_model_type_names_the_known_ones() -> None:
    assert check_model_type("sam2_s").family == "sam2"
    with pytest.raises(ModelError, match="unknown model type 'vit_x'; choose one of vit_h, vit_l"):
        check_model_type("vit_x")


def test_vocabulary_is_light() -> None:
    code = ("import sys, qpsam.sam, qpsam.types; heavy = ('torch', 'shapely', 'httpx', 'PIL'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
