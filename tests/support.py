"""Test support: a trivial but real Engine, for pool and loop tests that need no model."""

from __future__ import annotations

import numpy as np

from edge_service.errors import EngineError
from edge_service.runtime.engine import EngineBase, EngineInfo


class ConstantEngine(EngineBase):
    """Returns ``value`` for every input; records ``close()``; fails once closed."""

    def __init__(self, variant_id: str, value: float = 0.0) -> None:
        self.variant_id, self.value, self.closed = variant_id, value, False

    def load(self) -> None:
        pass

    def info(self) -> EngineInfo:
        return EngineInfo(self.variant_id, "test", "fp32", "input", ("batch", 1, 4, 4), ("out",))

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.closed:
            raise EngineError(f"{self.variant_id} is closed")
        return np.full((batch.shape[0], 2), self.value, dtype=np.float32)

    def close(self) -> None:
        self.closed = True


MAX_BODY = 65_536  # the body limit the integration server runs with
