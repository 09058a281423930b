"""The Engine protocol every backend implements (ONNX Runtime now, TensorRT on a Jetson).

Like Polygraphy's runners: ``load`` / ``infer`` / ``close`` / ``info``, usable as a context
manager; the public ``infer`` validates its input, backends differ in ``_infer_impl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EngineInfo:
    """What an engine is and what it takes."""

    variant_id: str
    backend: str
    precision: str
    input_name: str
    input_shape: tuple[int | str, ...]
    output_names: tuple[str, ...]
    providers: tuple[str, ...] = field(default_factory=tuple)
    threads: int = 0


@runtime_checkable
class Engine(Protocol):
    """A loaded model that maps an (N, C, H, W) float32 batch to (N, K) outputs."""

    def load(self) -> None: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...

    def info(self) -> EngineInfo: ...


class EngineBase:
    """Shared validation and context-manager plumbing for engines."""

    def __enter__(self) -> EngineBase:
        self.load()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def load(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def info(self) -> EngineInfo:
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; checks rank, dtype and the fixed dimensions first."""
        from edge_service.errors import BadInputError

        info = self.info()
        expected = info.input_shape
        if batch.ndim != len(expected) or batch.dtype != np.float32:
            raise BadInputError(
                f"{info.variant_id} takes a float32 tensor of shape {list(expected)}, "
                f"got {batch.dtype} {list(batch.shape)}"
            )
        for got, want in zip(batch.shape[1:], expected[1:], strict=True):
            if isinstance(want, int) and got != want:
                raise BadInputError(
                    f"{info.variant_id} takes shape {list(expected)}, got {list(batch.shape)}"
                )
        return self._infer_impl(np.ascontiguousarray(batch))

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError
