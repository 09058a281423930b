"""What the operator asks of the served variant: the budget policy's limits, objective,
hysteresis and pins, validated on construction and round-tripped through JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from edge_service.errors import ConfigError

Objective = Literal["accuracy", "latency", "energy"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
ANY_MODE = "*"  # a pin under this key holds in every power mode without its own pin

_OPTIONAL_LIMITS = {
    "latency_budget_ms": "a positive number of milliseconds (the p99 budget)",
    "max_power_mw": "a positive number of milliwatts",
    "memory_budget_mb": "a positive number of megabytes",
}


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What the operator asks of the served variant (every limit optional).

    ``upgrade_margin`` is the fraction of the latency budget that must stay free before
    moving to a slower variant; ``cooldown_s`` the wait after a change before any move that
    no violation forces; ``pins`` maps a power mode name to the variant to serve in it.
    """

    latency_budget_ms: float | None = None
    min_accuracy: float | None = None
    max_power_mw: float | None = None
    memory_budget_mb: float | None = None
    objective: Objective = "accuracy"
    upgrade_margin: float = 0.15
    cooldown_s: float = 5.0
    pins: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name, want in _OPTIONAL_LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                self._set(name, _number(name, value, want, lambda v: v > 0))
        if self.min_accuracy is not None:
            want = "a top-1 fraction from 0 to 1 (e.g. 0.9)"
            self._set("min_accuracy", _number("min_accuracy", self.min_accuracy, want, _unit))
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"policy field 'objective' must be one of {list(OBJECTIVES)}, "
                f"got {self.objective!r}"
            )
        margin_want = "a fraction of the budget in [0, 1) (e.g. 0.15)"
        margin = _number("upgrade_margin", self.upgrade_margin, margin_want, lambda v: v < 1)
        self._set("upgrade_margin", margin)
        self._set("cooldown_s", _number("cooldown_s", self.cooldown_s, "seconds >= 0 (e.g. 5)"))
        self._set("pins", _pins(self.pins))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; `from_dict` reads it back to an equal Policy."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["pins"] = dict(self.pins)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Parse a policy dict; missing fields take defaults, unknown or bad ones ConfigError."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a policy must be a JSON object, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown policy field(s) {unknown}; the fields are {known}")
        return cls(**d)


def _number(
    name: str, value: object, want: str, ok: Callable[[float], bool] = lambda v: True
) -> float:
    """``value`` as a finite float >= 0 that meets ``ok``, else ConfigError saying ``want``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"policy field {name!r} must be {want}, got {value!r}")
    if not (math.isfinite(value) and value >= 0 and ok(value)):
        raise ConfigError(f"policy field {name!r} must be {want}, got {value!r}")
    return float(value)


def _unit(value: float) -> bool:
    return value <= 1


def _pins(pins: object) -> dict[str, str]:
    """A private copy of ``pins``, checked to map mode names to variant ids."""
    if isinstance(pins, Mapping):
        copy = dict(pins)
        if all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in copy.items()):
            return copy
    raise ConfigError(
        "policy field 'pins' must map power mode names to variant ids, e.g. {\"MAXN\": "
        f'"base@fp16"}}, got {pins!r}'
    )
