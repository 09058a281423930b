"""What the server saw of its own requests: Prometheus metrics, a recent-latency window
for the live views, and per-camera-stream statistics.

Every Service has its own registry (no global state), so two apps in one process (as in
the tests) do not share counters.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter as CountOf
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_service.errors import BadInputError

OVERHEAD_BUCKETS = (*(round(5e-05 * i, 5) for i in range(1, 41)), 0.003, 0.005, 0.01)
STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip


def check_stream_id(stream: str | None) -> str | None:
    """A camera/stream id as given, or BadInputError naming the rule."""
    if stream is None or STREAM_ID.fullmatch(stream):  # match() lets a final newline in
        return stream
    raise BadInputError(
        f"stream id {stream[:80]!r} is not valid: use 1-64 characters from letters, digits "
        "and _ . : - (starting with a letter or digit)"
    )


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``values`` by nearest rank, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class StreamStats:
    """One camera stream's requests; a detection family's streams also count what was
    answered: detections per class label, and frames with at least one detection."""

    requests: int = 0
    errors: int = 0
    frames: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_variant: str | None = None
    detections: dict[str, int] | None = None  # None until a detection answer is counted
    frames_with_detections: int = 0

    def count_detections(self, per_label: Mapping[str, int], frames_with: int) -> None:
        """One answer's detections per label (after NMS and the score threshold), and how
        many of its frames had any."""
        counts = self.detections if self.detections is not None else {}
        for label, n in per_label.items():
            counts[label] = counts.get(label, 0) + n
        self.detections = counts
        self.frames_with_detections += frames_with

    def to_dict(self, latencies: list[float]) -> dict[str, object]:
        out: dict[str, object] = {
            "requests": self.requests,
            "errors": self.errors,
            "frames": self.frames,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "last_variant": self.last_variant,
            "latency_p50_ms": percentile(latencies, 0.5),
            "latency_p99_ms": percentile(latencies, 0.99),
        }
        if self.detections is not None:
            ranked = sorted(self.detections.items(), key=lambda kv: (-kv[1], kv[0]))
            out["detections"] = dict(ranked)  # most frequent first
            out["frames_with_detections"] = self.frames_with_detections
        return out


class Telemetry:
    """Counters and histograms for /metrics, a rolling window for the live views."""

    def __init__(self, streams_kept: int = 256, window: int = 4096) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edge_requests",
            "Inference requests by endpoint, served variant and outcome",
            ["endpoint", "variant", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "edge_request_seconds",
            "Server-side time per inference request (body received to response built)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.engine_seconds = Histogram(
            "edge_engine_seconds",
            "Engine call time per batch, by variant",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead_seconds = Histogram(
            "edge_overhead_seconds",
            "Server-side time per request outside the engine (total minus the request's "
            "share of its engine call)",
            ["endpoint"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "edge_batch_size",
            "Frames per engine call (micro-batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.frames = Counter(
            "edge_stream_frames", "Frames inferred per camera stream", ["stream"],
            registry=self.registry,
        )  # fmt: skip
        self.detections = Counter(
            "edge_detections",
            "Detections answered by the frame API, per class label (after NMS and the score "
            "threshold; all streams together)",
            ["label"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)  # (t, total ms)
        self._streams: OrderedDict[str, StreamStats] = OrderedDict()
        self._stream_latency: dict[str, deque[float]] = {}
        self._streams_kept = streams_kept
        self._models: dict[str, _ModelStats] = {}

    def on_batch(self, variant_id: str, rows: int, engine_ms: float) -> None:
        """The batcher's hook: one engine call."""
        self.engine_seconds.labels(variant_id).observe(engine_ms / 1e3)
        self.batch_size.observe(rows)

    def record(
        self,
        endpoint: str,
        variant: str,
        status: str,
        total_ms: float,
        *,
        frames: int = 1,
        stream: str | None = None,
        engine_ms: float | None = None,
        detections: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """One inference request as the client saw it (status ``ok`` or an error code);
        ``engine_ms`` is its share of engine time, for the overhead histogram;
        ``detections``, for a detection family's answer, the labels answered per frame."""
        self.requests.labels(endpoint, variant, status).inc()
        self.request_seconds.labels(endpoint).observe(total_ms / 1e3)
        if engine_ms is not None:
            self.overhead_seconds.labels(endpoint).observe(max(0.0, total_ms - engine_ms) / 1e3)
        counted = detections is not None and status == "ok"
        per_label = CountOf(label for labels in detections or () for label in labels)
        now = time.time()
        with self._lock:
            if status == "ok":
                self._recent.append((now, total_ms))
            if stream is not None:
                stats = self._stream(stream, now, variant, status, frames, total_ms)
                if counted:
                    stats.count_detections(per_label, sum(map(bool, detections or ())))
        if counted:
            for label, n in per_label.items():
                self.detections.labels(label).inc(n)

    def _stream(
        self, stream: str, now: float, variant: str, status: str, frames: int, total_ms: float
    ) -> StreamStats:
        stats = self._streams.get(stream)
        if stats is None:
            if len(self._streams) >= self._streams_kept:  # forget the longest idle
                old, _ = self._streams.popitem(last=False)
                self._stream_latency.pop(old, None)
            stats = self._streams[stream] = StreamStats(first_seen=now)
            self._stream_latency[stream] = deque(maxlen=512)
        self._streams.move_to_end(stream)
        stats.requests += 1
        stats.last_seen = now
        stats.last_variant = variant
        if status == "ok":
            stats.frames += frames
            self._stream_latency[stream].append(total_ms)
            self.frames.labels(stream).inc(frames)
        else:
            stats.errors += 1
        return stats

    def record_model(
        self,
        variant: str,
        rows: int,
        *,
        total_ms: float,
        input_ms: float,
        queue_ms: float,
        infer_ms: float,
        batch: int,
    ) -> None:
        """One successful v2 request, for Triton-style statistics per version."""
        with self._lock:
            s = self._models.setdefault(variant, _ModelStats())
            s.add(rows, total_ms, input_ms, queue_ms, infer_ms, batch)

    def model_stats(self, model: str) -> list[dict[str, object]]:
        """The v2 statistics extension's ``model_stats`` entries, one per version."""
        with self._lock:
            return [s.to_dict(model, v) for v, s in sorted(self._models.items())]

    def streams(self) -> dict[str, dict[str, object]]:
        """Per-stream statistics, most recently seen last."""
        with self._lock:
            return {
                name: s.to_dict(list(self._stream_latency[name]))
                for name, s in self._streams.items()
            }

    def window(self, seconds: float = 5.0) -> dict[str, object]:
        """Server-side latency p50/p99 and request rate over the last ``seconds``."""
        since = time.time() - seconds
        with self._lock:
            values = [ms for t, ms in self._recent if t >= since]
        return {
            "p50": percentile(values, 0.5),
            "p99": percentile(values, 0.99),
            "count": len(values),
            "requests_per_s": len(values) / seconds,
        }


def _duration(count: int, ms: float) -> dict[str, int]:
    return {"count": count, "ns": int(ms * 1e6)}


@dataclass
class _ModelStats:
    """Cumulative times of one version's v2 requests (Triton's statistics fields)."""

    requests: int = 0
    rows: int = 0
    executions: int = 0
    total_ms: float = 0.0
    input_ms: float = 0.0
    queue_ms: float = 0.0
    infer_ms: float = 0.0
    output_ms: float = 0.0
    last_ms: int = 0

    def add(
        self, rows: int, total: float, inp: float, queue: float, infer: float, batch: int
    ) -> None:
        self.requests += 1
        self.rows += rows
        self.executions += 1
        self.total_ms += total
        self.input_ms += inp
        self.queue_ms += queue
        self.infer_ms += infer * rows / max(batch, 1)  # this request's share of the call
        self.output_ms += max(0.0, total - inp - queue - infer)
        self.last_ms = int(time.time() * 1e3)

    def to_dict(self, model: str, version: str) -> dict[str, object]:
        n = self.requests
        zero = _duration(0, 0.0)
        return {
            "name": model,
            "version": version,
            "last_inference": self.last_ms,
            "inference_count": self.rows,
            "execution_count": self.executions,
            "inference_stats": {
                "success": _duration(n, self.total_ms),
                "fail": zero,
                "queue": _duration(n, self.queue_ms),
                "compute_input": _duration(n, self.input_ms),
                "compute_infer": _duration(n, self.infer_ms),
                "compute_output": _duration(n, self.output_ms),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
        }


class StateCollector(Collector):
    """Gauges read from the live service at scrape time."""

    def __init__(self, read: Callable[[], dict[str, object]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        s = self._read()
        yield _gauge("edge_queue_depth", "Requests waiting for the engine", s["queue_depth"])
        yield _gauge("edge_ready", "1 when an engine is loaded", s["ready"])
        yield _gauge("edge_swaps", "Active-engine swaps since start", s["swaps"])
        if s.get("last_swap_ms") is not None:
            yield _gauge("edge_last_swap_ms", "Duration of the last swap", s["last_swap_ms"])
        active = GaugeMetricFamily(
            "edge_active_variant", "The variant served (1)", labels=["variant"]
        )
        if s.get("active_variant"):
            active.add_metric([str(s["active_variant"])], 1)
        yield active
        mode = GaugeMetricFamily("edge_power_mode", "Power mode id", labels=["name"])
        if isinstance(s.get("power_mode"), dict):
            pm = s["power_mode"]
            mode.add_metric([str(pm["name"])], pm["id"])  # type: ignore[index]
        yield mode
        rails = GaugeMetricFamily("edge_rail_power_mw", "Power per rail (mW)", labels=["rail"])
        for rail, mw in dict(s.get("power_mw") or {}).items():  # type: ignore[call-overload]
            rails.add_metric([rail], mw)
        yield rails
        temps = GaugeMetricFamily("edge_temperature_celsius", "Temperature", labels=["zone"])
        for zone, c in dict(s.get("temps_c") or {}).items():  # type: ignore[call-overload]
            temps.add_metric([zone], c)
        yield temps
        for name, doc in (("cpu_load", "CPU load 0-1"), ("mem_available_mb", "Free memory MB")):
            if s.get(name) is not None:
                yield _gauge(f"edge_{name}", doc, s[name])


def _gauge(name: str, doc: str, value: object) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))  # type: ignore[arg-type]
