"""What a simulation reports: per-strategy scores, and what the profiles could not predict.

A context is *unpredictable* for a strategy when the estimate of the variant it chose
there is not ``measured`` (no profile of that variant on the profiles' device in that power
mode: it was scaled from another mode or device, or is unmeasured). Its predicted latency
is a guess, so scoring it would make a strategy look as good as the guess: the scores are
computed over the predictable contexts only, and are None when there are none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# What the notes tell the user to run; the `profile` verb's real options.
PROFILE_HINT = "edge-service profile --modes {mode_id}"
PROFILE_HINT_NO_ID = "edge-service profile"


@dataclass(frozen=True)
class StrategyResult:
    """How one strategy did over the trace.

    ``slo_violation_rate`` (share of scored contexts whose chosen variant's p99 exceeds the
    budget), ``mean_accuracy`` and ``mean_energy_mj`` are over the ``scored_contexts``
    (the predictable ones), None when none is. ``unpredictable_rate`` is the share of all
    contexts whose chosen estimate was not measured. ``max_extrapolation`` is the scale
    factor furthest from 1 (largest |log|) applied to a chosen estimate: 1.0 when all were
    measured, None when a chosen variant was unmeasured (an infinite guess). ``switches``
    and ``timeline`` cover the whole trace.
    """

    name: str
    slo_violation_rate: float | None
    mean_accuracy: float | None
    mean_energy_mj: float | None
    energy_estimated: bool
    switches: int
    unpredictable_rate: float
    scored_contexts: int
    max_extrapolation: float | None
    timeline: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict (no inf or nan: unknowns are None)."""
        d = asdict(self)
        d["timeline"] = list(self.timeline)
        return d

    def cells(self, estimated: str = "est.") -> tuple[str, ...]:
        """Table cells: name, SLO violations, mean top-1, energy, switches, unpredictable;
        "-" for a score with no predictable context."""
        energy = "-"
        if self.mean_energy_mj is not None:
            energy = f"{self.mean_energy_mj:.3f}" + (
                f" ({estimated})" if self.energy_estimated else ""
            )
        acc = "-" if self.mean_accuracy is None else f"{self.mean_accuracy:.4f}"
        slo = "-" if self.slo_violation_rate is None else f"{self.slo_violation_rate:.1%}"
        return (self.name, slo, acc, energy, str(self.switches), f"{self.unpredictable_rate:.1%}")


@dataclass(frozen=True)
class ModeGap:
    """A power mode of the trace whose profiles on the device miss some (or all) variants."""

    mode: str
    mode_id: int | None  # None when the trace reports no power mode (``default``)
    contexts: int  # contexts of the trace in this mode
    missing: tuple[str, ...]  # the controller's targets with no profile here

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict."""
        d = asdict(self)
        d["missing"] = list(self.missing)
        return d


@dataclass(frozen=True)
class SimulationReport:
    """Every strategy over one trace, and how much of the trace the profiles cover.

    ``device`` is the device id whose profiles were used; ``unmeasured_context_rate`` the
    share of contexts where no variant's estimate was measured (the board in a state never
    profiled on that device); ``unprofiled_modes`` the trace's power modes with no profile
    on the device at all, ``partly_profiled_modes`` those profiled for only some variants;
    ``profiled_devices`` every device id the catalog has profiles for.
    """

    device: str
    contexts: int
    unmeasured_context_rate: float
    unprofiled_modes: tuple[ModeGap, ...]
    partly_profiled_modes: tuple[ModeGap, ...]
    profiled_devices: tuple[str, ...]
    strategies: tuple[StrategyResult, ...]

    def strategy(self, name: str) -> StrategyResult:
        """The result of the strategy called ``name``; KeyError for an unknown name."""
        for result in self.strategies:
            if result.name == name:
                return result
        raise KeyError(f"no strategy {name!r}; there are {[r.name for r in self.strategies]}")

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict with the notes (`notes`) under ``"notes"``."""
        return {
            "device": self.device,
            "contexts": self.contexts,
            "unmeasured_context_rate": self.unmeasured_context_rate,
            "unprofiled_modes": [g.to_dict() for g in self.unprofiled_modes],
            "partly_profiled_modes": [g.to_dict() for g in self.partly_profiled_modes],
            "profiled_devices": list(self.profiled_devices),
            "strategies": [r.to_dict() for r in self.strategies],
            "notes": notes(self),
        }


def notes(report: SimulationReport) -> list[str]:
    """One line per reason some contexts could not be predicted, with what to do; empty
    when every strategy's every context was predictable."""
    lines = [_unprofiled_note(report, gap) for gap in report.unprofiled_modes]
    gap_contexts = sum(g.contexts for g in report.unprofiled_modes)
    if any(_unpredictable(r, report.contexts) > gap_contexts for r in report.strategies):
        lines += [_partial_note(report, gap) for gap in report.partly_profiled_modes]
    return lines


def _unpredictable(result: StrategyResult, contexts: int) -> int:
    return contexts - result.scored_contexts


def _unprofiled_note(report: SimulationReport, gap: ModeGap) -> str:
    return (
        f"power mode {gap.mode!r} has no profile on device {report.device}: {gap.contexts} "
        f"of {report.contexts} contexts unpredictable; their scores are left out. Profile "
        f"the device in that mode (run on it: {_profile_hint(gap)}) or pass "
        f"--profiles-device <the board's id>{_known_devices(report)}"
    )


def _partial_note(report: SimulationReport, gap: ModeGap) -> str:
    return (
        f"power mode {gap.mode!r} ({gap.contexts} contexts) is profiled on device "
        f"{report.device} for only some variants (missing: {', '.join(gap.missing)}): where "
        f"a strategy chose one of those, the context is unpredictable and left out of its "
        f"scores. Profile them (run on the device: {_profile_hint(gap)}; it skips the pairs "
        f"already measured)"
    )


def _profile_hint(gap: ModeGap) -> str:
    if gap.mode_id is None:
        return PROFILE_HINT_NO_ID
    return PROFILE_HINT.format(mode_id=gap.mode_id)


def _known_devices(report: SimulationReport) -> str:
    others = [d for d in report.profiled_devices if d != report.device]
    return f" (the catalog has profiles for: {', '.join(others)})" if others else ""
