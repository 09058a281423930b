"""Dynamic micro-batching in front of the engine pool.

Requests wait in one bounded queue; a worker thread takes the oldest, adds whatever else
is queued for the same variant (waiting up to ``max_delay_ms`` for more when the batch is
not full), leases the engine once, and runs the whole batch in one call. A full queue is
refused at once (`OverloadedError`: the server answers 503 with Retry-After), so memory
stays bounded however hard clients push.

A job does not carry a tensor but a ``prepare(variant_id)`` function: the variant is only
known when the worker leases the engine, and variants differ in input resolution, so the
frame is resized for the engine that will actually run it.

Shadow runs (`MicroBatcher.shadow`) measure a variant that is not served, for the
controller, in the worker's idle time: one engine call at a time, only while no request
waits, spaced by a gap, so a request never shares the processor with a measurement it
did not ask for and waits at most one such call. (Where engines run several ONNX Runtime
threads, a measured engine's spinning workers still slow the served calls, whatever the
gap: the server makes no shadow runs there, see
`edge_service.control.factory.shadow_runs_are_safe`.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from edge_service.errors import EdgeServiceError, EngineError, OverloadedError, error_reason
from edge_service.runtime.engine import EngineInfo
from edge_service.runtime.pool import EnginePool

log = logging.getLogger(__name__)

Prepare = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class BatchResult:
    """One job's share of a batched engine call."""

    variant_id: str
    info: EngineInfo
    output: np.ndarray  # this job's rows of the engine output
    queue_ms: float  # submitted -> engine call started
    engine_ms: float  # the whole batch's engine call
    batch_rows: int  # rows in that engine call


@dataclass
class _Job:
    prepare: Prepare
    rows: int
    target: str | None
    future: Future[BatchResult]
    submitted: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)  # identity: a probe is found in the deque by itself
class _Probe:
    """A shadow measurement in progress: ``runs`` calls of ``variant_id`` on ``x``."""

    variant_id: str
    x: np.ndarray
    runs: int
    gap_s: float
    times_ms: list[float] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    next_t: float = 0.0
    error: str | None = None


