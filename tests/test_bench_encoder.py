"""The FLOP count of benchmarks/bench_encoder.py on layers whose FLOPs are known by hand (the benchmark itself,
with models and timings, is never run here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the FLOP count needs torch: pip install 'qpsam[sam]'")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_encoder.py"
_spec = importlib.util.spec_from_file_location("bench_encoder", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_encoder"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)


class _Small(torch.nn.Module):
    """A 3x3 convolution, a linear layer and a batched product of the tokens with themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, kernel_size=3)  # no padding: 10x10 -> 8x8
        self.linear = torch.nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).flatten(2).transpose(1, 2)[0]  # (64, 5)
        tokens = torch.nn.functional.gelu(self.linear(tokens))[None]  # (1, 64, 4); GELU is element-wise: not counted
        return torch.bmm(tokens, tokens.transpose(1, 2))  # (1, 64, 64)


def test_flops_are_twice_the_multiply_adds_of_products_and_convolutions() -> None:
    count = bench.count_flops(_Small().eval(), torch.zeros(1, 3, 10, 10))
    conv = 2 * (8 * 8) * 5 * (3 * 3 * 3)  # outputs x out-channels x (in-channels x kernel)
    linear = 2 * 64 * 5 * 4
    bmm = 2 * 64 * 64 * 4
    assert count.by_op == {"convolution": conv, "addmm": linear, "bmm": bmm}
    assert count.total == conv + linear + bmm
    assert count.gflop == pytest.approx((conv + linear + bmm) / 1e9)
