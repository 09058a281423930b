"""What every policy answers, and the rankings they share.

`Decision` is the one result type of the pressure rule (`pressure_rule.decide`), the budget
policy (`budget_policy.choose`) and the strategies the adaptation loop follows. `fastest`
and `most_accurate` rank anything that has a variant id and an accuracy, by the latency the
caller names (the pressure rule ranks by the profile's p50, the budget policy by the
predicted p99).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The variant to serve, and why.

    ``feasible`` is False when the limits could not all be met: under the pressure rule,
    pressure forced the fastest; under the budget policy nothing met it and the fastest is
    served, or an operator pin forces a variant that does not meet it. ``violations`` are
    the constraints the *current* variant breaks in this context; ``pinned`` marks an
    operator pin.
    """

    variant_id: str
    reason: str
    changed: bool
    feasible: bool = True
    violations: tuple[str, ...] = ()
    pinned: bool = False

    def to_dict(self) -> dict[str, object]:
        """The decision as ``/v1/status`` shows it (``constrained``: not ``feasible``)."""
        return {
            "variant_id": self.variant_id,
            "reason": self.reason,
            "constrained": not self.feasible,
            "changed": self.changed,
            "violations": list(self.violations),
            "pinned": self.pinned,
        }


class Ranked(Protocol):
    @property
    def variant_id(self) -> str: ...

    @property
    def accuracy(self) -> float | None: ...


R = TypeVar("R", bound=Ranked)


def fastest(items: Iterable[R], latency_ms: Callable[[R], float | None]) -> R:
    """The lowest ``latency_ms`` (unknown last); ties to the more accurate, then by id."""
    return min(items, key=lambda i: (_known(latency_ms(i)), -_accuracy(i), i.variant_id))


def most_accurate(items: Iterable[R], latency_ms: Callable[[R], float | None]) -> R:
    """The highest accuracy (unknown last); ties to the lower ``latency_ms``, then by id."""
    return min(items, key=lambda i: (-_accuracy(i), _known(latency_ms(i)), i.variant_id))


def _known(ms: float | None) -> float:
    return ms if ms is not None else math.inf


def _accuracy(item: Ranked) -> float:
    return item.accuracy if item.accuracy is not None else -math.inf
