"""A failing source never stops sampling: FailoverSource, and open_source's ``auto``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from jetson_boards import NANO
from pydantic import ValidationError
from typer.testing import CliRunner

from edge_service.cli import app as cli_app
from edge_service.config import Settings
from edge_service.errors import ConfigError, MonitorError
from edge_service.monitor import SOURCES, Context, FailoverSource, LinuxSource, open_source
from edge_service.monitor.select import REGISTRY
from edge_service.monitor.source import SourceBase
from edge_service.monitor.tegra_source import is_jetson
from edge_service.source_names import SOURCE_NAMES

Tree = Callable[[str], Path]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedSource(SourceBase):
    """A MonitorSource whose `sample()` works or raises as its `broken` flag says."""

    def __init__(self, name: str, broken: bool = False) -> None:
        self.name, self.broken = name, broken
        self.samples = self.closed = 0

    def sample(self) -> Context:
        self.samples += 1
        if self.broken:
            raise MonitorError(f"{self.name} is broken")
        return Context(
            t=1.0, source=self.name, cpu_online=1, cpu_load=0.0, mem_available_mb=1.0,
            mem_total_mb=2.0,
        )  # fmt: skip

    def close(self) -> None:
        self.closed += 1


def factory(source: ScriptedSource) -> Callable[[], ScriptedSource]:
    def open_it() -> ScriptedSource:
        return source

    open_it.name = source.name  # type: ignore[attr-defined]
    return open_it


def failing_factory() -> ScriptedSource:
    raise MonitorError("jtop.service is not active")


def test_failover_falls_to_the_next_source_within_the_same_call_when_the_current_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    best, fallback = ScriptedSource("tegra"), ScriptedSource("linux")
    failover = FailoverSource([factory(best), factory(fallback)], clock=FakeClock())
    assert failover.sample().source == "tegra"
    best.broken = True
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert failover.sample().source == "linux"
    assert best.samples == 2  # it failed once, then was left alone until the retry
    assert best.closed == 1
    failures = [r for r in caplog.records if "tegra failed" in r.message]
    assert len(failures) == 1


def test_failover_returns_to_the_better_source_after_retry_s_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    best, fallback = ScriptedSource("tegra", broken=True), ScriptedSource("linux")
    failover = FailoverSource([factory(best), factory(fallback)], retry_s=30.0, clock=clock)
    assert failover.sample().source == "linux"
    clock.now = 29.0
    assert failover.sample().source == "linux"
    assert best.samples == 1
    clock.now = 31.0
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert failover.sample().source == "linux"  # still broken: retried, quietly
    assert [r.levelno for r in caplog.records if "tegra" in r.message] == [logging.DEBUG]
    best.broken = False
    clock.now = 62.0
    assert failover.sample().source == "tegra"
    assert failover.current == "tegra"
    assert fallback.closed == 1  # the worse source is released


def test_failover_skips_a_source_that_cannot_open_when_it_starts() -> None:
    fallback = ScriptedSource("linux")
    failover = FailoverSource([failing_factory, factory(fallback)], clock=FakeClock())
    assert failover.current == "linux"
    assert failover.sample().source == "linux"


def test_failover_raises_monitor_error_naming_every_reason_when_all_sources_fail() -> None:
    one, two = ScriptedSource("tegra"), ScriptedSource("linux")
    failover = FailoverSource([factory(one), factory(two)], clock=FakeClock())
    one.broken = two.broken = True
    with pytest.raises(MonitorError, match="tegra: tegra is broken; linux: linux is broken"):
        failover.sample()
    two.broken = False
    assert failover.sample().source == "linux"  # and recovers on the next call


def test_failover_refuses_to_start_when_no_source_opens() -> None:
    with pytest.raises(MonitorError, match=r"failing_factory: jtop\.service is not active"):
        FailoverSource([failing_factory])


def test_failover_closes_every_open_source_when_closed() -> None:
    one, two = ScriptedSource("tegra"), ScriptedSource("linux")
    failover = FailoverSource([factory(one), factory(two)], clock=FakeClock())
    failover.close()
    failover.close()
    assert (one.closed, two.closed) == (1, 0)  # the fallback was never opened


def test_open_source_auto_gives_the_linux_source_when_there_is_no_jetson_and_no_jtop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if is_jetson(Path("/")):
        pytest.skip("this machine is a Jetson")
    monkeypatch.setitem(sys.modules, "jtop", None)  # as if jetson-stats were not installed
    with caplog.at_level(logging.INFO):
        source = open_source("auto")
    try:
        assert isinstance(source, LinuxSource)
        assert source.sample().source == "linux"
    finally:
        source.close()
    skipped = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(skipped) == 2
    assert "sudo pip3 install -U jetson-stats" in skipped[0]
    assert "not a Jetson" in skipped[1]


def test_open_source_auto_reads_tegra_then_falls_to_linux_when_a_nano_loses_meminfo(
    monkeypatch: pytest.MonkeyPatch, board_tree: Tree
) -> None:
    monkeypatch.setitem(sys.modules, "jtop", None)
    root = board_tree(NANO)
    source = open_source("auto", root=root)
    try:
        assert isinstance(source, FailoverSource)
        assert source.sample().source == "tegra"
        (root / "proc/meminfo").unlink()
        assert source.sample().source == "linux"
    finally:
        source.close()


def test_open_source_names_every_kind_when_the_kind_is_unknown() -> None:
    assert set(SOURCES) == {"auto", "jtop", "tegra", "tegrastats", "linux", "replay"}
    with pytest.raises(ConfigError, match="jtop, tegra, tegrastats"):
        open_source("nvml")
    with pytest.raises(ConfigError, match="EDGE_MONITOR_TRACE"):
        open_source("replay")


def test_one_list_of_source_names_feeds_the_registry_the_settings_and_the_cli() -> None:
    assert tuple(REGISTRY) == SOURCE_NAMES and all(k.help for k in REGISTRY.values())
    for name in SOURCE_NAMES:
        assert Settings(monitor_source=name).monitor_source == name
    with pytest.raises(ValidationError):
        Settings(monitor_source="nvml")
    result = CliRunner().invoke(cli_app, ["monitor", "--source", "nvml", "--once"])
    assert result.exit_code != 0 and all(name in result.output for name in SOURCE_NAMES)


def test_open_source_tegra_raises_monitor_error_when_root_is_not_a_jetson(tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match="not a Jetson"):
        open_source("tegra", root=tmp_path)


def test_failures_say_why_each_failing_source_failed_until_it_works_again() -> None:
    clock = FakeClock()
    jtop, linux = ScriptedSource("jtop"), ScriptedSource("linux")
    source = FailoverSource([factory(jtop), factory(linux)], retry_s=10, clock=clock)
    assert source.failures == {}
    jtop.broken = True
    assert source.sample().source == "linux"
    assert source.failures == {"jtop": "jtop is broken"}
    jtop.broken, clock.now = False, 11.0
    assert source.sample().source == "jtop" and source.failures == {}