@dataclass
class BatcherStats:
    """Counters since start (read by /metrics and the v2 statistics endpoint)."""

    batches: int = 0
    rows: int = 0
    rejected: int = 0
    failed: int = 0
    queue_ns: int = 0
    engine_ns: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class MicroBatcher:
    """A bounded queue and worker threads that batch jobs into engine calls."""

    def __init__(
        self,
        pool: EnginePool,
        *,
        max_batch: int = 8,
        max_delay_ms: float = 0.0,
        max_queue: int = 128,
        workers: int = 1,
        on_batch: Callable[[str, int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be >= 1")
        self._pool = pool
        self.max_batch, self.max_queue = max_batch, max_queue
        self._delay_s = max_delay_ms / 1e3
        self.on_batch = on_batch  # (variant, rows, engine ms), on the worker after each call
        self._queue: deque[_Job] = deque()
        self._probes: deque[_Probe] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.stats = BatcherStats()
        self._threads = [
            threading.Thread(target=self._run, name=f"batcher-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Jobs waiting for the engine now."""
        return len(self._queue)

    def submit(self, prepare: Prepare, rows: int, target: str | None = None) -> Future[BatchResult]:
        """Queue a job of ``rows`` frames for the active variant (or ``target``)."""
        if rows < 1:
            raise ValueError("a job needs at least one row")
        future: Future[BatchResult] = Future()
        with self._cond:
            if self._closed:
                raise OverloadedError("the server is shutting down", retry_after_s=5.0)
            if len(self._queue) >= self.max_queue:
                self.stats.rejected += 1
                raise OverloadedError(
                    f"{len(self._queue)} requests are already waiting for the engine "
                    f"(queue limit {self.max_queue}); retry shortly",
                    retry_after_s=self._retry_after_s(),
                )
            self._queue.append(_Job(prepare, rows, target, future))
            self._cond.notify()
        return future

    def _retry_after_s(self) -> float:
        """A hint: how long the queue ahead takes to drain at the recent pace, >= 1 s."""
        if self.stats.batches == 0:
            return 1.0
        per_row_s = self.stats.engine_ns / 1e9 / max(self.stats.rows, 1)
        return max(1.0, round(len(self._queue) * per_row_s * 2, 1))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers; jobs still queued fail with OverloadedError."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            for probe in self._probes:
                probe.done.set()
            self._probes.clear()
            self._cond.notify_all()
        for job in left:
            job.future.set_exception(OverloadedError("the server is shutting down", 5.0))
        for t in self._threads:
            t.join(timeout)

    def shadow(
        self, variant_id: str, x: np.ndarray, runs: int, *, gap_s: float = 0.002,
        timeout_s: float = 2.0,
    ) -> list[float]:  # fmt: skip
        """Time ``runs`` calls of ``variant_id`` on ``x`` in the worker's idle time (module
        doc); the engine milliseconds of each call made before ``timeout_s``. EngineError
        when the variant's engine fails."""
        probe = _Probe(variant_id, x, runs, gap_s)
        with self._cond:
            if self._closed:
                return []
            self._probes.append(probe)
            self._cond.notify()
        probe.done.wait(timeout_s)
        with self._cond:
            if probe in self._probes:
                self._probes.remove(probe)
        if probe.error is not None:
            raise EngineError(f"shadow run of {variant_id} failed: {probe.error}")
        return list(probe.times_ms)

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            if isinstance(batch, _Probe):
                self._probe_once(batch)
            else:
                self._execute(batch)

    def _idle_probe(self) -> tuple[_Probe | None, float | None]:
        """Under the lock: a shadow run due now, else how long until one is."""
        if not self._probes:
            return None, None
        probe = self._probes[0]
        wait = probe.next_t - time.perf_counter()
        return (probe, None) if wait <= 0 else (None, wait)

    def _collect(self) -> list[_Job] | _Probe | None:
        """The next batch: the oldest job plus queued ones for the same target, up to
        ``max_batch`` rows, waiting at most the delay for more; or, with no job queued, a
        shadow run that is due."""
        with self._cond:
            while not self._queue and not self._closed:
                probe, wait = self._idle_probe()
                if probe is not None:
                    return probe
                self._cond.wait(wait)
            if self._closed:
                return None
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            deadline = time.perf_counter() + self._delay_s
            while rows < self.max_batch:
                job = self._take_matching(first.target, self.max_batch - rows)
                if job is not None:
                    batch.append(job)
                    rows += job.rows
                    continue
                left = deadline - time.perf_counter()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            return batch

    def _take_matching(self, target: str | None, room: int) -> _Job | None:
        """Under the lock: the oldest queued job for ``target`` that fits in ``room``."""
        for i, job in enumerate(self._queue):
            if job.target == target and job.rows <= room:
                del self._queue[i]
                return job
        return None

    def _probe_once(self, probe: _Probe) -> None:
        """One call of a shadow run, timed; the run ends when it has its calls or fails."""
        try:
            with self._pool.lease(probe.variant_id) as (_, engine):
                started = time.perf_counter()
                engine.infer(probe.x)
                probe.times_ms.append((time.perf_counter() - started) * 1e3)
        except Exception as exc:  # noqa: BLE001 - the caller learns why; the worker lives on
            probe.error = error_reason(exc)
        probe.next_t = time.perf_counter() + probe.gap_s
        if probe.error is not None or len(probe.times_ms) >= probe.runs:
            with self._cond:
                if probe in self._probes:
                    self._probes.remove(probe)
            probe.done.set()

    def _execute(self, batch: list[_Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            with self._pool.lease(live[0].target) as (variant_id, engine):
                inputs, ready = [], []
                for job in live:
                    try:
                        x = job.prepare(variant_id)
                    except Exception as exc:  # noqa: BLE001 - one bad frame fails its own request only
                        job.future.set_exception(exc)
                        continue
                    inputs.append(x)
                    ready.append(job)
                if not ready:
                    return
                started = time.perf_counter()
                output = engine.infer(inputs[0] if len(inputs) == 1 else np.concatenate(inputs))
                done = time.perf_counter()
                info = engine.info()
        except Exception as exc:  # noqa: BLE001 - every job learns why, the worker lives on
            self.stats.failed += len(live)
            error = exc if isinstance(exc, EdgeServiceError) else EngineError(f"engine: {exc}")
            for job in live:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self._deliver(ready, variant_id, info, output, started, done)

    def _deliver(
        self,
        jobs: list[_Job],
        variant_id: str,
        info: EngineInfo,
        output: np.ndarray,
        started: float,
        done: float,
    ) -> None:
        rows = sum(j.rows for j in jobs)
        engine_ms = (done - started) * 1e3
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.engine_ns += int((done - started) * 1e9)
        stats.batch_sizes[rows] = stats.batch_sizes.get(rows, 0) + 1
        at = 0
        for job in jobs:
            queue_ms = (started - job.submitted) * 1e3
            stats.queue_ns += int(queue_ms * 1e6)
            result = BatchResult(
                variant_id, info, output[at : at + job.rows], queue_ms, engine_ms, rows
            )
            at += job.rows
            job.future.set_result(result)
        if self.on_batch is not None:
            try:
                self.on_batch(variant_id, rows, engine_ms)
            except Exception:  # the hook's failure must not end the worker
                log.exception("batch hook failed")
