"""Energy per inference: the integration and estimate math, and each meter on real inputs
(a recorded Xavier NX sysfs tree, a replayed trace, a powercap fixture file)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from unit.monitor.jetson_boards import XAVIER_NX, build_tree

from edge_service.errors import ConfigError, MonitorError
from edge_service.monitor.context import Context
from edge_service.monitor.linux_source import LinuxSource
from edge_service.monitor.replay import ReplaySource
from edge_service.monitor.tegra_source import TegraSource
from edge_service.profile.energy import (
    DEFAULT_CORE_ACTIVE_W,
    RAPL_DIR,
    CpuTimeEnergyMeter,
    EnergyReading,
    RailEnergyMeter,
    RaplEnergyMeter,
    counter_delta,
    cpu_energy_mj,
    default_meter,
    integrate_mw,
)


def _context(power_mw: dict[str, float]) -> Context:
    return Context(
        t=0.0,
        source="test",
        cpu_online=4,
        cpu_load=0.5,
        mem_available_mb=1000.0,
        mem_total_mb=4000.0,
        power_mw=power_mw,
    )


class _Clock:
    """A hand-stepped clock (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_integrate_mw_gives_power_times_time_when_power_is_constant():
    assert integrate_mw([(0.0, 5000.0), (1.0, 5000.0), (2.0, 5000.0)]) == 10_000.0


def test_integrate_mw_uses_trapezoids_when_power_ramps():
    assert integrate_mw([(0.0, 0.0), (1.0, 1000.0)]) == 500.0
    assert integrate_mw([(0.0, 1000.0)]) == 0.0


def test_cpu_energy_is_cpu_seconds_times_core_watts_in_millijoules():
    assert cpu_energy_mj(2.0, 2.5) == pytest.approx(5000.0)
    assert cpu_energy_mj(0.004) == pytest.approx(0.004 * DEFAULT_CORE_ACTIVE_W * 1e3)


@pytest.mark.parametrize(("cpu_s", "watts"), [(-1.0, 2.5), (1.0, 0.0)])
def test_cpu_energy_refuses_nonsense_when_time_negative_or_watts_not_positive(cpu_s, watts):
    with pytest.raises(ConfigError):
        cpu_energy_mj(cpu_s, watts)


def test_counter_delta_handles_the_rapl_wrap_around():
    assert counter_delta(100, 250, None) == 150
    assert counter_delta(900, 50, 1000) == 150
    with pytest.raises(MonitorError):
        counter_delta(900, 50, None)


def test_cpu_time_meter_estimates_from_process_cpu_time_when_clocks_advance():
    cpu, wall = _Clock(), _Clock()
    meter = CpuTimeEnergyMeter(2.5, cpu_clock=cpu, wall_clock=wall)
    meter.start()
    cpu.now, wall.now = 0.4, 1.0
    reading = meter.stop()
    assert reading == EnergyReading(1000.0, 1.0, True, "cpu-time x 2.5 W/core")
    assert reading.mean_power_mw == pytest.approx(1000.0)
    assert reading.per_inference_mj(100) == pytest.approx(10.0)
    assert meter.estimated


def test_cpu_time_meter_counts_real_work_when_the_process_computes():
    meter = CpuTimeEnergyMeter()
    meter.start()
    sum(i * i for i in range(200_000))
    reading = meter.stop()
    assert reading.energy_mj > 0 and reading.estimated


def test_meter_refuses_stop_when_never_started():
    with pytest.raises(MonitorError):
        CpuTimeEnergyMeter().stop()


def test_rapl_meter_measures_the_counter_difference_when_powercap_is_present(tmp_path):
    rapl = tmp_path / RAPL_DIR
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text("1000000\n")
    (rapl / "max_energy_range_uj").write_text("262143328850\n")
    meter = default_meter(root=tmp_path)
    assert isinstance(meter, RaplEnergyMeter) and not meter.estimated
    meter.start()
    (rapl / "energy_uj").write_text("1250000\n")
    reading = meter.stop()
    assert reading.energy_mj == pytest.approx(250.0)
    assert not reading.estimated and reading.method == "rapl"


def test_default_meter_falls_back_to_the_labelled_estimate_when_no_rails_or_rapl(tmp_path):
    meter = default_meter(LinuxSource(root=tmp_path), root=tmp_path, core_active_w=4.0)
    assert isinstance(meter, CpuTimeEnergyMeter)
    assert meter.estimated and meter.core_active_w == 4.0


def test_rail_meter_integrates_input_rail_power_when_replaying_a_constant_trace():
    source = ReplaySource([_context({"VDD_IN": 5000.0, "VDD_CPU": 1200.0})], loop=True)
    meter = default_meter(source)
    assert isinstance(meter, RailEnergyMeter) and not meter.estimated
    meter.start()
    time.sleep(0.05)
    reading = meter.stop()
    # the input rail alone: the CPU rail is part of it
    assert reading.energy_mj == pytest.approx(5000.0 * reading.seconds)
    assert reading.mean_power_mw == pytest.approx(5000.0)
    assert not reading.estimated and reading.method == "rails"


def test_rail_meter_reads_the_ina3221_when_sampling_a_recorded_xavier_nx(tmp_path):
    source = TegraSource(build_tree(XAVIER_NX, tmp_path))
    watts = source.sample().power_total_mw
    assert watts is not None and watts > 0
    meter = RailEnergyMeter(source, period_s=0.01)
    meter.start()
    time.sleep(0.03)
    reading = meter.stop()
    assert reading.mean_power_mw == pytest.approx(watts)
    assert not reading.estimated


def test_rail_meter_fails_clearly_when_the_source_reads_no_rails():
    meter = RailEnergyMeter(ReplaySource([_context({})], loop=True), period_s=0.01)
    meter.start()
    with pytest.raises(MonitorError, match="no power rail readings"):
        meter.stop()


def test_reading_refuses_per_inference_when_no_inference_ran():
    with pytest.raises(ConfigError):
        EnergyReading(1.0, 1.0, True, "x").per_inference_mj(0)


def test_rail_meter_refuses_a_non_positive_period():
    with pytest.raises(ConfigError):
        RailEnergyMeter(ReplaySource([_context({"VDD_IN": 1.0})]), period_s=0)


def test_rapl_meter_refuses_construction_when_the_counter_is_absent(tmp_path: Path):
    with pytest.raises(MonitorError):
        RaplEnergyMeter(tmp_path)
