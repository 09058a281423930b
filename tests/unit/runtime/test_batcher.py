"""Micro-batching: concurrent jobs share engine calls, the queue is bounded, faults stay local."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support import ConstantEngine

from edge_service.errors import BadInputError, OverloadedError
from edge_service.runtime.batcher import MicroBatcher
from edge_service.runtime.pool import EnginePool

WAIT_S = 30.0  # a bound on waiting for the batcher's thread, never an expected speed


class GatedEngine(ConstantEngine):
    """Blocks each call until the test opens the gate; records batch sizes."""

    def __init__(self, variant_id: str) -> None:
        super().__init__(variant_id)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(WAIT_S)
        self.calls.append(batch.shape[0])
        return np.arange(batch.shape[0], dtype=np.float32)[:, None].repeat(2, axis=1)


def _setup(**kw):
    engines: dict[str, GatedEngine] = {}

    def loader(vid: str) -> GatedEngine:
        engines[vid] = GatedEngine(vid)
        return engines[vid]

    pool = EnginePool(loader)
    pool.activate("a")
    return MicroBatcher(pool, **kw), engines


def _rows(n: int):
    return lambda _vid: np.zeros((n, 1, 4, 4), np.float32)


def test_jobs_queued_while_the_engine_is_busy_run_as_one_batch_in_order() -> None:
    batcher, engines = _setup(max_batch=8)
    try:
        first = batcher.submit(_rows(1), 1)
        assert engines["a"].entered.wait(WAIT_S)
        queued = [batcher.submit(_rows(n), n) for n in (1, 2, 3)]
        engines["a"].gate.set()
        results = [f.result(WAIT_S) for f in (first, *queued)]
    finally:
        batcher.close()
    assert engines["a"].calls == [1, 6]
    assert [r.output[:, 0].tolist() for r in results[1:]] == [[0.0], [1.0, 2.0], [3.0, 4.0, 5.0]]
    assert all(r.batch_rows == 6 and r.variant_id == "a" for r in results[1:])
    assert batcher.stats.batch_sizes == {1: 1, 6: 1}


def test_a_batch_never_exceeds_max_batch_rows() -> None:
    batcher, engines = _setup(max_batch=4)
    try:
        first = batcher.submit(_rows(1), 1)
        assert engines["a"].entered.wait(WAIT_S)
        queued = [batcher.submit(_rows(3), 3) for _ in range(3)]
        engines["a"].gate.set()
        for f in (first, *queued):
            f.result(WAIT_S)
    finally:
        batcher.close()
    assert max(engines["a"].calls) <= 4 and sum(engines["a"].calls) == 10


def test_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    batcher, engines = _setup(max_batch=1, max_queue=2)
    try:
        running = batcher.submit(_rows(1), 1)
        assert engines["a"].entered.wait(WAIT_S)
        waiting = [batcher.submit(_rows(1), 1) for _ in range(2)]
        with pytest.raises(OverloadedError) as exc:
            batcher.submit(_rows(1), 1)
        assert exc.value.retry_after_s >= 1 and exc.value.http_status == 503
        assert batcher.stats.rejected == 1 and batcher.depth == 2
        engines["a"].gate.set()
        for f in (running, *waiting):
            f.result(WAIT_S)
    finally:
        batcher.close()


def test_a_frame_that_cannot_be_prepared_fails_alone() -> None:
    batcher, engines = _setup(max_batch=8)

    def bad(_vid: str) -> np.ndarray:
        raise BadInputError("bad frame")

    try:
        first = batcher.submit(_rows(1), 1)
        assert engines["a"].entered.wait(WAIT_S)
        broken = batcher.submit(bad, 1)
        fine = batcher.submit(_rows(1), 1)
        engines["a"].gate.set()
        with pytest.raises(BadInputError):
            broken.result(WAIT_S)
        assert fine.result(WAIT_S).output.shape == (1, 2)
        first.result(WAIT_S)
    finally:
        batcher.close()


def test_jobs_pinned_to_another_variant_run_on_that_engine_in_their_own_batch() -> None:
    batcher, engines = _setup(max_batch=8)
    try:
        first = batcher.submit(_rows(1), 1)
        assert engines["a"].entered.wait(WAIT_S)
        pinned = batcher.submit(_rows(1), 1, target="b")
        plain = batcher.submit(_rows(1), 1)
        engines["a"].gate.set()
        deadline = time.monotonic() + WAIT_S
        while "b" not in engines and time.monotonic() < deadline:
            time.sleep(0.01)
        engines["b"].gate.set()  # b is loaded on demand for the pinned job
        assert pinned.result(WAIT_S).variant_id == "b"
        assert plain.result(WAIT_S).variant_id == "a"
        first.result(WAIT_S)
        assert engines["a"].calls == [1, 1] and engines["b"].calls == [1]
    finally:
        batcher.close()


def test_close_fails_what_is_still_queued_and_refuses_new_jobs() -> None:
    batcher, engines = _setup(max_batch=1)
    running = batcher.submit(_rows(1), 1)
    assert engines["a"].entered.wait(WAIT_S)
    queued = batcher.submit(_rows(1), 1)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    with pytest.raises(OverloadedError):
        queued.result(WAIT_S)
    engines["a"].gate.set()
    closer.join(WAIT_S)
    running.result(WAIT_S)
    with pytest.raises(OverloadedError):
        batcher.submit(_rows(1), 1)


def test_engine_failure_reaches_every_job_of_the_batch_and_the_worker_lives_on() -> None:
    engines: dict[str, ConstantEngine] = {}

    def loader(vid: str) -> ConstantEngine:
        engines[vid] = ConstantEngine(vid)
        return engines[vid]

    pool = EnginePool(loader)
    pool.activate("a")
    batcher = MicroBatcher(pool)
    try:
        engines["a"].closed = True  # ConstantEngine raises EngineError once closed
        from edge_service.errors import EngineError

        with pytest.raises(EngineError):
            batcher.submit(_rows(1), 1).result(WAIT_S)
        engines["a"].closed = False
        assert batcher.submit(_rows(2), 2).result(WAIT_S).output.shape == (2, 2)
    finally:
        batcher.close()


def test_the_hook_runs_on_the_worker_before_the_next_job_takes_an_engine() -> None:
    batcher, engines = _setup(max_batch=1)
    pool = batcher._pool  # the pool the hook swaps, as the service's loop does
    seen: list[tuple[str, int]] = []

    def hook(variant_id: str, rows: int, _engine_ms: float) -> None:
        seen.append((variant_id, rows))
        if variant_id == "a":
            pool.activate("b")  # a step down acted on before the worker goes on

    batcher.on_batch = hook
    pool.preload(["b"])
    engines["b"].gate.set()
    try:
        first = batcher.submit(_rows(1), 1)
        assert engines["a"].entered.wait(WAIT_S)
        queued = batcher.submit(_rows(1), 1)  # waits behind the call that proves too slow
        engines["a"].gate.set()
        assert first.result(WAIT_S).variant_id == "a"
        assert queued.result(WAIT_S).variant_id == "b"  # not the engine just proven slow
    finally:
        batcher.close()
    assert seen == [("a", 1), ("b", 1)]


def test_a_hook_that_fails_does_not_end_the_worker() -> None:
    batcher, engines = _setup(max_batch=1)

    def hook(_variant_id: str, _rows: int, _engine_ms: float) -> None:
        raise RuntimeError("a bug in the controller")

    batcher.on_batch = hook
    engines["a"].gate.set()
    try:
        results = [batcher.submit(_rows(1), 1).result(WAIT_S) for _ in range(3)]
    finally:
        batcher.close()
    assert [r.variant_id for r in results] == ["a", "a", "a"]
