"""Every engine the service loads runs once before it serves: its first served call does
not pay for the runtime's first-run allocations, and one that cannot run fails at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import ConstantEngine

from edge_service.errors import EngineError
from edge_service.runtime.engine import EngineInfo
from edge_service.server import engines
from edge_service.server.engines import engine_loader, warm


class Recording(ConstantEngine):
    def __init__(self, shape: tuple[int | str, ...], fail: bool = False) -> None:
        super().__init__("v")
        self.shape, self.fail, self.seen = shape, fail, []

    def info(self) -> EngineInfo:
        return EngineInfo("v", "test", "fp32", "input", self.shape, ("out",))

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.fail:
            raise EngineError("v failed to run: broken kernel")
        self.seen.append(batch.shape)
        return super()._infer_impl(batch)


def test_warm_runs_one_row_of_zeros_of_the_engines_shape() -> None:
    e = Recording(("batch", 3, 32, 32))
    assert warm(e) is True
    assert e.seen == [(1, 3, 32, 32)]


def test_warm_runs_nothing_when_a_dimension_other_than_the_batch_is_free() -> None:
    e = Recording(("batch", 3, "height", "width"))
    assert warm(e) is False
    assert e.seen == []


def test_an_engine_that_cannot_run_fails_at_load_and_is_closed(monkeypatch) -> None:
    broken = Recording((1, 1, 4, 4), fail=True)
    monkeypatch.setattr(engines, "open_engine", lambda variant, family_dir, threads: broken)

    class Catalog:
        def variant(self, vid: str) -> object:
            return object()

    load = engine_loader(Catalog(), Path("."), 1)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="broken kernel"):
        load("v")
    assert broken.closed
