"""The server's thread fallback between the loop's ticks and the engines' reload."""

from __future__ import annotations

from edge_service.control.threads import ThreadGuard, ThreadGuardConfig
from edge_service.monitor.context import Context
from edge_service.server.threads import ThreadFallback


class Clocks:
    """Wall and CPU clocks the test moves: this process uses ``own`` of a core."""

    def __init__(self, own: float = 0.2) -> None:
        self.t, self.own = 0.0, own

    def wall(self) -> float:
        return self.t

    def cpu(self) -> float:
        return self.t * self.own


def board(load: float) -> Context:
    return Context(
        t=0.0, source="x", cpu_online=2, cpu_load=load, mem_available_mb=1.0, mem_total_mb=2.0
    )


def fallback(
    accept: list[bool], cpu_engines: bool = True
) -> tuple[ThreadFallback, Clocks, list[tuple[int | None, str]]]:
    clocks, asked = Clocks(), []

    def apply(cap: int | None, reason: str) -> bool:
        asked.append((cap, reason))
        return accept.pop(0) if accept else True

    f = ThreadFallback(
        apply, lambda: 2, lambda: cpu_engines,
        ThreadGuard(ThreadGuardConfig(smooth_s=0.0, restore_s=1.0)),
        clock=clocks.wall, cpu_clock=clocks.cpu,
    )  # fmt: skip
    return f, clocks, asked


def tick(f: ThreadFallback, clocks: Clocks, load: float) -> None:
    clocks.t += 0.1
    f.on_tick(board(load))


def test_a_reload_refused_now_is_asked_for_again_at_the_next_tick() -> None:
    f, clocks, asked = fallback(accept=[False])
    tick(f, clocks, 0.1)
    tick(f, clocks, 1.0)
    assert f.cap is None and asked[0][0] == 1  # an operator call held the service
    tick(f, clocks, 1.0)
    assert f.cap == 1 and len(asked) == 2
    assert "other processes use 1.8 of 2 cores -> engines at 1 thread" in asked[1][1]
    tick(f, clocks, 1.0)
    assert len(asked) == 2  # nothing new to do


def test_the_cap_is_lifted_once_the_cores_were_free_for_a_while() -> None:
    f, clocks, asked = fallback(accept=[])
    tick(f, clocks, 0.1)
    tick(f, clocks, 1.0)
    assert f.cap == 1
    for _ in range(15):
        tick(f, clocks, 0.1)
    assert f.cap is None and "back to the mode's 2 threads" in asked[-1][1]


def test_tensorrt_only_families_are_left_alone() -> None:
    f, clocks, asked = fallback(accept=[], cpu_engines=False)
    for _ in range(5):
        tick(f, clocks, 1.0)
    assert f.cap is None and asked == []


def test_a_competitor_coming_and_going_is_told_to_the_controller_once_each() -> None:
    clocks, shifts = Clocks(), list[float]()
    f = ThreadFallback(
        lambda cap, reason: True, lambda: 1, lambda: True,
        ThreadGuard(ThreadGuardConfig(smooth_s=0.0, restore_s=1.0)),
        clock=clocks.wall, cpu_clock=clocks.cpu, shift=shifts.append,
    )  # fmt: skip
    for load in (0.1, 0.1, 1.0, 1.0, 1.0, 0.1, 0.1):
        tick(f, clocks, load)
    assert len(shifts) == 2 and f.cap is None  # one thread already: nothing to reload
    assert shifts[0] > 0.5 and shifts[1] < -0.5  # it came, then it left
