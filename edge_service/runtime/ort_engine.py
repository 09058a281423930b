"""ONNX Runtime engine: FP32 and INT8 (QDQ) models on CPU, CUDA where present."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_service.errors import EngineError
from edge_service.runtime.engine import EngineBase, EngineInfo

log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, then CPU (always last, as a fallback)."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", CPU) if p in available]


class OrtEngine(EngineBase):
    """One ONNX model in an ``onnxruntime.InferenceSession``."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: Path,
        *,
        variant_id: str,
        precision: str,
        threads: int = 0,
        providers: list[str] | None = None,
    ) -> None:
        self.path = path
        self.variant_id = variant_id
        self.precision = precision
        self.threads = threads
        self.providers = providers or [CPU]
        self._session: ort.InferenceSession | None = None
        self._info: EngineInfo | None = None

    def load(self) -> None:
        """Create the session (idempotent)."""
        if self._session is not None:
            return
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        except Exception as exc:
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        inp = session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else str(d) for d in inp.shape)
        self._info = EngineInfo(
            variant_id=self.variant_id,
            backend=self.backend,
            precision=self.precision,
            input_name=inp.name,
            input_shape=shape,
            output_names=tuple(o.name for o in session.get_outputs()),
            providers=tuple(session.get_providers()),
            threads=self.threads,
        )
        self._session = session
        log.debug("loaded %s from %s on %s", self.variant_id, self.path, self._info.providers)

    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineError(f"engine {self.variant_id} is not loaded; call load() first")
        return self._info

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None or self._info is None:
            raise EngineError(f"engine {self.variant_id} is closed")
        try:
            out = self._session.run(None, {self._info.input_name: batch})
        except Exception as exc:
            raise EngineError(f"{self.variant_id} failed to run: {exc}") from exc
        return np.asarray(out[0])

    def close(self) -> None:
        """Release the session; further ``infer`` calls fail with EngineError."""
        self._session = None
