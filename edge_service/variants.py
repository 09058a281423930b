"""Variants are data: a frozen spec whose id says what it is, with a JSON round-trip.

An id reads stage by stage, then resolution (when not the family's native one), then
precision: ``base@fp32``, ``p50-lr25-id@int8``, ``p50-id-dw-r24@int8``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from edge_service.errors import CatalogError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
IDENTITY = "id"
_CHOICE = re.compile(r"^[a-z][a-z0-9]*$")


@dataclass(frozen=True)
class VariantSpec:
    """One variant: a branch choice per stage, a precision and an input resolution."""

    stages: tuple[str, ...]
    precision: str = "fp32"
    input_size: int = 28
    native_size: int = 28
    source: str = "base"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise CatalogError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if not self.stages or not all(_CHOICE.match(s) for s in self.stages):
            raise CatalogError(f"stage choices {self.stages!r} must be short lowercase names")
        if self.input_size < 8 or self.native_size < 8:
            raise CatalogError("input_size and native_size must be >= 8 pixels")

    @property
    def id(self) -> str:
        """Self-describing id, e.g. ``base@int8`` or ``p50-lr25-id-r24@fp16``."""
        body = "base" if all(s == IDENTITY for s in self.stages) else "-".join(self.stages)
        if self.input_size != self.native_size:
            body += f"-r{self.input_size}"
        return f"{body}@{self.precision}"

    @property
    def family_key(self) -> str:
        """The id without precision: variants that share one network."""
        return self.id.split("@", 1)[0]

    def with_precision(self, precision: str) -> VariantSpec:
        """The same network at another precision."""
        return VariantSpec(self.stages, precision, self.input_size, self.native_size, self.source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the catalog stores)."""
        return {
            "id": self.id,
            "stages": list(self.stages),
            "precision": self.precision,
            "input_size": self.input_size,
            "native_size": self.native_size,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantSpec:
        """Inverse of :meth:`to_dict`; a stored id that disagrees with the fields is refused."""
        try:
            spec = cls(
                stages=tuple(data["stages"]),
                precision=str(data.get("precision", "fp32")),
                input_size=int(data.get("input_size", 28)),
                native_size=int(data.get("native_size", 28)),
                source=str(data.get("source", "base")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"variant spec {data!r} is malformed: {exc}") from exc
        if "id" in data and data["id"] != spec.id:
            raise CatalogError(f"variant id {data['id']!r} does not match its spec ({spec.id!r})")
        return spec
