"""The engine pool: atomic swaps, leases that outlive a swap, drained engines closed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import ConstantEngine

from edge_service.errors import EngineError, NotReadyError


def _pool(max_pinned: int = 0):
    """A pool over ConstantEngines; no recent-engine cache unless ``max_pinned`` asks."""
    from edge_service.runtime.pool import EnginePool

    made: dict[str, ConstantEngine] = {}

    def loader(vid: str) -> ConstantEngine:
        if vid == "broken":
            raise EngineError("cannot load broken")
        made[vid] = ConstantEngine(vid, float(len(made)))
        return made[vid]

    return EnginePool(loader, max_pinned), made


def test_lease_raises_not_ready_when_nothing_activated() -> None:
    pool, _ = _pool()
    with pytest.raises(NotReadyError), pool.lease():
        pass


def test_old_engine_closed_at_once_when_swapped_without_leases() -> None:
    pool, made = _pool()
    pool.activate("a")
    pool.activate("b")
    assert pool.active_id == "b"
    assert made["a"].closed and not made["b"].closed


def test_swapped_out_engine_stays_warm_and_comes_back_without_a_load_when_cached() -> None:
    pool, made = _pool(max_pinned=1)
    pool.activate("a")
    first_a = made["a"]
    pool.activate("b")
    assert not first_a.closed  # kept among the recent few
    pool.activate("a")
    assert made["a"] is first_a and pool.last_swap_preloaded  # no second load
    pool.activate("c")  # a goes to the cache, b (least recent) is evicted and closed
    assert made["b"].closed and not first_a.closed


def test_leased_engine_keeps_running_when_swapped_mid_request() -> None:
    pool, made = _pool()
    pool.activate("a")
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    with pool.lease() as (vid, engine):
        pool.activate("b")
        assert vid == "a" and not made["a"].closed
        assert engine.infer(x)[0, 0] == 0.0  # still serves the request it started
    assert made["a"].closed  # drained, then closed
    with pool.lease() as (vid, _):
        assert vid == "b"


def test_failed_load_keeps_old_engine_active_when_new_variant_breaks() -> None:
    pool, made = _pool()
    pool.activate("a")
    with pytest.raises(EngineError):
        pool.activate("broken")
    assert pool.active_id == "a" and not made["a"].closed


def test_activate_is_a_no_op_when_variant_already_active() -> None:
    pool, made = _pool()
    pool.activate("a")
    pool.activate("a")
    assert list(made) == ["a"]


def test_no_request_fails_when_swapping_under_concurrent_load() -> None:
    pool, _ = _pool()
    pool.activate("v0")
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    errors: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with pool.lease() as (_, engine):
                    engine.infer(x)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 200):
        pool.activate(f"v{i}")
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_close_closes_active_engine_when_pool_shuts_down() -> None:
    pool, made = _pool()
    pool.activate("a")
    pool.close()
    assert made["a"].closed and not pool.ready


def test_infer_refuses_batch_when_shape_or_dtype_wrong() -> None:
    from edge_service.errors import BadInputError

    engine = ConstantEngine("a", 0.0)
    with pytest.raises(BadInputError, match="float32"):
        engine.infer(np.zeros((1, 1, 4, 4), dtype=np.float64))
    with pytest.raises(BadInputError, match="shape"):
        engine.infer(np.zeros((1, 1, 5, 4), dtype=np.float32))


def test_preloaded_engine_swaps_in_without_loading_when_on_standby() -> None:
    pool, made = _pool()
    pool.activate("a")
    pool.preload(["b", "c"])
    assert set(pool.standby) == {"b", "c"} and set(made) == {"a", "b", "c"}
    pool.activate("b")
    assert set(made) == {"a", "b", "c"}  # nothing new was loaded
    assert pool.active_id == "b" and "b" not in pool.standby
    # no wall-clock figure: how long a swap takes is the machine's; that it reused the
    # standby engine, and measured itself, is the pool's
    assert pool.last_swap_preloaded is True
    assert pool.last_swap_ms is not None and pool.last_swap_ms >= 0


def test_standby_is_trimmed_and_closed_when_neighbours_change() -> None:
    pool, made = _pool()
    pool.activate("a")
    pool.preload(["b", "c"])
    pool.preload(["c"])
    assert pool.standby == ("c",) and made["b"].closed


def test_failed_load_marks_variant_unhealthy_and_keeps_serving_when_it_breaks() -> None:
    pool, _ = _pool()
    pool.activate("a")
    pool.preload(["broken"])  # best effort: no raise
    assert "broken" in pool.unhealthy and pool.standby == ()
    with pytest.raises(EngineError):
        pool.activate("broken")
    assert pool.active_id == "a" and "broken" in pool.unhealthy
    pool.forgive("broken")
    assert "broken" not in pool.unhealthy


def test_pinned_lease_loads_that_variant_once_and_leaves_the_active_one_alone() -> None:
    pool, made = _pool()
    pool.activate("a")
    with pool.lease("b") as (vid, engine):
        assert vid == "b" and engine is made["b"]
    with pool.lease("b") as (vid, engine):
        assert engine is made["b"]  # kept in the pinned cache, not loaded again
    assert pool.active_id == "a" and pool.pinned == ("b",)
    with pool.lease() as (vid, _):
        assert vid == "a"


def test_pinned_cache_evicts_least_recent_but_never_under_a_running_request() -> None:
    from edge_service.runtime.pool import EnginePool

    made: dict[str, ConstantEngine] = {}

    def loader(vid: str) -> ConstantEngine:
        made[vid] = ConstantEngine(vid)
        return made[vid]

    pool = EnginePool(loader, max_pinned=1)
    pool.activate("a")
    with pool.lease("b"):
        with pool.lease("c"):  # evicts b while b is leased
            assert not made["b"].closed
        assert not made["b"].closed
    assert made["b"].closed and not made["c"].closed
    assert pool.pinned == ("c",)


def test_reload_replaces_every_engine_through_the_new_loader_without_dropping_a_lease() -> None:
    from edge_service.runtime.pool import EnginePool

    versions: list[int] = [1]

    def loader(vid: str) -> ConstantEngine:
        return ConstantEngine(vid, float(versions[0]))

    pool = EnginePool(loader)
    pool.activate("a")
    pool.preload(["b"])
    with pool.lease() as (_, old):
        versions[0] = 2
        pool.reload()
        assert old.infer(np.zeros((1, 1, 4, 4), np.float32))[0, 0] == 1.0  # still usable
    assert old.closed
    with pool.lease() as (vid, new):
        assert vid == "a" and new.infer(np.zeros((1, 1, 4, 4), np.float32))[0, 0] == 2.0
    assert pool.standby == ()


def test_standby_dropped_while_leased_closes_after_the_lease() -> None:
    pool, made = _pool()
    pool.activate("a")
    pool.preload(["b"])
    with pool.lease("b") as (_, engine):
        pool.preload([])
        assert not engine.closed
    assert made["b"].closed


def test_pinned_lease_of_a_variant_that_fails_to_load_raises_and_active_keeps_serving() -> None:
    pool, _ = _pool()
    pool.activate("a")
    unhealthy = pytest.raises(NotReadyError, match="broken is unhealthy: cannot load")
    with unhealthy, pool.lease("broken"):
        pass
    assert pool.unhealthy == {"broken"}
    with pool.lease() as (vid, _):
        assert vid == "a"


def _pool_failing_with(exc: BaseException, clock=None):
    """A pool whose loader raises ``exc`` for variant "bad" (how a backend fails)."""
    from edge_service.runtime.pool import EnginePool

    loads: list[str] = []

    def loader(vid: str) -> ConstantEngine:
        loads.append(vid)
        if vid == "bad":
            raise exc
        return ConstantEngine(vid)

    kw = {"clock": clock, "retry_unhealthy_s": 60.0} if clock else {}
    return EnginePool(loader, **kw), loads


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (MemoryError(), "out of memory loading bad"),
        (RuntimeError("CUDA driver error"), "loading bad failed: RuntimeError: CUDA driver error"),
        (EngineError("cannot parse bad"), "cannot parse bad"),
    ],
)
def test_load_failure_of_any_kind_is_an_engine_error_and_the_old_engine_stays_active(
    exc: BaseException, says: str
) -> None:
    pool, _ = _pool_failing_with(exc)
    pool.activate("a")
    with pytest.raises(EngineError, match=says):
        pool.activate("bad")
    assert pool.active_id == "a" and pool.unhealthy == {"bad"}
    assert says in (pool.unhealthy_reason("bad") or "")


def test_preload_skips_variant_when_its_load_runs_out_of_memory() -> None:
    pool, _ = _pool_failing_with(MemoryError())
    pool.activate("a")
    pool.preload(["bad", "b"])  # best effort: no raise
    assert pool.standby == ("b",) and pool.unhealthy == {"bad"}


def test_pinned_requests_do_not_reload_an_unhealthy_variant_until_the_retry_period_ends() -> None:
    now = [0.0]
    pool, loads = _pool_failing_with(MemoryError(), clock=lambda: now[0])
    pool.activate("a")
    for _ in range(3):
        unhealthy = pytest.raises(NotReadyError, match="bad is unhealthy: out of memory")
        with unhealthy, pool.lease("bad"):
            pass
    assert loads.count("bad") == 1  # one try, then the mark answers
    now[0] = 61.0
    assert pool.unhealthy == frozenset() and pool.unhealthy_reason("bad") is None
    with pytest.raises(NotReadyError), pool.lease("bad"):
        pass
    assert loads.count("bad") == 2  # tried again after the retry period
