"""The build's progress, as the engine repository shows it: ``<family>/build-progress.json``.

The build writes it (atomically) at every step; the server reads it for ``/v1/status``
and the dashboard, and the CLI for its progress bar. It is a report, never an input: a
missing or unreadable file means "no build has said anything", not an error.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edge_service.fsutil import atomic_write_text

log = logging.getLogger(__name__)
PROGRESS_NAME = "build-progress.json"
Stage = Literal["first", "fit", "networks", "profile", "complete", "failed"]
STAGES: tuple[str, ...] = ("first", "fit", "networks", "profile", "complete", "failed")


@dataclass(frozen=True)
class BuildProgress:
    """Where a family's build stands.

    ``stage``: ``first`` (the first servable engine), ``fit`` (profiling this device and
    choosing its front), ``networks`` (building the front, ``done`` of ``total``),
    ``profile`` (per-power-mode profiles), ``complete`` or ``failed`` (``message`` says
    why). ``servable`` counts the engines the catalog offers so far.
    """

    stage: str
    done: int = 0
    total: int = 0
    current: str | None = None
    message: str = ""
    device: str | None = None
    servable: int = 0
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    @property
    def finished(self) -> bool:
        return self.stage in ("complete", "failed")

    @property
    def fraction(self) -> float:
        """0..1 over the whole build (the front's networks weigh most)."""
        weights = {"first": 0.0, "fit": 0.1, "networks": 0.25, "profile": 0.85}
        if self.finished:
            return 1.0
        lo = weights.get(self.stage, 0.0)
        hi = {"first": 0.1, "fit": 0.25, "networks": 0.85, "profile": 1.0}.get(self.stage, 1.0)
        part = self.done / self.total if self.total else 0.0
        return round(lo + (hi - lo) * part, 4)

    def step(self, **changes: Any) -> BuildProgress:
        """A copy with ``changes`` and a fresh ``updated_at``."""
        return replace(self, updated_at=time.time(), **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction, "finished": self.finished}


def progress_path(family_dir: Path) -> Path:
    return family_dir / PROGRESS_NAME


def write_progress(family_dir: Path, progress: BuildProgress) -> None:
    """Replace the progress file (atomically: a reader sees the old one or the new one)."""
    atomic_write_text(progress_path(family_dir), json.dumps(progress.to_dict(), indent=1) + "\n")


def read_progress(family_dir: Path) -> BuildProgress | None:
    """The last progress a build wrote, or None when there is none that can be read."""
    try:
        data = json.loads(progress_path(family_dir).read_text(encoding="utf-8"))
        known = {k: data[k] for k in BuildProgress.__dataclass_fields__ if k in data}
        progress = BuildProgress(**known)
    except (OSError, ValueError, TypeError):
        return None
    return progress if progress.stage in STAGES else None


class ProgressFile:
    """One writer of a family's progress: each ``update`` steps the state, writes it (a
    failed write is logged, never fatal: it is a report) and tells ``listener``."""

    def __init__(
        self,
        family_dir: Path,
        state: BuildProgress,
        listener: Callable[[BuildProgress], None] | None = None,
    ) -> None:
        self._dir, self.state, self._listener = family_dir, state, listener

    @classmethod
    def resume(cls, family_dir: Path, default: BuildProgress) -> ProgressFile:
        """Carry on from what the file says (another process's stage), else ``default``."""
        return cls(family_dir, read_progress(family_dir) or default)

    def update(self, **changes: Any) -> None:
        self.state = self.state.step(**changes)
        try:
            write_progress(self._dir, self.state)
        except OSError as exc:
            log.warning("cannot write build progress: %s", exc)
        if self._listener is not None:
            self._listener(self.state)
