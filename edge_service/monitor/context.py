"""The board's state at one instant, as every monitor source reports it.

A `Context` is a frozen value. It round-trips through JSON (`to_dict` / `from_dict`) because
context traces are JSONL files of `to_dict()` lines (see the trace contract in DESIGN.md):
fields this version does not know are kept in `extra` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_service.errors import MonitorError

_REQUIRED = ("t", "source", "cpu_online", "cpu_load", "mem_available_mb", "mem_total_mb")

# Rails that measure a Jetson module's whole input (see `Context.power_total_mw`).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")

# A field parser: (field name, raw JSON value) -> typed value, or MonitorError naming the field.
_Parser = Callable[[str, Any], object]


@dataclass(frozen=True)
class PowerMode:
    """An nvpmodel power mode: its numeric id and its name (e.g. ``0``, ``"MAXN"``)."""

    id: int
    name: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"id": ..., "name": ...}``."""
        return {"id": self.id, "name": self.name}

    @classmethod
    def from_dict(cls, d: object) -> PowerMode:
        """Parse ``{"id": int, "name": str}``; anything else raises MonitorError."""
        if not isinstance(d, Mapping):
            raise MonitorError(f"power_mode must be an object with id and name, got {d!r}")
        mode_id, name = d.get("id"), d.get("name")
        if isinstance(mode_id, bool) or not isinstance(mode_id, int) or not isinstance(name, str):
            raise MonitorError(f"power_mode needs an integer id and a string name, got {d!r}")
        return cls(id=mode_id, name=name)


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a monitor source saw at time `t` (seconds since the epoch, `time.time()`).

    Optional readings a source cannot take are None (or empty for the mappings). The
    mapping fields are private copies typed read-only; they are left out of the hash so a
    Context stays hashable, and compared by value so JSON round-trips compare equal.
    """

    t: float
    source: str
    device: str | None = None
    power_mode: PowerMode | None = None
    gpu_freq_hz: int | None = None
    gpu_max_freq_hz: int | None = None
    gpu_load: float | None = None
    cpu_online: int
    cpu_freqs_hz: tuple[int, ...] = ()
    cpu_load: float
    mem_available_mb: float
    mem_total_mb: float
    temps_c: Mapping[str, float] = field(default_factory=dict, hash=False)
    throttled: bool | None = None
    power_mw: Mapping[str, float] = field(default_factory=dict, hash=False)
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Copy the mappings so a caller mutating its dict later cannot change this value.
        for name in ("temps_c", "power_mw", "extra"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        object.__setattr__(self, "cpu_freqs_hz", tuple(self.cpu_freqs_hz))
        _check_ranges(self)

    @property
    def mem_pressure(self) -> float:
        """Fraction of memory in use, ``1 - available / total``, clamped to 0..1."""
        return min(1.0, max(0.0, 1.0 - self.mem_available_mb / self.mem_total_mb))

    @property
    def power_total_mw(self) -> float | None:
        """The board's power in mW: its input rail where one is read, else the sum of the rails.

        ``VDD_IN`` (Xavier NX, Orin NX / Nano) and ``POM_5V_IN`` (Nano, TX1) measure the whole
        module's input, and the other rails are parts of it, so adding them would count the
        CPU and GPU twice; boards without an input rail (AGX Orin) report disjoint rails.
        None when no rail was read.
        """
        if not self.power_mw:
            return None
        for rail in INPUT_RAILS:
            if rail in self.power_mw:
                return float(self.power_mw[rail])
        return float(sum(self.power_mw.values()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: one trace line. Fields in `extra` come back at the top level."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in _fields() if f.name != "extra"}
        d["power_mode"] = self.power_mode.to_dict() if self.power_mode else None
        d["cpu_freqs_hz"] = list(self.cpu_freqs_hz)
        for name in ("temps_c", "power_mw"):
            d[name] = dict(d[name])
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Context:
        """Parse one trace line's dict; a missing or mistyped field raises MonitorError naming it.

        Missing optional fields become None (or empty); unknown fields go into `extra`.
        """
        if not isinstance(d, Mapping):
            raise MonitorError(f"a context must be a JSON object, got {type(d).__name__}")
        for name in _REQUIRED:
            if d.get(name) is None:
                raise MonitorError(f"context field {name!r} is missing or null; it is required")
        known = {f.name for f in _fields()}
        kwargs: dict[str, Any] = {name: _PARSERS[name](name, d[name]) for name in known & d.keys()}
        kwargs["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs)

    def summary(self) -> str:
        """A one-line description for logs, e.g. ``linux cpu 4x 35% mem 1200/3900MB free``."""
        parts = [self.source]
        if self.power_mode is not None:
            parts.append(f"mode {self.power_mode.id}:{self.power_mode.name}")
        parts.append(f"cpu {self.cpu_online}x {self.cpu_load:.0%}")
        if self.gpu_freq_hz is not None:
            load = f" {self.gpu_load:.0%}" if self.gpu_load is not None else ""
            parts.append(f"gpu {self.gpu_freq_hz / 1e6:.0f}MHz{load}")
        parts.append(f"mem {self.mem_available_mb:.0f}/{self.mem_total_mb:.0f}MB free")
        if self.temps_c:
            parts.append(f"temp max {max(self.temps_c.values()):.1f}C")
        if self.power_total_mw is not None:
            parts.append(f"power {self.power_total_mw / 1000:.2f}W")
        if self.throttled:
            parts.append("THROTTLED")
        return " ".join(parts)


def _fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Context)


def _check_ranges(ctx: Context) -> None:
    """Refuse values no source can mean (a 0-100 percentage where 0-1 is expected, ...)."""
    clash = sorted(ctx.extra.keys() & {f.name for f in _fields()})
    if clash:
        raise MonitorError(f"Context.extra must not hold Context fields, got {clash}")
    if ctx.cpu_online < 1:
        raise MonitorError(f"context field 'cpu_online' must be >= 1, got {ctx.cpu_online}")
    if not 0.0 <= ctx.cpu_load <= 1.0:
        raise MonitorError(f"context field 'cpu_load' must be a fraction 0-1, got {ctx.cpu_load}")
    if ctx.gpu_load is not None and not 0.0 <= ctx.gpu_load <= 1.0:
        raise MonitorError(f"context field 'gpu_load' must be a fraction 0-1, got {ctx.gpu_load}")
    if not ctx.mem_total_mb > 0:
        raise MonitorError(f"context field 'mem_total_mb' must be > 0, got {ctx.mem_total_mb}")
    if not ctx.mem_available_mb >= 0:
        raise MonitorError(
            f"context field 'mem_available_mb' must be >= 0, got {ctx.mem_available_mb}"
        )


def _bad(name: str, want: str, value: object) -> MonitorError:
    return MonitorError(f"context field {name!r} must be {want}, got {value!r}")


def _float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _bad(name, "a number", value)
    return float(value)


def _int(name: str, value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, "an integer", value)
    return value


def _str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(name, "a string", value)
    return value


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _bad(name, "true or false", value)
    return value


def _int_tuple(name: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise _bad(name, "a list of integers", value)
    return tuple(_int(name, v) for v in value)


def _float_map(name: str, value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise _bad(name, "an object of numbers", value)
    return {_str(name, k): _float(name, v) for k, v in value.items()}


def _power_mode(name: str, value: object) -> PowerMode:
    return PowerMode.from_dict(value)


def _optional(parse: _Parser, empty: object = None) -> _Parser:
    """Wrap a parser so that a null value becomes `empty` (None, or ``()`` / ``{}``)."""

    def parse_optional(name: str, value: object) -> object:
        return empty if value is None else parse(name, value)

    return parse_optional


_PARSERS: dict[str, _Parser] = {
    "t": _float,
    "source": _str,
    "device": _optional(_str),
    "power_mode": _optional(_power_mode),
    "gpu_freq_hz": _optional(_int),
    "gpu_max_freq_hz": _optional(_int),
    "gpu_load": _optional(_float),
    "cpu_online": _int,
    "cpu_freqs_hz": _optional(_int_tuple, ()),
    "cpu_load": _float,
    "mem_available_mb": _float,
    "mem_total_mb": _float,
    "temps_c": _optional(_float_map, {}),
    "throttled": _optional(_bool),
    "power_mw": _optional(_float_map, {}),
}
