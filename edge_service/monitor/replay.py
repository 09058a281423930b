"""Context traces: JSONL files of `Context.to_dict()` lines, recorded and replayed.

`TraceRecorder` appends what a live source saw; `read_trace` reads a trace back;
`ReplaySource` plays one as a monitor source, in (scaled) real time, so the controller and
the simulator can be driven by a board's recorded afternoon on any machine.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TextIO, TypeAlias

from edge_service.errors import MonitorError
from edge_service.monitor.context import Context
from edge_service.monitor.source import SourceBase

logger = logging.getLogger(__name__)

PathLike: TypeAlias = str | os.PathLike[str]


def read_trace(path: PathLike) -> list[Context]:
    """Every Context in the JSONL trace at `path`; blank lines are skipped.

    A line that is not JSON or not a valid Context raises MonitorError naming the file,
    the line number and the field; except a last line with no newline that does not
    parse, which is what a recorder killed mid-write leaves: it is skipped with a warning.
    """
    trace = Path(path)
    try:
        with trace.open(encoding="utf-8") as lines:
            return [ctx for n, line in enumerate(lines, 1) if (ctx := _read_line(trace, n, line))]
    except OSError as exc:
        raise MonitorError(
            f"cannot read context trace {trace}: {exc.strerror or exc}; "
            "record one with `edge-service monitor --record PATH`"
        ) from exc


def _read_line(trace: Path, lineno: int, line: str) -> Context | None:
    """The line's Context; None for a blank line or a torn last one (no newline)."""
    if not line.strip():
        return None
    try:
        return _parse_line(trace, lineno, line)
    except MonitorError as exc:
        if line.endswith("\n"):
            raise
        logger.warning("%s; skipped: the recording was cut short mid-line", exc.message)
        return None


def _parse_line(trace: Path, lineno: int, line: str) -> Context:
    try:
        return Context.from_dict(json.loads(line))
    except json.JSONDecodeError as exc:
        raise MonitorError(f"{trace} line {lineno}: not valid JSON ({exc.msg})") from exc
    except MonitorError as exc:
        raise MonitorError(f"{trace} line {lineno}: {exc.message}") from exc


class ReplaySource(SourceBase):
    """Plays a recorded trace back as a monitor source.

    The first `sample()` starts the playback clock. Each `sample()` returns the last trace
    entry whose time (relative to the first entry) is at or before the elapsed time times
    `speed`, which is what a live monitor would have reported then. Past the end it keeps
    returning the last entry, or with `loop` starts over (the last entry is held for one
    mean sampling interval before the first comes back). The returned Context keeps every
    recorded field except `t`, which is set to now (`wall_clock()`), so downstream code
    that ages contexts by `t` sees fresh ones.

    `path_or_contexts` is a JSONL trace path or the contexts themselves; `clock` (monotonic
    seconds) and `wall_clock` (epoch seconds) are injectable so tests are deterministic.
    """

    name: str = "replay"

    def __init__(
        self,
        path_or_contexts: PathLike | Sequence[Context],
        speed: float = 1.0,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._contexts = _load(path_or_contexts)
        if not (math.isfinite(speed) and speed > 0):
            raise MonitorError(f"replay speed must be a positive number, got {speed}")
        self._offsets = _offsets(self._contexts)
        self._period = _loop_period(self._offsets)
        self._speed, self._loop = speed, loop
        self._clock, self._wall_clock = clock, wall_clock
        self._start: float | None = None

    @property
    def finished(self) -> bool:
        """True once a non-looping playback has reached the last entry."""
        return not self._loop and self._start is not None and self._position() >= self._end()

    def sample(self) -> Context:
        """The trace entry for the current playback time, with `t` set to now."""
        if self._start is None:
            self._start = self._clock()
        ctx = self._contexts[self._index(self._position())]
        return dataclasses.replace(ctx, t=self._wall_clock())

    def close(self) -> None:
        """Nothing to release; present for the MonitorSource protocol."""

    def _position(self) -> float:
        assert self._start is not None
        return (self._clock() - self._start) * self._speed

    def _end(self) -> float:
        return self._offsets[-1]

    def _index(self, position: float) -> int:
        if self._loop and self._period > 0:
            position %= self._period
        return max(0, bisect.bisect_right(self._offsets, position) - 1)


def _load(path_or_contexts: PathLike | Sequence[Context]) -> list[Context]:
    if isinstance(path_or_contexts, (str, os.PathLike)):
        contexts = read_trace(path_or_contexts)
    else:
        contexts = list(path_or_contexts)
    if not contexts:
        raise MonitorError("cannot replay an empty context trace; record one first")
    return contexts


def _offsets(contexts: Sequence[Context]) -> list[float]:
    """Each entry's time after the first; refuses a trace that goes back in time."""
    offsets = [c.t - contexts[0].t for c in contexts]
    for i in range(1, len(offsets)):
        if offsets[i] < offsets[i - 1]:
            raise MonitorError(
                f"context trace entry {i + 1} (t={contexts[i].t}) is earlier than the one "
                "before it; traces must be in time order"
            )
    return offsets


def _loop_period(offsets: Sequence[float]) -> float:
    """Trace duration plus one mean interval, so the last entry gets its share of time."""
    if len(offsets) < 2:
        return 0.0
    return offsets[-1] * len(offsets) / (len(offsets) - 1)


class TraceRecorder:
    """Appends contexts to a JSONL trace, one `to_dict()` line each, flushed as written.

    A context manager; the file (and its folder) is created if missing and appended to if
    present.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Kept open across writes and closed by close() / __exit__.
            self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise MonitorError(f"cannot write context trace {self.path}: {exc}") from exc

    def write(self, ctx: Context) -> None:
        """Append one context and flush, so a crash loses at most the line being written."""
        if self._file is None:
            raise MonitorError(f"trace recorder for {self.path} is closed")
        self._file.write(json.dumps(ctx.to_dict()) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file; further writes raise MonitorError. Safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
