"""Shared by the bench scripts: write one named section of bench/RESULTS.md in place."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime as ort

from edge_service.device import current
from edge_service.fsutil import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is rewritten by the script that produced it.\n"


def machine_line() -> str:
    """Where and when: the device's fingerprint (name and id), cores, Python and ONNX
    Runtime versions, UTC date."""
    fp = current()
    return (
        f"{fp.name} (device id `{fp.id}`), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
    )


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n- command: `{command_line()}`\n"
        f"- machine: {machine_line()}\n\n{body.strip()}\n<!-- END {name} -->"
    )
    pattern = re.compile(
        rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + block + "\n")
    )
    atomic_write_text(RESULTS, text)
