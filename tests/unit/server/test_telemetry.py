"""Server telemetry: stream ids, the live latency window, per-stream detection counts,
Prometheus text, v2 statistics."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from edge_service.errors import BadInputError
from edge_service.server.telemetry import (
    StateCollector,
    Telemetry,
    check_stream_id,
    percentile,
)


@pytest.mark.parametrize("good", ["cam-1", "gate.north:2", "A", "x" * 64])
def test_reasonable_stream_ids_are_accepted(good):
    assert check_stream_id(good) == good


@pytest.mark.parametrize("bad", ["", "-lead", "a b", "x" * 65, "cam/1", "é"])
def test_stream_ids_outside_the_rule_are_refused(bad):
    with pytest.raises(BadInputError, match="stream id"):
        check_stream_id(bad)


def test_percentile_uses_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_window_counts_only_successful_requests():
    t = Telemetry()
    for ms in (1.0, 2.0, 3.0):
        t.record("v1_infer", "a", "ok", ms)
    t.record("v1_infer", "-", "bad_input", 50.0)
    w = t.window(5.0)
    assert w["count"] == 3 and w["p50"] == 2.0 and w["p99"] == 3.0


def test_streams_are_bounded_and_forget_the_longest_idle():
    t = Telemetry(streams_kept=2)
    t.record("v1_infer", "a", "ok", 1.0, stream="s1")
    t.record("v1_infer", "a", "ok", 1.0, stream="s2")
    t.record("v1_infer", "a", "bad_input", 1.0, stream="s1")
    t.record("v1_infer", "a", "ok", 1.0, frames=4, stream="s3")
    streams = t.streams()
    assert list(streams) == ["s1", "s3"]
    assert streams["s1"]["requests"] == 2 and streams["s1"]["errors"] == 1
    assert streams["s3"]["frames"] == 4


def test_metrics_text_has_request_engine_and_live_state_series():
    t = Telemetry()
    t.record("v2_infer", "base@int8", "ok", 1.5)
    t.on_batch("base@int8", 3, 0.4)
    state = {
        "queue_depth": 2, "ready": 1, "swaps": 4, "last_swap_ms": 1.2,
        "active_variant": "base@int8", "power_mode": {"id": 1, "name": "HALF"},
        "power_mw": {"VDD_IN": 4200.0}, "temps_c": {"cpu": 51.5}, "cpu_load": 0.3,
        "mem_available_mb": 900.0,
    }  # fmt: skip
    t.registry.register(StateCollector(lambda: state))
    text = generate_latest(t.registry).decode()
    for line in (
        'edge_requests_total{endpoint="v2_infer",status="ok",variant="base@int8"} 1.0',
        'edge_engine_seconds_count{variant="base@int8"} 1.0',
        "edge_batch_size_sum 3.0",
        "edge_queue_depth 2.0",
        'edge_active_variant{variant="base@int8"} 1.0',
        'edge_power_mode{name="HALF"} 1.0',
        'edge_rail_power_mw{rail="VDD_IN"} 4200.0',
        'edge_temperature_celsius{zone="cpu"} 51.5',
        "edge_swaps 4.0",
    ):
        assert line in text, line


def test_v2_statistics_accumulate_per_version():
    t = Telemetry()
    t.record_model("a", 2, total_ms=2.0, input_ms=0.2, queue_ms=0.3, infer_ms=1.0, batch=4)
    t.record_model("a", 2, total_ms=2.0, input_ms=0.2, queue_ms=0.3, infer_ms=1.0, batch=4)
    (entry,) = t.model_stats("fashion")
    assert entry["version"] == "a" and entry["inference_count"] == 4
    stats = entry["inference_stats"]
    assert stats["success"] == {"count": 2, "ns": 4_000_000}
    assert stats["compute_infer"]["ns"] == 1_000_000  # half of each 4-row call, twice


def test_detection_streams_count_answered_labels_per_class_and_frames_with_any():
    t = Telemetry()
    t.record("v1_infer", "d", "ok", 1.0, stream="cam1", detections=[["person", "car", "person"]])
    t.record(
        "v1_infer_batch", "d", "ok", 1.0, frames=3, stream="cam1",
        detections=[["person"], [], ["dog"]],
    )  # fmt: skip
    t.record("v1_infer", "-", "bad_input", 1.0, stream="cam1", detections=[["car"]])
    cam = t.streams()["cam1"]
    assert cam["detections"] == {"person": 3, "car": 1, "dog": 1}
    assert list(cam["detections"]) == ["person", "car", "dog"]  # most frequent first
    assert cam["frames_with_detections"] == 3
    assert cam["frames"] == 4 and cam["requests"] == 3 and cam["errors"] == 1


def test_detection_stream_with_no_object_yet_reports_zero_counts():
    t = Telemetry()
    t.record("v1_infer", "d", "ok", 1.0, stream="empty", detections=[[]])
    assert t.streams()["empty"]["detections"] == {}
    assert t.streams()["empty"]["frames_with_detections"] == 0


def test_classification_streams_have_no_detection_fields():
    t = Telemetry()
    t.record("v1_infer", "a", "ok", 1.0, stream="cls")
    assert "detections" not in t.streams()["cls"]
    assert "frames_with_detections" not in t.streams()["cls"]


def test_forgotten_stream_takes_its_detection_counts_with_it():
    t = Telemetry(streams_kept=1)
    t.record("v1_infer", "d", "ok", 1.0, stream="old", detections=[["car"]])
    t.record("v1_infer", "d", "ok", 1.0, stream="new", detections=[["bus"]])
    assert list(t.streams()) == ["new"] and t.streams()["new"]["detections"] == {"bus": 1}


def test_detections_metric_counts_per_label_for_all_streams_and_none():
    t = Telemetry()
    t.record("v1_infer", "d", "ok", 1.0, stream="a", detections=[["car", "car"]])
    t.record("v1_infer", "d", "ok", 1.0, detections=[["car"], ["person"]])
    t.record("v1_infer", "-", "engine_error", 1.0, detections=[["person"]])
    text = generate_latest(t.registry).decode()
    assert 'edge_detections_total{label="car"} 3.0' in text
    assert 'edge_detections_total{label="person"} 1.0' in text  # the failed one not counted
