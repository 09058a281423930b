"""The serving process's CPU priority: engine calls before other processes' batch work.

On a board shared with other work (a planner, a recorder, a build), a busy process at the
default priority takes the cores in time slices of a few milliseconds; an engine call the
scheduler preempts for one such slice goes that much over a millisecond budget, whatever
the variant. In the learning bench's oracle sweeps (every Fashion variant pinned, 2 cores,
two busy processes at nice 0, 50 requests/s) 4-8% of the calls of every variant took 5-6
ms at nice 0; with the server at nice -10, the p99 fell to 1.0-1.9 ms and 0.8-4.3% went
over a 1.35 ms budget (bench/RESULTS.md). So `edge-service serve` runs at
``serve_nice`` (EDGE_SERVE_NICE, -10 by default) where it may: as root, with
CAP_SYS_NICE, or under an RLIMIT_NICE that allows it (systemd ``Nice=`` or
``LimitNICE=``, docker's ``--ulimit nice=30``). Where it may not, it serves at the
priority it was started with and says so once.

Linux keeps a nice value per thread and a new thread takes its creator's: set on every
thread of the process before the server starts any (the pools numerical libraries start
at import are set one by one), it holds for every serving thread (the event loop, the
batcher's worker, ONNX Runtime's intra-op threads); the idle loader lowers its own to 19,
and gives it back to this value (`process_nice`) when it closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from edge_service.runtime.idle_loader import process_nice, thread_ids

log = logging.getLogger(__name__)


def set_serving_priority(nice: int) -> str:
    """Run every thread of the process, and every thread started from now on, at
    ``nice``; returns what was done, for the log. Changes nothing where it is not
    permitted (the calling thread is set first)."""
    if not hasattr(os, "setpriority"):
        return "no CPU priority on this platform: serving at the default"
    before = process_nice()
    if nice == before:
        return f"serving at nice {nice}"
    try:
        for tid in _threads():
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.warning(
            "serving at nice %d, not %d (%s): other processes' work can preempt engine calls. "
            "Allow it with root, CAP_SYS_NICE, systemd Nice=%d, or docker --ulimit nice=%d; "
            "EDGE_SERVE_NICE=%d keeps this priority without this warning",
            before, nice, exc.strerror or exc, nice, 20 - nice, before,
        )  # fmt: skip
        return f"serving at nice {before} (nice {nice} not permitted)"
    return f"serving at nice {nice} (was {before})"


def _threads() -> list[int]:
    """This process's threads: the calling one first (the rest are the pools numerical
    libraries start at import, e.g. OpenBLAS's), each to be set on its own."""
    me = threading.get_native_id()
    return [me, *(t for t in thread_ids() if t != me)]
