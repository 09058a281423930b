"""Power mode control off-Jetson: emulated modes by id or name, thread counts, refusals."""

from __future__ import annotations

import os

import pytest

from edge_service.config import Settings
from edge_service.errors import ConfigError
from edge_service.monitor.emulated import EmulatedNvpModel, EmulatedPowerMode
from edge_service.server.power import PowerControl


def _control(**settings) -> PowerControl:
    cores = tuple(sorted(os.sched_getaffinity(0)))
    modes = [
        EmulatedPowerMode(0, "MAXN", cores, len(cores)),
        EmulatedPowerMode(1, "MIN", cores[:1], 1),
    ]
    return PowerControl(Settings(**settings), EmulatedNvpModel(modes, apply=False))


def test_switching_by_name_or_id_records_the_mode_and_its_threads():
    control = _control()
    assert control.threads == 0  # nothing applied yet: the runtime picks
    change = control.set("min")
    assert change.current.name == "MIN" and change.previous and change.previous.name == "MAXN"
    assert change.emulated and change.threads == 1 and control.threads == 1
    assert control.set(0).current.name == "MAXN"


def test_explicit_thread_setting_wins_over_the_mode():
    control = _control(intra_op_threads=3)
    control.set(1)
    assert control.threads == 3


@pytest.mark.parametrize("mode", ["TURBO", 7, -1, True])
def test_unknown_modes_are_refused_and_nothing_changes(mode):
    control = _control()
    with pytest.raises(ConfigError):
        control.set(mode)
    assert control.current() is not None and control.current().name == "MAXN"


def test_modes_list_cores_and_threads():
    modes = _control().modes()
    assert [m["name"] for m in modes] == ["MAXN", "MIN"]
    assert modes[1]["threads"] == 1
