"""SAM1-family engine whose image encoder runs on OpenVINO: :class:`OnnxSamEngine` over the same exported graphs.

Only the runtime differs: OpenVINO compiles the encoder graph that :mod:`.onnx_export` wrote (in bf16 where the
CPU has bf16 arithmetic of its own, see :func:`choose_precision`), and the prompt graphs stay on ONNX Runtime,
where they are as fast (OpenVINO runs them too when onnxruntime is not installed). Prompts, box windows, automask
and the embedding cache are :class:`OnnxSamEngine`'s.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .onnx_sam import Graph, OnnxSamEngine, onnxruntime_available, ort_session

__all__ = [
    "AUTO_BF16", "OpenVinoSamEngine", "choose_precision", "cpu_flags", "host_native_bf16", "native_bf16",
    "openvino_available", "require_openvino",
]

# Whether precision="auto" takes bf16 on a CPU with native bf16. Not yet: against torch fp32 on the nuclei demo,
# bf16 kept the 125 box masks (mean IoU 0.995, min 0.96, ground-truth score -0.0003) but automask (16 points per
# side) lost 5 of torch's 97 masks at its score thresholds (mean best IoU of torch's masks 0.973 < 0.99).
# fp32 gives torch's masks exactly. bf16 stays opt-in (precision="bf16"); see README "OpenVINO".
AUTO_BF16 = False

# CPU flags (Linux /proc/cpuinfo names) of bf16 arithmetic in hardware: AVX512-BF16, AMX-BF16
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_PRECISIONS = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "f32": "fp32", "bf16": "bf16", "bfloat16": "bf16"}


def openvino_available() -> bool:
    """Whether openvino imports here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def require_openvino() -> Any:
    """The ``openvino`` module, or a :class:`ModelError` that names the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise ModelError(
            "the openvino engine needs OpenVINO: pip install 'qpsam[openvino]' (or use --engine onnx or torch)"
        ) from exc
    return openvino


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags from ``path`` (Linux), or None where there is no such file."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return None


def native_bf16(capabilities: Collection[str], flags: Collection[str] | None) -> bool:
    """Whether bf16 runs in hardware: OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES`` list BF16 and, where the CPU's
    ``flags`` are known, they include AVX512-BF16 or AMX-BF16 (without them bf16 would be emulated, slower)."""
    if "BF16" not in {str(c).upper() for c in capabilities}:
        return False
    return flags is None or bool(_BF16_FLAGS & {str(f).lower() for f in flags})


def host_native_bf16() -> bool:
    """Whether this machine's CPU runs bf16 natively, as OpenVINO and /proc/cpuinfo tell (False without OpenVINO)."""
    if not openvino_available():
        return False
    import openvino

    return native_bf16(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"), cpu_flags())


def choose_precision(
    requested: str | None, capabilities: Collection[str], flags: Collection[str] | None, auto_bf16: bool = AUTO_BF16
) -> str:
    """The encoder's arithmetic, ``"bf16"`` or ``"fp32"``, for ``precision=requested`` on a CPU with these
    OpenVINO capabilities and CPU flags: auto is bf16 where the CPU has it natively and ``auto_bf16`` (see
    :data:`AUTO_BF16`), else fp32; bf16 asked for on a CPU without it is an error, not a silent emulation."""
    name = _PRECISIONS.get(str(requested or "auto").lower())
    if name is None:
        raise ModelError(
            f"precision {requested!r} is not one the openvino engine runs; choose auto, fp32 or bf16"
        )
    native = native_bf16(capabilities, flags)
    if name == "auto":
        return "bf16" if native and auto_bf16 else "fp32"
    if name == "bf16" and not native:
        raise ModelError(
            "precision 'bf16' needs a CPU with bf16 arithmetic (AVX512-BF16 or AMX) for the openvino engine; "
            "this one has none: use precision fp32 or auto"
        )
    return name


class OpenVinoGraph:
    """A graph compiled by OpenVINO for the CPU, with ONNX Runtime's ``run(None, feeds)``."""

    def __init__(self, core: Any, path: Path, config: dict[str, Any]) -> None:
        config = dict(config)
        cache = path.parent / "openvino-cache"
        # OpenVINO keeps the compiled blob beside the exported graph: a later load skips the 1-3 s compile. A
        # read-only export folder (a shared install) just compiles every time.
        if os.access(path.parent, os.W_OK):
            config["CACHE_DIR"] = str(cache)
        self.compiled = core.compile_model(str(path), "CPU", config)
        self._request = self.compiled.create_infer_request()
        self._outputs = list(self.compiled.outputs)

    def property(self, name: str) -> Any:
        """A property of the compiled graph (``INFERENCE_NUM_THREADS``, ``INFERENCE_PRECISION_HINT``...)."""
        return self.compiled.get_property(name)

    def run(self, output_names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # inputs are read in place; outputs are copied out, since the request reuses its buffers on the next run
        # and an encoding lives on in the embedding cache
        result = self._request.infer(feeds, share_inputs=True, share_outputs=False)
        return [np.asarray(result[output]) for output in self._outputs]


class OpenVinoSamEngine(OnnxSamEngine):
    """SAM1/MobileSAM with the image encoder on OpenVINO (CPU), the prompt graphs on ONNX Runtime.

    ``precision``: auto, fp32 or bf16 for the encoder (see :func:`choose_precision`); ``threads``: OpenVINO's
    ``INFERENCE_NUM_THREADS`` and ONNX Runtime's intra-op threads; ``openvino_graphs``: which of encoder, prepare,
    decoder, upscale OpenVINO runs (default: the encoder; all four without onnxruntime)."""

    engine_name = "openvino"

    def __init__(self, *args: Any, openvino_graphs: Sequence[str] | None = None, **kwargs: Any) -> None:
        graphs = tuple(openvino_graphs) if openvino_graphs is not None else ("encoder",)
        unknown = set(graphs) - {"encoder", "prepare", "decoder", "upscale"}
        if unknown or "encoder" not in graphs:
            raise ModelError(
                f"openvino_graphs must include 'encoder' and name only encoder, prepare, decoder, upscale; "
                f"got {list(graphs)}"
            )
        self.openvino_graphs = graphs
        super().__init__(*args, **kwargs)

    def _configure(self, device: str, precision: str) -> None:
        ov = require_openvino()
        if (device or "auto").lower() not in ("auto", "cpu"):
            raise ModelError(f"the openvino engine runs on the cpu, not device {device!r}")
        self._core = ov.Core()
        capabilities = self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.precision = choose_precision(precision, capabilities, cpu_flags())
        # bf16 encodings differ from fp32 ones beyond the last digits: each precision has its own cache entries
        self.cache_tag = f"-openvino-{self.precision}"
        if not onnxruntime_available():
            self.openvino_graphs = ("encoder", "prepare", "decoder", "upscale")

    def _config(self, precision: str) -> dict[str, Any]:
        # one stream on ``threads`` threads: one image at a time, as fast as it goes (the engine is not reentrant)
        return {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }

    def _sessions(self) -> tuple[Graph, Graph, Graph, Graph]:
        files = self.files

        def load(name: str, path: Path) -> Graph:
            if name == "encoder":
                return OpenVinoGraph(self._core, path, self._config(self.precision))
            if name in self.openvino_graphs:  # the prompt graphs in fp32: their outputs are thresholded directly
                return OpenVinoGraph(self._core, path, self._config("fp32"))
            return ort_session(path, self.threads)

        return (load("encoder", files.encoder), load("prepare", files.prepare), load("decoder", files.decoder),
                load("upscale", files.upscale))
