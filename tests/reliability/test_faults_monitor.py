"""Fault: the monitor source dies mid-run.

The service runs on a recorded Jetson Orin Nano board tree (sysfs + procfs, JetPack 6.0)
read by the real tegra source, with the real linux source as its fallback, exactly as
``EDGE_MONITOR_SOURCE=auto`` builds them on a Jetson. Mid-run the board's procfs view is
taken away (the tegra source then cannot read memory and raises), and later given back.
Frames are served through the real micro-batcher and ONNX Runtime engines all along.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fault_support import background_traffic, png_frame, record, wait_for
from unit.monitor.jetson_boards import ORIN_NANO, build_tree

from edge_service.config import Settings
from edge_service.control.events import AdaptationEvent
from edge_service.monitor.select import open_source
from edge_service.monitor.source import MonitorSource
from edge_service.server.service import Service, start_service

MEMINFO = "proc/meminfo"


MakeService = Callable[[MonitorSource], Service]


@pytest.fixture
def board(tmp_path: Path) -> Path:
    root: Path = build_tree(ORIN_NANO, tmp_path / "orin-nano")
    return root


@pytest.fixture
def make_service(engines_dir: Path) -> Iterator[MakeService]:
    started: list[Service] = []

    def make(source: MonitorSource) -> Service:
        settings = Settings(engines_dir=engines_dir, monitor_period_s=0.05, intra_op_threads=1)
        started.append(start_service(settings, source=source))
        return started[-1]

    yield make
    for service in started:
        service.close()


def _infer(service: Service) -> Callable[[int], None]:
    """Send one PNG frame through the batcher and the active engine, as /v1/infer does."""
    frame = png_frame(1)

    def prepare(variant_id: str) -> np.ndarray:
        return service.preprocess(variant_id).from_bytes(frame)

    def send(_: int) -> None:
        result = service.batcher.submit(prepare, 1).result(timeout=60)
        assert result.output.shape == (1, 10)

    return send


def _source_now(service: Service) -> str | None:
    ctx = service.loop.state().context
    return ctx.source if ctx is not None else None


def _monitor_events(service: Service) -> list[AdaptationEvent]:
    return [e for e in service.events.recent() if e.kind == "monitor"]


def test_linux_source_takes_over_and_serving_continues_when_tegra_sysfs_vanishes_mid_run(
    board: Path, make_service: MakeService
) -> None:
    source = open_source("auto", root=board, retry_s=0.3)  # jtop absent: tegra, then linux
    service = make_service(source)
    thread = service.loop._thread
    with background_traffic(_infer(service)) as traffic:
        wait_for(lambda: _source_now(service) == "tegra", what="the tegra source")
        (board / MEMINFO).rename(board / "meminfo.gone")  # the board's procfs view is gone
        wait_for(lambda: _source_now(service) == "linux", what="failover to linux")
        errors_before = service.loop.state().source_errors
        failover = _monitor_events(service)[-1]
        (board / "meminfo.gone").rename(board / MEMINFO)  # and back: tegra is tried again
        wait_for(lambda: _source_now(service) == "tegra", what="the climb back to tegra")
        wait_for(lambda: traffic.ok >= 40, what="40 frames served")
    record("monitor-failover", requests=traffic.sent, failed=len(traffic.failed), faults=2)
    assert failover.reason == "monitor failover: tegra -> linux"
    assert "MemTotal" in (failover.error or "")  # which file the tegra source lost
    assert _monitor_events(service)[-1].reason == "monitor failover: linux -> tegra"
    assert errors_before == 0  # the failover lost no monitor period
    assert thread is not None and thread.is_alive()
    assert service.pool.ready
    assert traffic.failed == [], traffic.failed[:3]


def test_engine_keeps_serving_and_events_say_lost_then_back_when_the_only_source_dies(
    board: Path, make_service: MakeService
) -> None:
    service = make_service(open_source("tegra", root=board))
    with background_traffic(_infer(service)) as traffic:
        wait_for(lambda: _source_now(service) == "tegra", what="the tegra source")
        active = service.pool.active_id
        (board / MEMINFO).rename(board / "meminfo.gone")
        wait_for(lambda: service.loop.state().source_errors >= 5, what="5 failed samples")
        lost = _monitor_events(service)
        (board / "meminfo.gone").rename(board / MEMINFO)
        wait_for(lambda: len(_monitor_events(service)) == 2, what="the 'monitor back' event")
        wait_for(lambda: traffic.ok >= 40, what="40 frames served")
    record("monitor-lost", requests=traffic.sent, failed=len(traffic.failed), faults=1)
    assert [e.reason for e in lost] == ["monitor lost: tegra cannot be read"]  # once, not 5x
    assert "MemTotal" in (lost[0].error or "")
    assert lost[0].to_variant == active  # the engine serving through it
    assert _monitor_events(service)[-1].reason == "monitor back: reading tegra"
    assert traffic.failed == [], traffic.failed[:3]
