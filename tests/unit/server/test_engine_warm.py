"""An engine about to serve runs once first where that pays: its first served call does
not pay for the runtime's first-run allocations, and one that cannot run fails before a
request reaches it; a variant whose first call costs what the next does is not run."""

from __future__ import annotations

import numpy as np
import pytest
from support import Clock, ConstantEngine, ThreadedEngine, profiled_catalog, profiled_variant

from edge_service.errors import EngineError
from edge_service.runtime.engine import EngineInfo
from edge_service.runtime.idle_loader import may_restore_priority
from edge_service.server.engines import (
    Warmer,
    at_threads,
    idle_loads_allowed,
    shadow_timeout_s,
)


class Timed(ConstantEngine):
    """Each call advances ``clock`` by the next of ``costs_s`` (the last one repeats)."""

    def __init__(
        self, clock: Clock, costs_s: list[float], shape: tuple[int | str, ...] = ("b", 3, 8, 8)
    ) -> None:
        super().__init__("v")
        self.clock, self.costs, self.shape, self.seen = clock, costs_s, shape, []
        self.fail = False

    def info(self) -> EngineInfo:
        return EngineInfo("v", "test", "fp32", "input", self.shape, ("out",))

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.fail:
            raise EngineError("v failed to run: broken kernel")
        self.seen.append(batch.shape)
        self.clock.t += self.costs[min(len(self.seen), len(self.costs)) - 1]
        return super()._infer_impl(batch)


def test_a_variant_with_a_slow_first_call_is_warmed_every_time_it_loads() -> None:
    clock = Clock()
    warmer = Warmer(clock)
    first = Timed(clock, [0.003, 0.001])  # ONNX Runtime on a small classifier: 3x
    warmer("v", first)
    assert first.seen == [(1, 3, 8, 8), (1, 3, 8, 8)]  # measured: cold, then warm
    assert warmer.pays("v") is True
    again = Timed(clock, [0.003, 0.001])
    warmer("v", again)
    assert again.seen == [(1, 3, 8, 8)]  # known to pay: one run


def test_an_engine_is_warmed_once_whoever_asks_again() -> None:
    clock = Clock()
    warmer = Warmer(clock)
    standby = Timed(clock, [0.003, 0.001])
    warmer("v", standby)  # the idle loader warmed it on standby
    assert len(standby.seen) == 2
    warmer("v", standby)  # the swap to it: nothing left to pay
    assert len(standby.seen) == 2
    other = Timed(clock, [0.003, 0.001])
    warmer("v", other)  # another engine of the variant still is
    assert len(other.seen) == 1


def test_a_variant_whose_first_call_costs_what_the_next_does_is_not_run_again() -> None:
    clock = Clock()
    warmer = Warmer(clock)
    warmer("det", Timed(clock, [0.110, 0.100]))  # a detector: the first call is no slower
    assert warmer.pays("det") is False
    later = Timed(clock, [0.110, 0.100])
    warmer("det", later)
    assert later.seen == []
    warmer.forget(["det"])  # its artifact was rebuilt: measured again
    rebuilt = Timed(clock, [0.110, 0.100])
    warmer("det", rebuilt)
    assert len(rebuilt.seen) == 2


def test_nothing_runs_when_a_dimension_other_than_the_batch_is_free() -> None:
    clock = Clock()
    warmer = Warmer(clock)
    free = Timed(clock, [0.01], shape=("batch", 3, "height", "width"))
    warmer("v", free)
    assert free.seen == [] and warmer.pays("v") is None


def test_an_engine_that_cannot_run_raises_from_the_warm_run() -> None:
    clock = Clock()
    broken = Timed(clock, [0.01])
    broken.fail = True
    with pytest.raises(EngineError, match="broken kernel"):
        Warmer(clock)("v", broken)


@pytest.mark.parametrize(
    ("engine", "threads", "kept"),
    [
        (ThreadedEngine("a", 1), 1, True),
        (ThreadedEngine("a", 2), 1, False),
        (ThreadedEngine("a", 0), 0, False),  # the runtime picked from the cores online then
        (ThreadedEngine("a", 0, "tensorrt"), 1, True),  # no CPU threads to change
    ],
)
def test_at_threads_keeps_engines_already_at_the_count(
    engine: ThreadedEngine, threads: int, kept: bool
) -> None:
    assert at_threads(threads)(engine) is kept


def test_a_shadow_run_may_take_twice_its_calls_expected_time_and_two_seconds_more() -> None:
    assert shadow_timeout_s(26, 0.015, None) == pytest.approx(26 * 0.015 + 2.0)
    detector = shadow_timeout_s(26, 0.015, 100.0)  # 26 calls of 100 ms, served ones between
    assert detector == pytest.approx(26 * 0.215 + 2.0) and detector > 26 * 0.1


def test_idle_loads_at_one_thread_always_and_at_more_only_where_priority_comes_back() -> None:
    cpu = profiled_catalog(profiled_variant(("id",), 0.93, {"MAXN": 1.0}))
    trt = dict(profiled_variant(("dw",), 0.90, {"MAXN": 0.3}), backend="tensorrt")
    mixed = profiled_catalog(profiled_variant(("id",), 0.93, {"MAXN": 1.0}), trt)
    assert idle_loads_allowed(cpu, 1) and idle_loads_allowed(mixed, 1)
    assert idle_loads_allowed(cpu, 2) == may_restore_priority()
    assert not idle_loads_allowed(mixed, 2)  # CUDA's own threads would keep nice 19
