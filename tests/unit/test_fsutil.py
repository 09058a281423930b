"""File helpers: the build lock and the sweep of temp files that killed writers leave."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_service.errors import ConflictError
from edge_service.fsutil import atomic_write_text, exclusive_lock, remove_temp_files, waiting_lock


def test_second_holder_is_refused_with_the_first_ones_pid_when_the_lock_is_taken(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "fam" / ".build.lock"
    refused = pytest.raises(ConflictError, match=r"a build of fam is already running \(pid \d+")
    with exclusive_lock(lock, "a build of fam"), refused, exclusive_lock(lock, "a build of fam"):
        pass
    with exclusive_lock(lock, "a build of fam"):  # released on exit
        pass


def test_lock_is_free_at_once_when_its_holder_was_killed_with_sigkill(tmp_path: Path) -> None:
    lock = tmp_path / ".build.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(ConflictError), exclusive_lock(lock, "a build"):
        pass
    holder.kill()
    holder.wait(10)
    with exclusive_lock(lock, "a build"):
        pass


def test_sweep_removes_interrupted_writes_only_when_a_build_starts(tmp_path: Path) -> None:
    net = tmp_path / "base"
    atomic_write_text(net / "fp32.onnx", "whole")
    leftovers = [
        net / ".fp32.onnx.k2j3h4ab.tmp",  # atomic_write_with's temp
        net / ".int8.minmax.onnx.abcd_123.pre.onnx",  # calibration's files beside it
        net / ".int8.onnx.abcdefgh.ranges.json",
    ]
    kept = [net / "fp32.onnx", tmp_path / ".catalog.json.abcdefgh.tmp", tmp_path / ".build.lock"]
    for path in leftovers + kept[1:]:
        path.write_text("partial")
    catalog_temp = lambda name: name.startswith(".catalog.json.")  # noqa: E731
    assert sorted(remove_temp_files(tmp_path, keep=catalog_temp)) == sorted(leftovers)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in leftovers)
    assert remove_temp_files(tmp_path / "missing") == []


def test_waiting_lock_waits_for_its_holder_then_is_taken(tmp_path: Path) -> None:
    lock, order = tmp_path / ".catalog.lock", []
    held = threading.Event()

    def holder() -> None:
        with waiting_lock(lock):
            held.set()
            time.sleep(0.3)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    with waiting_lock(lock):
        order.append("waiter in")
    thread.join(10)
    assert order == ["holder done", "waiter in"]
