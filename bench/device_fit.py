"""Fitting the family to this device: time from a fresh clone to ready and to a complete
family, what the front holds, the gate, and the fastest servable variant against base FP32,
for the device front and for the shipped one.

    python bench/device_fit.py            # a fresh clone of HEAD, `make run` in it, twice
    python bench/device_fit.py --no-clone # only the fronts, built into temp folders

Writes the "device_fit" section of bench/RESULTS.md. Every ratio is measured side by side
(interleaved rounds, batch 1, one thread) on this machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from results import write_section

from edge_service.device import current
from edge_service.profile.compare import compare_engines
from edge_service.repository import Catalog, load_catalog, verified_artifact_path

REPO = Path(__file__).resolve().parents[1]
PORT = 8097


def _wait(pred, timeout: float) -> float | None:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if pred():
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return None


def _ready() -> bool:
    return httpx.get(f"http://127.0.0.1:{PORT}/v2/health/ready", timeout=5).status_code == 200


def _background_done() -> bool:
    st = httpx.get(f"http://127.0.0.1:{PORT}/v1/status", timeout=10).json()
    return st["build"]["background"] in ("done", "failed")


def _make_run(clone: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_PORT": str(PORT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def fresh_clone(tmp: Path) -> tuple[dict[str, float], Path]:
    """`make run` in a fresh clone (venv and all): seconds to ready, to a complete family,
    and, on a second `make run`, to ready with the whole family."""
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    log = tmp / "make-run.log"
    proc = _make_run(clone, log)
    try:
        installed = _wait((clone / ".venv" / ".run-installed").exists, 1800) or 0.0
        ready = installed + (_wait(_ready, 1800) or float("nan"))
        complete = ready + (_wait(_background_done, 3600) or float("nan"))
    finally:
        _stop(proc)
    proc = _make_run(clone, log)
    try:
        again = _wait(_ready, 600) or float("nan")
        n = len(httpx.get(f"http://127.0.0.1:{PORT}/v1/variants", timeout=10).json()["variants"])
    finally:
        _stop(proc)
    times = {"install_s": installed, "ready_s": ready, "complete_s": complete, "again_s": again}
    times["again_variants"] = float(n)
    return times, clone / "engines" / "fashion"


def build(engines: Path, *args: str) -> tuple[Catalog, float]:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "edge_service", "build", "--engines-dir", str(engines), *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return load_catalog(engines / "fashion"), time.perf_counter() - started


def front_report(name: str, family: Path, catalog: Catalog) -> tuple[str, dict[str, float]]:
    device = current().id
    servable = [v for v in catalog.variants if v.status == "servable"]
    acc = {v.id: v.accuracy.value for v in catalog.variants if v.accuracy}

    def p50(v):  # type: ignore[no-untyped-def]
        return v.profiles[device]["default"].latency_ms(1)

    fastest = min(servable, key=p50)
    pair = [v for v in catalog.variants if v.id in ("base@fp32", fastest.id)]
    items = [(v.id, verified_artifact_path(family, v.artifact), v.precision) for v in pair]
    cmp = compare_engines(items, batch=1, threads=1, rounds=5, runs=300)
    speedup = cmp.p50_ms["base@fp32"] / cmp.p50_ms[fastest.id]
    loss = (acc["base@fp32"] - acc[fastest.id]) * 100
    int8 = [v for v in servable if v.precision == "int8"]
    worst = max((v.precision_drop or 0.0 for v in int8), default=0.0) * 100
    rows = "\n".join(
        f"| {v.id} | {acc[v.id]:.4f} | {p50(v):.4f} | {v.status} | {v.status_reason or ''} |"
        for v in sorted(catalog.variants, key=p50)
    )
    text = (
        f"**{name}**: {len(catalog.variants)} engines, {len(servable)} servable "
        f"({len(int8)} INT8), front `{catalog.build.get('front', {}).get('mode')}`.\n"
        f"- fastest servable `{fastest.id}`: **{speedup:.2f}x** faster than base@fp32 side "
        f"by side (p50 {cmp.p50_ms[fastest.id]:.4f} vs {cmp.p50_ms['base@fp32']:.4f} ms, "
        f"1 thread, 5 x 300 interleaved), **{loss:.2f} points** below it on the 10k test set\n"
        f"- largest INT8 drop among the servable engines: {worst:.2f} points\n\n"
        "| engine | top-1 | p50 ms (catalog) | status | reason |\n|---|---|---|---|---|\n" + rows
    )
    return text, {"speedup": speedup, "loss": loss, "worst_int8": worst}


def int8_here(family: Path, catalog: Catalog) -> str:
    ids = {v.id for v in catalog.variants}
    if "base@int8" not in ids:
        return "base@int8 was not built (the front did not keep the base at INT8)."
    pair = [v for v in catalog.variants if v.variant_spec.family_key == "base"]
    items = [(v.id, verified_artifact_path(family, v.artifact), v.precision) for v in pair]
    cmp = compare_engines(items, batch=1, threads=1, rounds=5, runs=300)
    acc = {v.id: v.accuracy.value for v in pair if v.accuracy}
    return (
        f"base INT8 vs FP32 on this CPU: {cmp.p50_ms['base@int8']:.4f} vs "
        f"{cmp.p50_ms['base@fp32']:.4f} ms p50 "
        f"({cmp.p50_ms['base@fp32'] / cmp.p50_ms['base@int8']:.2f}x), top-1 "
        f"{acc['base@int8']:.4f} vs {acc['base@fp32']:.4f}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-clone", action="store_true")
    args = parser.parse_args()
    fp = current()
    parts = [f"Device `{fp.id}`: {fp.name}.\n"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.no_clone:
            times, family = fresh_clone(tmp)
            parts.append(
                "Fresh clone of HEAD, `make run` (creates .venv, installs, builds, serves):\n"
                f"- venv installed after {times['install_s']:.0f} s\n"
                f"- `/v2/health/ready` after **{times['ready_s']:.0f} s** (base@fp32 served)\n"
                f"- family complete (front fitted, built, gated, profiled in 3 modes) after "
                f"**{times['complete_s']:.0f} s**\n"
                f"- second `make run`: ready after **{times['again_s']:.0f} s** with "
                f"{times['again_variants']:.0f} engines\n"
            )
            catalog = load_catalog(family)
        else:
            family = tmp / "device" / "fashion"
            catalog, seconds = build(tmp / "device")
            parts.append(f"`edge-service build` (device front) from scratch: {seconds:.0f} s\n")
        text, _ = front_report("device front", family, catalog)
        parts += [text, "", int8_here(family, catalog), ""]
        shipped, seconds = build(tmp / "shipped", "--front", "shipped")
        text, _ = front_report(
            "shipped front (evolve's, gated here)", tmp / "shipped" / "fashion", shipped
        )
        parts += [f"`edge-service build --front shipped`: {seconds:.0f} s\n", text]
    body = "\n".join(parts)
    print(body)
    # One section per device, so the VNNI and the AVX2-only runs stand side by side.
    write_section(f"device_fit-{fp.id}", f"Fitting the family to the device: {fp.id}", body)


if __name__ == "__main__":
    main()
