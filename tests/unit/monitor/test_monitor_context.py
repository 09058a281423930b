"""Context: JSON round trips, validation of trace fields, derived values."""

from __future__ import annotations

import json
import pickle

import pytest

from edge_service.errors import MonitorError
from edge_service.monitor import Context, PowerMode

REQUIRED = ("t", "source", "cpu_online", "cpu_load", "mem_available_mb", "mem_total_mb")


def full_context() -> Context:
    return Context(
        t=1700000000.25,
        source="tegra",
        device="NVIDIA Jetson Orin Nano Developer Kit",
        power_mode=PowerMode(id=1, name="7W"),
        gpu_freq_hz=306_000_000,
        gpu_max_freq_hz=624_750_000,
        gpu_load=0.42,
        cpu_online=4,
        cpu_freqs_hz=(729_600_000, 729_600_000, 1_510_400_000, 1_510_400_000),
        cpu_load=0.3,
        mem_available_mb=4096.5,
        mem_total_mb=7620.0,
        temps_c={"cpu": 48.5, "gpu": 47.0},
        throttled=False,
        power_mw={"VDD_IN": 5120.0, "VDD_CPU_GPU_CV": 1200.0},
        extra={"fan_pwm": 80, "notes": {"site": "lab"}},
    )


def minimal_dict() -> dict[str, object]:
    return {
        "t": 10.0,
        "source": "linux",
        "cpu_online": 2,
        "cpu_load": 0.5,
        "mem_available_mb": 1000.0,
        "mem_total_mb": 4000.0,
    }


def test_context_round_trips_equal_when_passed_through_to_dict_and_from_dict() -> None:
    ctx = full_context()
    assert Context.from_dict(ctx.to_dict()) == ctx


def test_context_round_trips_equal_when_passed_through_json_text() -> None:
    ctx = full_context()
    assert Context.from_dict(json.loads(json.dumps(ctx.to_dict()))) == ctx


def test_context_keeps_unknown_fields_when_read_from_a_newer_trace() -> None:
    d = {**minimal_dict(), "fan_pwm": 80, "emc_freq_hz": 2_133_000_000}
    ctx = Context.from_dict(d)
    assert ctx.extra == {"fan_pwm": 80, "emc_freq_hz": 2_133_000_000}
    assert ctx.to_dict()["fan_pwm"] == 80
    assert Context.from_dict(ctx.to_dict()) == ctx


def test_to_dict_writes_power_mode_as_id_and_name_when_mode_known() -> None:
    d = full_context().to_dict()
    assert d["power_mode"] == {"id": 1, "name": "7W"}
    assert "extra" not in d


@pytest.mark.parametrize("name", REQUIRED)
def test_from_dict_refuses_naming_the_field_when_a_required_field_is_missing(name: str) -> None:
    d = minimal_dict()
    del d[name]
    with pytest.raises(MonitorError, match=repr(name)):
        Context.from_dict(d)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cpu_load", "high"),
        ("cpu_online", True),
        ("t", None),
        ("temps_c", {"cpu": "hot"}),
        ("cpu_freqs_hz", "1000"),
        ("throttled", "no"),
        ("power_mode", {"id": "0", "name": "MAXN"}),
    ],
)
def test_from_dict_refuses_naming_the_field_when_a_field_has_the_wrong_type(
    name: str, value: object
) -> None:
    with pytest.raises(MonitorError, match=name):
        Context.from_dict({**minimal_dict(), name: value})


def test_from_dict_sets_optional_fields_to_none_or_empty_when_they_are_missing() -> None:
    ctx = Context.from_dict(minimal_dict())
    assert ctx.power_mode is None
    assert ctx.gpu_freq_hz is None
    assert ctx.throttled is None
    assert ctx.device is None
    assert ctx.temps_c == {}
    assert ctx.power_mw == {}
    assert ctx.cpu_freqs_hz == ()
    assert ctx.extra == {}


def test_from_dict_sets_optional_fields_to_none_or_empty_when_they_are_null() -> None:
    d = {**minimal_dict(), "power_mode": None, "temps_c": None, "power_mw": None}
    ctx = Context.from_dict(d)
    assert (ctx.power_mode, ctx.temps_c, ctx.power_mw) == (None, {}, {})


def test_from_dict_refuses_when_cpu_load_is_a_percentage() -> None:
    with pytest.raises(MonitorError, match="cpu_load"):
        Context.from_dict({**minimal_dict(), "cpu_load": 45.0})


def test_context_refuses_when_extra_shadows_a_field() -> None:
    with pytest.raises(MonitorError, match="extra"):
        Context(**{**minimal_dict(), "extra": {"cpu_load": 1.0}})  # type: ignore[arg-type]


def test_context_is_hashable_and_picklable_when_it_holds_mappings() -> None:
    ctx = full_context()
    assert hash(ctx) == hash(Context.from_dict(ctx.to_dict()))
    assert pickle.loads(pickle.dumps(ctx)) == ctx


def test_context_is_unchanged_when_the_caller_mutates_the_dict_it_passed() -> None:
    temps = {"cpu": 40.0}
    ctx = Context(**minimal_dict(), temps_c=temps)  # type: ignore[arg-type]
    temps["cpu"] = 99.0
    ctx.to_dict()["temps_c"]["cpu"] = 99.0
    assert ctx.temps_c == {"cpu": 40.0}


def test_mem_pressure_is_the_used_fraction_when_memory_is_known() -> None:
    assert Context.from_dict(minimal_dict()).mem_pressure == pytest.approx(0.75)


def test_power_total_is_the_input_rail_when_the_board_reports_vdd_in() -> None:
    # Jetson regression: VDD_IN already contains VDD_CPU_GPU_CV; summing counted it twice.
    assert full_context().power_total_mw == pytest.approx(5120.0)


def test_power_total_is_the_input_rail_when_a_nano_reports_pom_5v_in() -> None:
    rails = {"POM_5V_IN": 2167.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 374.0}
    ctx = Context.from_dict({**minimal_dict(), "power_mw": rails})
    assert ctx.power_total_mw == pytest.approx(2167.0)


def test_power_total_is_the_sum_of_rails_when_there_is_no_input_rail() -> None:
    # AGX Orin: VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0 and VDDQ_VDD2_1V8AO do not overlap.
    rails = {"VDD_GPU_SOC": 3087.0, "VDD_CPU_CV": 494.0, "VIN_SYS_5V0": 3326.0}
    ctx = Context.from_dict({**minimal_dict(), "power_mw": rails})
    assert ctx.power_total_mw == pytest.approx(6907.0)


def test_power_total_is_none_when_no_rail_is_read() -> None:
    assert Context.from_dict(minimal_dict()).power_total_mw is None


def test_summary_names_mode_load_memory_and_power_when_all_are_known() -> None:
    text = full_context().summary()
    for part in ("tegra", "1:7W", "4x 30%", "gpu 306MHz 42%", "4096/7620MB", "48.5C", "5.12W"):
        assert part in text
