"""The thread guard: fewer engine threads while other processes hold the cores, the
mode's count back once they have been free for a while."""

from __future__ import annotations

import pytest

from edge_service.control.threads import ThreadGuard, ThreadGuardConfig
from edge_service.errors import ConfigError


def guard(smooth_s: float = 0.0, restore_s: float = 3.0) -> ThreadGuard:
    return ThreadGuard(ThreadGuardConfig(smooth_s=smooth_s, restore_s=restore_s))


def test_a_calm_board_keeps_the_modes_threads() -> None:
    g = guard()
    assert g.update(0.0, busy_cores=0.5, own_cores=0.3, cores=2, mode_threads=2) == 2


def test_a_competitor_on_every_core_takes_the_engines_to_one_thread_at_once() -> None:
    g = guard()
    g.update(0.0, 0.5, 0.3, 2, 2)
    assert g.update(0.1, busy_cores=2.0, own_cores=0.3, cores=2, mode_threads=2) == 1
    assert g.others == pytest.approx(1.7)


def test_this_processs_own_load_is_no_competitor() -> None:
    g = guard()
    assert g.update(0.0, busy_cores=2.0, own_cores=1.9, cores=2, mode_threads=2) == 2


def test_each_thread_gets_a_free_core_on_a_bigger_board() -> None:
    g = guard()
    assert g.update(0.0, busy_cores=2.4, own_cores=0.4, cores=4, mode_threads=4) == 2
    assert g.update(0.1, busy_cores=4.0, own_cores=0.2, cores=4, mode_threads=4) == 1


def test_threads_come_back_only_after_the_cores_were_free_for_restore_s() -> None:
    g = guard(restore_s=3.0)
    g.update(0.0, 2.0, 0.3, 2, 2)
    assert g.update(1.0, 0.4, 0.3, 2, 2) == 1  # free since 1.0
    assert g.update(2.0, 2.0, 0.3, 2, 2) == 1  # busy again: the wait starts over
    assert g.update(3.0, 0.4, 0.3, 2, 2) == 1
    assert g.update(5.9, 0.4, 0.3, 2, 2) == 1
    assert g.update(6.0, 0.4, 0.3, 2, 2) == 2


def test_one_busy_reading_is_smoothed_away() -> None:
    g = guard(smooth_s=0.5)
    for i in range(10):
        g.update(i * 0.1, 0.5, 0.3, 2, 2)
    assert g.update(1.0, busy_cores=1.2, own_cores=0.3, cores=2, mode_threads=2) == 2
    assert g.update(1.1, busy_cores=2.0, own_cores=0.3, cores=2, mode_threads=2) == 1


def test_a_single_thread_mode_has_nothing_to_give_up() -> None:
    g = guard()
    assert g.update(0.0, busy_cores=1.0, own_cores=0.0, cores=1, mode_threads=1) == 1
    assert g.update(0.1, busy_cores=2.0, own_cores=0.0, cores=2, mode_threads=1) == 1


def test_a_mode_with_fewer_threads_caps_the_count_and_a_richer_one_waits_for_free_cores() -> None:
    g = guard(restore_s=1.0)
    assert g.update(0.0, 4.0, 0.0, 4, 4) == 1
    assert g.update(0.1, 4.0, 0.0, 4, 2) == 1  # a new mode does not lift the fallback
    assert g.update(0.2, 0.0, 0.0, 4, 2) == 1
    assert g.update(1.2, 0.0, 0.0, 4, 2) == 2


@pytest.mark.parametrize("field", ["smooth_s", "restore_s"])
def test_config_refuses_a_negative_or_infinite_time(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ThreadGuardConfig(**{field: -1.0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=field):
        ThreadGuardConfig(**{field: float("inf")})  # type: ignore[arg-type]


def test_a_competitor_that_comes_or_goes_is_a_shift_and_noise_is_not() -> None:
    g = guard()
    g.update(0.0, 0.5, 0.3, 2, 2)
    assert not g.shifted
    g.update(0.1, 0.7, 0.3, 2, 2)  # 0.2 more of a core: noise
    assert not g.shifted
    g.update(0.2, 2.0, 0.3, 2, 2)  # a competitor on both cores
    assert g.shifted
    g.update(0.3, 2.0, 0.3, 2, 2)
    assert not g.shifted  # the same competitor: no new shift
    g.update(0.4, 0.5, 0.3, 2, 2)  # it left
    assert g.shifted


def test_on_one_core_a_competitor_that_takes_half_of_it_is_a_shift() -> None:
    g = guard()
    g.update(0.0, 0.45, 0.45, 1, 1)  # a detector served at 0.45 of the one core
    g.update(0.1, 1.0, 0.55, 1, 1)  # a hog takes what the fair share leaves it: 0.45
    assert g.shifted  # a quarter of the one core; 0.5 would never be reached
    g.update(0.2, 1.0, 0.5, 1, 1)
    assert not g.shifted
    g.update(0.3, 0.45, 0.45, 1, 1)  # it left
    assert g.shifted and g.shift_by < 0


def test_a_single_thread_mode_still_sees_a_competitor_come_and_go() -> None:
    g = guard()
    g.update(0.0, 0.3, 0.3, 1, 1)
    g.update(0.1, 1.0, 0.1, 1, 1)
    assert g.shifted and g.others == pytest.approx(0.9)


def test_a_competitor_that_just_left_does_not_take_threads_on_its_smoothed_load() -> None:
    """A hog stops as the power mode goes MIN -> MAXN: the smoothed load still carries
    it, the reading of the moment does not; the engines keep the mode's threads."""
    g = ThreadGuard(ThreadGuardConfig(smooth_s=0.5, restore_s=3.0))
    for i in range(20):  # in MIN, a hog on both cores: one thread is all the mode gives
        g.update(i * 0.1, busy_cores=2.0, own_cores=0.1, cores=2, mode_threads=1)
    assert g.others > 1.5
    assert g.update(2.1, busy_cores=0.2, own_cores=0.1, cores=2, mode_threads=2) == 2
    assert g.others > 0.7  # still smoothed high: the reading of the moment decided


def test_a_competitor_that_arrives_takes_threads_once_the_smoothed_load_agrees() -> None:
    g = ThreadGuard(ThreadGuardConfig(smooth_s=0.5, restore_s=3.0))
    g.update(0.0, busy_cores=0.2, own_cores=0.1, cores=2, mode_threads=2)
    assert g.update(0.05, busy_cores=2.0, own_cores=0.1, cores=2, mode_threads=2) == 2
    threads = [g.update(0.05 + 0.1 * i, 2.0, 0.1, 2, 2) for i in range(1, 10)]
    assert threads[-1] == 1
