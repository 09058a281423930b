"""Trace recording, reading and replay with a fake clock."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from edge_service.errors import MonitorError
from edge_service.monitor import (
    Context,
    MonitorSource,
    PowerMode,
    ReplaySource,
    TraceRecorder,
    read_trace,
)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ctx(t: float, load: float, **kw: Any) -> Context:
    return Context(
        t=t,
        source="tegra",
        cpu_online=4,
        cpu_load=load,
        mem_available_mb=3000.0,
        mem_total_mb=7620.0,
        **kw,
    )


# Entries at 0 s, 1 s and 3 s into the trace, told apart by their CPU load.
TRACE = [ctx(100.0, 0.1), ctx(101.0, 0.2), ctx(103.0, 0.3)]


def replay(clock: FakeClock, **kw: Any) -> ReplaySource:
    return ReplaySource(TRACE, clock=clock, wall_clock=lambda: 5000.0, **kw)


@pytest.mark.parametrize(
    ("elapsed", "load"), [(0.0, 0.1), (0.99, 0.1), (1.0, 0.2), (2.9, 0.2), (3.0, 0.3)]
)
def test_replay_returns_the_entry_due_when_time_passes_at_real_speed(
    elapsed: float, load: float
) -> None:
    clock = FakeClock(50.0)
    source = replay(clock)
    source.sample()
    clock.now = 50.0 + elapsed
    assert source.sample().cpu_load == load


@pytest.mark.parametrize(("elapsed", "load"), [(0.49, 0.1), (0.5, 0.2), (1.5, 0.3)])
def test_replay_runs_faster_when_speed_is_two(elapsed: float, load: float) -> None:
    clock = FakeClock()
    source = replay(clock, speed=2.0)
    source.sample()
    clock.now = elapsed
    assert source.sample().cpu_load == load


def test_replay_keeps_returning_the_last_entry_when_past_the_end_without_loop() -> None:
    clock = FakeClock()
    source = replay(clock)
    source.sample()
    assert not source.finished
    clock.now = 1000.0
    assert source.sample().cpu_load == 0.3
    assert source.finished


@pytest.mark.parametrize(("elapsed", "load"), [(4.4, 0.3), (4.5, 0.1), (5.5, 0.2), (9.0, 0.1)])
def test_replay_starts_over_after_one_mean_interval_when_looping(
    elapsed: float, load: float
) -> None:
    clock = FakeClock()
    source = replay(clock, loop=True)
    source.sample()
    clock.now = elapsed
    assert source.sample().cpu_load == load
    assert not source.finished


def test_replay_sets_t_to_now_and_keeps_other_fields_when_sampled() -> None:
    recorded = ctx(100.0, 0.1, power_mode=PowerMode(0, "MAXN"), extra={"fan_pwm": 80})
    source: MonitorSource = ReplaySource([recorded], clock=FakeClock(), wall_clock=lambda: 5e3)
    got = source.sample()
    assert got.t == 5000.0
    assert dataclasses.replace(got, t=100.0) == recorded


def test_replay_reads_the_trace_when_given_a_path(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    with TraceRecorder(path) as recorder:
        for c in TRACE:
            recorder.write(c)
    assert ReplaySource(path, clock=FakeClock()).sample().cpu_load == 0.1


def test_replay_refuses_when_the_trace_is_empty() -> None:
    with pytest.raises(MonitorError, match="empty"):
        ReplaySource([])


def test_replay_refuses_when_speed_is_not_positive() -> None:
    with pytest.raises(MonitorError, match="speed"):
        ReplaySource(TRACE, speed=0.0)


def test_replay_refuses_naming_the_entry_when_the_trace_goes_back_in_time() -> None:
    with pytest.raises(MonitorError, match="entry 3"):
        ReplaySource([ctx(10.0, 0.1), ctx(12.0, 0.1), ctx(11.0, 0.1)])


def test_recorded_trace_reads_back_equal_when_written_by_the_recorder(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "trace.jsonl"
    contexts = [*TRACE, ctx(104.0, 0.5, temps_c={"cpu": 50.0}, extra={"fan_pwm": 80})]
    with TraceRecorder(path) as recorder:
        for c in contexts:
            recorder.write(c)
    assert read_trace(path) == contexts


def test_recorder_appends_one_json_line_per_context_when_the_file_exists(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    for c in TRACE[:2]:
        with TraceRecorder(path) as recorder:
            recorder.write(c)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["cpu_load"] for line in lines] == [0.1, 0.2]


def test_recorder_refuses_to_write_when_closed(tmp_path: Path) -> None:
    recorder = TraceRecorder(tmp_path / "trace.jsonl")
    recorder.close()
    recorder.close()
    with pytest.raises(MonitorError, match="closed"):
        recorder.write(TRACE[0])


def test_read_trace_skips_blank_lines_when_the_trace_has_them(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n" + json.dumps(TRACE[0].to_dict()) + "\n\n   \n")
    assert read_trace(path) == [TRACE[0]]


def test_read_trace_refuses_naming_the_line_when_a_line_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps(TRACE[0].to_dict()) + "\n\n{not json\n")
    with pytest.raises(MonitorError, match="line 3"):
        read_trace(path)


def test_read_trace_refuses_naming_line_and_field_when_a_field_is_missing(tmp_path: Path) -> None:
    bad = TRACE[1].to_dict()
    del bad["cpu_load"]
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps(TRACE[0].to_dict()) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(MonitorError, match=r"line 2: .*'cpu_load'"):
        read_trace(path)


def test_read_trace_refuses_when_the_line_is_json_but_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(MonitorError, match="line 1"):
        read_trace(path)


def test_read_trace_refuses_with_a_hint_when_the_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match="monitor --record"):
        read_trace(tmp_path / "missing.jsonl")


def test_trace_reads_up_to_a_torn_last_line_when_the_recorder_was_killed_mid_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "trace.jsonl"
    with TraceRecorder(path) as recorder:
        for c in TRACE:
            recorder.write(c)
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:40])  # kill -9 in the middle of a line
    assert read_trace(path) == TRACE


def test_trace_is_refused_naming_the_line_when_a_middle_line_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    lines = [json.dumps(c.to_dict()) for c in TRACE]
    path.write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    with pytest.raises(MonitorError, match="line 2: not valid JSON"):
        read_trace(path)
