"""Emulated power modes off-Jetson: the mode table, CPU affinity, and reporting the mode."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from edge_service.errors import ConfigError
from edge_service.monitor import (
    EmulatedNvpModel,
    EmulatedPowerMode,
    LinuxSource,
    PowerMode,
    default_modes,
)
from edge_service.monitor.emulated import apply_affinity, usable_cores

HAS_AFFINITY = hasattr(os, "sched_setaffinity")


@pytest.fixture
def restore_affinity() -> Iterator[None]:
    """Put this process's CPU affinity back after a test that changes it."""
    before = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, before)


def test_default_modes_are_all_half_and_one_core_when_four_cores_are_usable() -> None:
    assert default_modes([3, 0, 1, 2]) == (
        EmulatedPowerMode(0, "MAXN", (0, 1, 2, 3), 4),
        EmulatedPowerMode(1, "HALF", (0, 1), 2),
        EmulatedPowerMode(2, "MIN", (0,), 1),
    )


def test_default_modes_keep_one_core_in_every_mode_when_one_core_is_usable() -> None:
    assert {m.cores for m in default_modes([5])} == {(5,)}


@pytest.mark.parametrize(
    ("mode_id", "cores", "threads"), [(-1, (0,), 1), (0, (), 1), (0, (0,), 0), (True, (0,), 1)]
)
def test_emulated_power_mode_refuses_when_id_cores_or_threads_are_impossible(
    mode_id: int, cores: tuple[int, ...], threads: int
) -> None:
    with pytest.raises(ConfigError):
        EmulatedPowerMode(mode_id, "X", cores, threads)


def test_emulated_nvpmodel_records_the_mode_when_set_without_applying() -> None:
    modes = EmulatedNvpModel(default_modes([0, 1, 2, 3]), apply=False)
    assert modes.query() == PowerMode(0, "MAXN")
    modes.set_mode(1)
    assert modes.query() == PowerMode(1, "HALF")
    assert modes.current.threads == 2
    assert modes.modes() == [PowerMode(0, "MAXN"), PowerMode(1, "HALF"), PowerMode(2, "MIN")]


@pytest.mark.parametrize("bad", [3, -1, "1"])
def test_emulated_nvpmodel_refuses_and_keeps_the_mode_when_the_id_is_unknown(bad: object) -> None:
    modes = EmulatedNvpModel(default_modes([0, 1]), apply=False)
    with pytest.raises(ConfigError, match=r"MAXN|non-negative"):
        modes.set_mode(bad)  # type: ignore[arg-type]
    assert modes.query() == PowerMode(0, "MAXN")


@pytest.mark.skipif(not HAS_AFFINITY, reason="no CPU affinity on this platform")
def test_apply_affinity_refuses_naming_the_cores_when_this_process_cannot_use_them() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(ConfigError, match=r"cannot run on cores \[4096\]"):
        apply_affinity([0, 4096])
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(not HAS_AFFINITY, reason="no CPU affinity on this platform")
def test_emulated_nvpmodel_pins_and_unpins_this_process_when_modes_are_applied(
    restore_affinity: None,
) -> None:
    every = usable_cores()
    modes = EmulatedNvpModel()
    modes.set_mode(2)
    assert os.sched_getaffinity(0) == {every[0]}
    modes.set_mode(0)  # back to every core the process could use at construction
    assert os.sched_getaffinity(0) == set(every)


def test_linux_source_reports_the_emulated_mode_when_given_an_emulated_nvpmodel() -> None:
    modes = EmulatedNvpModel(apply=False)
    source = LinuxSource(nvpmodel=modes, mode_refresh_s=0)
    assert source.sample().power_mode == PowerMode(0, "MAXN")
    modes.set_mode(2)
    assert source.sample().power_mode == PowerMode(2, "MIN")
