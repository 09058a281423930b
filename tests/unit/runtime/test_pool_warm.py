"""The pool warms an engine when it is about to serve (swapped in, reloaded, loaded for a
pinned request), not when it is preloaded on standby; one that cannot run never serves:
its variant is unhealthy, and the engine that served goes on serving."""

from __future__ import annotations

import pytest
from support import ConstantEngine

from edge_service.errors import EngineError, NotReadyError
from edge_service.runtime.pool import EnginePool


def _pool(broken: frozenset[str] = frozenset()):
    made: dict[str, list[ConstantEngine]] = {}
    warmed: list[str] = []

    def loader(vid: str) -> ConstantEngine:
        made.setdefault(vid, []).append(ConstantEngine(vid))
        return made[vid][-1]

    def warm(vid: str, engine: object) -> None:
        warmed.append(vid)
        if vid in broken:
            raise EngineError(f"{vid} failed to run: broken kernel")

    return EnginePool(loader, max_pinned=2, warm=warm), made, warmed


def test_standby_engines_are_not_run_until_one_is_swapped_in() -> None:
    pool, made, warmed = _pool()
    pool.activate("a")
    assert warmed == ["a"]
    pool.preload(["b", "c"])
    assert warmed == ["a"]  # preloaded: loaded, not run
    pool.activate("b")
    assert warmed == ["a", "b"] and len(made["b"]) == 1  # swapped in without a load
    pool.reload()  # a new thread count: the active engine is loaded and warmed again
    assert warmed == ["a", "b", "b"] and pool.active_id == "b"


def test_a_pinned_request_gets_a_warmed_engine() -> None:
    pool, _, warmed = _pool()
    pool.activate("a")
    with pool.lease("p") as (vid, _engine):
        assert vid == "p"
    assert warmed == ["a", "p"]


def test_a_standby_engine_that_cannot_run_never_serves_and_the_active_one_stays() -> None:
    pool, made, _ = _pool(broken=frozenset({"bad"}))
    pool.activate("a")
    pool.preload(["bad"])
    with pytest.raises(EngineError, match="bad loaded but cannot run: bad failed to run"):
        pool.activate("bad")
    assert pool.active_id == "a"
    assert "bad" in pool.unhealthy and "cannot run" in (pool.unhealthy_reason("bad") or "")
    assert made["bad"][0].closed and "bad" not in pool.loaded
    with pool.lease() as (vid, _engine):
        assert vid == "a"
    with pytest.raises(NotReadyError, match="bad is unhealthy"), pool.lease("bad"):
        pass  # pinned: 503


def test_a_pinned_engine_that_cannot_run_is_a_503_and_is_closed() -> None:
    pool, made, _ = _pool(broken=frozenset({"bad"}))
    pool.activate("a")
    unhealthy = "bad is unhealthy: bad loaded but cannot run"
    with pytest.raises(NotReadyError, match=unhealthy), pool.lease("bad"):
        pass
    assert made["bad"][0].closed and "bad" not in pool.loaded
