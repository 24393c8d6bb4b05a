"""A normal run shows no library noise: SAM2's video propagation draws no tqdm bar, and importing it warns nothing.

Run in a fresh process (imports and their warnings happen once per process), on sam2_t with its own random
initialisation: SAM2's weights are not on the package index, and only the output is checked here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import sys, numpy as np, torch
from qpsam.engines import load_engine
from qpsam.sam import Prompt
from qpsam.engines.sam2 import build_sam2_model
torch.manual_seed(0)
torch.set_num_threads(2)
path = sys.argv[1]
torch.save({"model": build_sam2_model("sam2_t").state_dict()}, path)
engine = load_engine("sam2_t", path, device="cpu")
image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
tracked = engine.propagate([image, np.roll(image, 2, axis=1)], {0: [Prompt(box=(5, 5, 30, 30), key="cell")]})
print("frames", sorted(tracked))
"""


@pytest.mark.slow
@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("sam2", "hydra", "torch")),
                    reason="needs torch, sam2 and hydra")
def test_sam2_propagation_prints_no_bar_and_no_warning(tmp_path: Path) -> None:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "sam2_t.pt")], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("frames")
    assert "propagate in video" not in proc.stderr and "it/s" not in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
