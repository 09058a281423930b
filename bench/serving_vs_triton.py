"""edge-service vs Triton 2.51 (nvidia-pytriton), side by side, same ONNX Runtime model.

    bash bench/setup_triton.sh                      # once: .venv-triton, perf_analyzer
    .venv/bin/python bench/serving_vs_triton.py     # both servers, writes RESULTS.md
    .venv/bin/python bench/serving_vs_triton.py --servers triton   # Triton only, no write

Starts Triton (bench/triton_server.py in .venv-triton: the variant's ONNX file in an
ONNX Runtime session with edge-service's session options, behind pytriton's Python
backend) and edge-service (``edge-service serve``), waits for both, then measures both
with the same load tool, Triton's perf_analyzer 2.51 (closed loop, KServe v2 HTTP with
the binary tensor extension, one real normalised Fashion-MNIST image per request). Every
(round, concurrency) runs the two servers back to back, in alternating order, and the
table gives the median over rounds. edge-service is pinned to one variant through the
URL (``-x base@fp32`` -> /v2/models/fashion/versions/base@fp32/infer) and Triton serves
that variant's ONNX file, so both run the same model.

edge-service's server-side overhead (server total minus engine time) comes from its
Prometheus histograms at GET /metrics, scraped before and after each run:
``edge_overhead_seconds`` when the server has it, else p50(``edge_request_seconds``) minus
p50(``edge_engine_seconds``) (marked as an estimate).

perf_analyzer reads GET /v2 first; when its ``extensions`` list "statistics" it also reads
/v2/models/{m}[/versions/{v}]/stats around every window and parses each entry's
``version`` as an integer (std::stoll): a non-numeric version such as ``base@fp32`` makes
it abort. So a server with variant-named versions must not list "statistics".

Raw outputs (perf_analyzer text and CSV, server logs, metrics deltas, summary.json) go
to bench/out/serving_vs_triton/. Both servers are stopped at the end, also on error or
SIGTERM. Exit status 0 when every criterion passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from results import write_section

log = logging.getLogger("serving_vs_triton")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "serving_vs_triton"
MAIN_VENV = ROOT / ".venv"
TRITON_VENV = ROOT / ".venv-triton"
MODEL = "fashion"
TRITON = "triton"
EDGE = "edge-service"


# --------------------------------------------------------------------------- helpers


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def cudart_dir() -> Path:
    """Where .venv-triton's nvidia-cuda-runtime-cu12 keeps libcudart.so.12 (perf_analyzer)."""
    hits = sorted(TRITON_VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    if not hits:
        raise SystemExit(f"{TRITON_VENV} is missing or incomplete: run bash bench/setup_triton.sh")
    return hits[0]


def perf_analyzer_env() -> dict[str, str]:
    env = dict(os.environ)
    libs = str(cudart_dir())
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
    return env


def triton_venv_version(package: str) -> str:
    out = subprocess.run(
        [
            str(TRITON_VENV / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({package!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def edge_version() -> str:
    """edge-service's version and the checkout's commit (``+dirty`` with local changes)."""
    import edge_service

    git = ["git", "-C", str(ROOT)]
    rev = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        [*git, "status", "--porcelain"], capture_output=True, text=True, check=False
    )
    commit = rev.stdout.strip() or "?"
    if dirty.stdout.strip():
        commit += "+dirty"
    return f"edge-service {edge_service.__version__} (git {commit})"


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    port: int
    version: str | None  # -x for perf_analyzer (edge-service pins a variant this way)
    ready_path: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.hostport}{path}"


@contextmanager
def running(
    server: Server, cmd: list[str], env: dict[str, str], timeout_s: float
) -> Iterator[Server]:
    """Start ``cmd`` in its own session, wait until ``server.ready_path`` answers 200, and
    stop it on exit (SIGTERM to the process, then SIGKILL to its process group)."""
    status, _ = http_get(server.url(server.ready_path), timeout=1.0)
    if status:
        raise SystemExit(f"port {server.port} already answers ({status}); stop that server first")
    server.log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting %s: %s", server.name, " ".join(cmd))
    with server.log_path.open("wb") as logf:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
    server.proc = proc
    try:
        wait_ready(server, timeout_s)
        yield server
    finally:
        stop(server)


def wait_ready(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    assert server.proc is not None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode} before it was ready; "
                f"log {server.log_path}:\n{tail(server.log_path)}"
            )
        status, _ = http_get(server.url(server.ready_path), timeout=2.0)
        if status == 200:
            log.info("%s ready on %s", server.name, server.hostport)
            return
        time.sleep(0.5)
    raise RuntimeError(
        f"{server.name} not ready after {timeout_s:.0f} s (GET {server.ready_path}); "
        f"log {server.log_path}:\n{tail(server.log_path)}"
    )


def stop(server: Server, grace_s: float = 40.0) -> None:
    proc = server.proc
    if proc is None:
        return
    if proc.poll() is None:
        log.info("stopping %s (pid %d)", server.name, proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s did not stop in %.0f s: killing its process group", server.name, grace_s
            )
    # Whatever is left of the session we started (e.g. tritonserver, backend stubs).
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    server.proc = None


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- inputs


def variant_onnx(engines_dir: Path, family: str, variant: str) -> Path:
    """The ONNX file behind ``variant`` in the family's catalog (built if missing)."""
    catalog_path = engines_dir / family / "catalog.json"
    if not catalog_path.exists():
        log.info("%s is missing: running edge-service build", catalog_path)
        subprocess.run(
            [str(MAIN_VENV / "bin" / "edge-service"), "build", "--engines-dir", str(engines_dir)],
            cwd=ROOT,
            check=True,
        )
    catalog = json.loads(catalog_path.read_text())
    for v in catalog["variants"]:
        if v["id"] == variant:
            if v.get("backend") != "onnxruntime":
                raise SystemExit(f"{variant} is a {v.get('backend')} engine, not ONNX Runtime")
            path: Path = engines_dir / family / str(v["artifact"]["path"])
            if not path.exists():
                raise SystemExit(f"{path} is missing: run .venv/bin/edge-service build")
            return path
    raise SystemExit(f"no variant {variant!r} in {catalog_path}")


def write_input_data(engines_dir: Path, family: str, images: int, path: Path) -> int:
    """perf_analyzer --input-data JSON: real test images, normalised like edge-service does."""
    from edge_service.data.preprocess import InputSpec, preprocess_bytes

    spec_json = json.loads((engines_dir / family / "catalog.json").read_text())["input"]
    size = int(spec_json["shape"][-1])
    spec = InputSpec(
        name=spec_json["name"],
        size=size,
        mean=float(spec_json["mean"]),
        std=float(spec_json["std"]),
    )
    files = sorted((ROOT / "calibration" / family).glob("*.png"))[:images]
    if not files:
        raise SystemExit(f"no PNGs in calibration/{family}/")
    steps = []
    for f in files:
        x = preprocess_bytes(f.read_bytes(), spec)[0]
        steps.append({spec.name: {"content": [round(float(v), 6) for v in x.ravel()],
                                  "shape": list(x.shape)}})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": steps}))
    return len(steps)


# --------------------------------------------------------------------------- perf_analyzer


@dataclass
class PaRun:
    server: str
    concurrency: int
    round: int
    ok: bool
    infer_per_s: float = math.nan
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    avg_ms: float = math.nan
    server_us: dict[str, float] = field(default_factory=dict)  # perf_analyzer's server stats
    raw: str = ""


def run_perf_analyzer(
    server: Server, concurrency: int, rnd: int, args: argparse.Namespace, input_json: Path
) -> PaRun:
    stem = f"{server.name}_c{concurrency}_r{rnd}"
    csv_path = OUT / f"{stem}.csv"
    txt_path = OUT / f"{stem}.txt"
    stability = args.stability
    for attempt in (1, 2):
        cmd = [
            str(TRITON_VENV / "bin" / "perf_analyzer"),
            "-m", MODEL, "-u", server.hostport, "-i", "http",
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(args.interval_ms),
            "--stability-percentage", str(stability),
            "--max-trials", str(args.max_trials),
            "--input-data", str(input_json),
            "-f", str(csv_path), "--verbose-csv",
        ]  # fmt: skip
        if server.version:
            cmd += ["-x", server.version]
        csv_path.unlink(missing_ok=True)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=perf_analyzer_env(), check=False, timeout=600
        )
        txt_path.write_text(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
        if proc.returncode == 0 and csv_path.exists():
            return parse_pa_csv(csv_path, server.name, concurrency, rnd, txt_path)
        log.warning(
            "perf_analyzer on %s c=%d (attempt %d) failed with %d: %s",
            server.name,
            concurrency,
            attempt,
            proc.returncode,
            (proc.stdout + proc.stderr).strip().splitlines()[-1:] or "",
        )
        stability *= 2  # the usual failure on a busy 2-core box: no stable windows
    return PaRun(server.name, concurrency, rnd, ok=False, raw=str(txt_path.relative_to(ROOT)))


def parse_pa_csv(path: Path, server: str, concurrency: int, rnd: int, txt: Path) -> PaRun:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if int(r["Concurrency"]) == concurrency)

    def us(key: str) -> float:
        value = row.get(key)
        return float(value) if value not in (None, "") else math.nan

    server_keys = ("Server Queue", "Server Compute Input", "Server Compute Infer",
                   "Server Compute Output")  # fmt: skip
    return PaRun(
        server=server,
        concurrency=concurrency,
        round=rnd,
        ok=True,
        infer_per_s=us("Inferences/Second"),
        p50_ms=us("p50 latency") / 1e3,
        p90_ms=us("p90 latency") / 1e3,
        p99_ms=us("p99 latency") / 1e3,
        avg_ms=us("Avg latency") / 1e3,
        server_us={k: us(k) for k in server_keys if k in row},
        raw=str(txt.relative_to(ROOT)),
    )


def warm_up(server: Server, input_json: Path, requests: int) -> None:
    cmd = [
        str(TRITON_VENV / "bin" / "perf_analyzer"),
        "-m", MODEL, "-u", server.hostport, "-i", "http", "--concurrency-range", "1:1",
        "--request-count", str(requests), "--input-data", str(input_json),
    ]  # fmt: skip
    if server.version:
        cmd += ["-x", server.version]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=perf_analyzer_env(), check=False, timeout=300
    )
    (OUT / f"{server.name}_warmup.txt").write_text(
        " ".join(cmd) + "\n\n" + proc.stdout + proc.stderr
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"perf_analyzer cannot run against {server.name} (rc {proc.returncode}):\n"
            + "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        )


# --------------------------------------------------------------------------- /metrics


LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Hist:
    """One Prometheus histogram, summed over the selected series."""

    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative
    sum: float = 0.0
    count: float = 0.0

    def minus(self, other: Hist) -> Hist:
        return Hist(
            {le: n - other.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.sum - other.sum,
            self.count - other.count,
        )

    def quantile(self, q: float) -> float:
        """histogram_quantile(): linear interpolation inside the bucket holding rank q."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        prev_le, prev_n = 0.0, 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le]
            if n >= rank:
                if math.isinf(le):
                    return prev_le
                width = n - prev_n
                return prev_le + (le - prev_le) * ((rank - prev_n) / width if width else 0.0)
            prev_le, prev_n = le, n
        return prev_le

    def mean(self) -> float:
        return self.sum / self.count if self.count > 0 else math.nan


def parse_histograms(text: str, selectors: dict[str, dict[str, str]]) -> dict[str, Hist]:
    """The histograms named in ``selectors``; a selector's labels filter the series (a label
    the series does not have does not filter it)."""
    out: dict[str, Hist] = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        metric, raw_labels, value = m.groups()
        for name, want in selectors.items():
            suffix = metric[len(name) :] if metric.startswith(name) else ""
            if suffix not in ("_bucket", "_sum", "_count"):
                continue
            labels = dict(LABEL.findall(raw_labels or ""))
            if any(k in labels and labels[k] != v for k, v in want.items()):
                continue
            h = out.setdefault(name, Hist())
            if suffix == "_bucket":
                le = float(labels["le"])  # "+Inf" parses
                h.buckets[le] = h.buckets.get(le, 0.0) + float(value)
            elif suffix == "_sum":
                h.sum += float(value)
            else:
                h.count += float(value)
    return out


def scrape(server: Server, selectors: dict[str, dict[str, str]]) -> dict[str, Hist]:
    status, body = http_get(server.url("/metrics"), timeout=5.0)
    if status != 200:
        return {}
    return parse_histograms(body.decode(errors="replace"), selectors)


@dataclass
class Overhead:
    requests: int
    p50_ms: float
    mean_ms: float
    method: str
    request_p50_ms: float
    engine_p50_ms: float


def overhead(delta: dict[str, Hist]) -> Overhead | None:
    req, eng, ovh = (delta.get(n) for n in ("edge_request_seconds", "edge_engine_seconds",
                                            "edge_overhead_seconds"))  # fmt: skip
    if req is None or eng is None or req.count <= 0:
        return None
    if ovh is not None and ovh.count > 0:
        p50, method = ovh.quantile(0.5) * 1e3, "edge_overhead_seconds p50"
    else:
        p50 = (req.quantile(0.5) - eng.quantile(0.5)) * 1e3
        method = "estimate: p50(edge_request_seconds) - p50(edge_engine_seconds)"
    return Overhead(
        requests=int(req.count),
        p50_ms=p50,
        mean_ms=(req.mean() - eng.mean()) * 1e3,
        method=method,
        request_p50_ms=req.quantile(0.5) * 1e3,
        engine_p50_ms=eng.quantile(0.5) * 1e3,
    )


def add(into: dict[str, Hist], delta: dict[str, Hist]) -> None:
    for name, h in delta.items():
        acc = into.setdefault(name, Hist())
        for le, n in h.buckets.items():
            acc.buckets[le] = acc.buckets.get(le, 0.0) + n
        acc.sum += h.sum
        acc.count += h.count


# --------------------------------------------------------------------------- report


def med(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def fmt(v: float, nd: int = 2) -> str:
    return "n/a" if math.isnan(v) else f"{v:.{nd}f}"


def summarize(runs: list[PaRun], servers: list[str], concurrencies: list[int]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for s in servers:
        for c in concurrencies:
            ok = [r for r in runs if r.server == s and r.concurrency == c and r.ok]
            tput = [r.infer_per_s for r in ok]
            srv = {k: med([r.server_us.get(k, math.nan) for r in ok]) / 1e3
                   for k in (ok[0].server_us if ok else {})}  # fmt: skip
            table[f"{s}/c{c}"] = {
                "server": s,
                "concurrency": c,
                "rounds_ok": len(ok),
                "rounds": len([r for r in runs if r.server == s and r.concurrency == c]),
                "infer_per_s": med(tput),
                "infer_per_s_min": min(tput) if tput else math.nan,
                "infer_per_s_max": max(tput) if tput else math.nan,
                "p50_ms": med([r.p50_ms for r in ok]),
                "p99_ms": med([r.p99_ms for r in ok]),
                "server_ms": srv,
            }
    return table


def render(
    table: dict[str, Any],
    servers: list[str],
    concurrencies: list[int],
    edge_overhead: dict[int, Overhead | None],
    setup: dict[str, str],
    overhead_limit_ms: float,
) -> tuple[str, bool]:
    lines = [
        "| server | concurrency | throughput infer/s (median) | min - max | client p50 ms | "
        "client p99 ms | server queue / infer ms (perf_analyzer) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in concurrencies:
        for s in servers:
            t = table[f"{s}/c{c}"]
            srv = t["server_ms"]
            queue_infer = (
                f"{fmt(srv.get('Server Queue', math.nan), 3)} / "
                f"{fmt(srv.get('Server Compute Infer', math.nan), 3)}"
                if srv
                else "n/a"
            )
            lines.append(
                f"| {s} | {c} | **{fmt(t['infer_per_s'], 1)}** | {fmt(t['infer_per_s_min'], 1)} - "
                f"{fmt(t['infer_per_s_max'], 1)} | {fmt(t['p50_ms'])} | {fmt(t['p99_ms'])} | "
                f"{queue_infer} |"
            )
    verdicts: list[str] = []
    passed = True
    if TRITON in servers and EDGE in servers:
        for c in concurrencies:
            e, t = table[f"{EDGE}/c{c}"]["infer_per_s"], table[f"{TRITON}/c{c}"]["infer_per_s"]
            ok = not math.isnan(e) and not math.isnan(t) and e >= t
            passed &= ok
            verdicts.append(
                f"- concurrency {c}: edge-service {fmt(e, 1)} vs Triton {fmt(t, 1)} infer/s "
                f"({fmt(e / t if t else math.nan)}x): **{'PASS' if ok else 'FAIL'}** (>= Triton)"
            )
    if EDGE in servers:
        for c in concurrencies:
            o = edge_overhead.get(c)
            if o is None:
                verdicts.append(f"- edge-service overhead at concurrency {c}: n/a (no /metrics)")
                passed &= c != 1
                continue
            ok = o.p50_ms <= overhead_limit_ms
            if c == 1:
                passed &= ok
            verdicts.append(
                f"- edge-service server-side overhead at concurrency {c} (total - engine, "
                f"{o.requests} requests): p50 **{o.p50_ms:.3f} ms**, mean {o.mean_ms:.3f} ms "
                f"(server total p50 {o.request_p50_ms:.3f} ms, engine p50 "
                f"{o.engine_p50_ms:.3f} ms; {o.method})"
                + (
                    f": **{'PASS' if ok else 'FAIL'}** (<= {overhead_limit_ms:g} ms)"
                    if c == 1
                    else ""
                )
            )
    body = (
        "\n".join(lines)
        + "\n\n"
        + "\n".join(verdicts)
        + "\n\nSetup:\n"
        + "\n".join(f"- {k}: {v}" for k, v in setup.items())
    )
    return body, passed


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", default=f"{TRITON},{EDGE}", help="triton, edge-service or both")
    p.add_argument("--variant", default="base@fp32", help="the variant both servers run")
    p.add_argument("--engines-dir", type=Path, default=ROOT / "engines")
    p.add_argument("--family", default=MODEL)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    p.add_argument("--interval-ms", type=int, default=2000, help="perf_analyzer window")
    p.add_argument("--stability", type=int, default=15, help="perf_analyzer -s (percent)")
    p.add_argument("--max-trials", type=int, default=8)
    p.add_argument("--warmup-requests", type=int, default=300)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads, both servers")
    p.add_argument("--triton-port", type=int, default=8000)
    p.add_argument("--triton-grpc-port", type=int, default=8001)
    p.add_argument("--triton-instances", type=int, default=1)
    p.add_argument("--max-queue-delay-us", type=int, default=0, help="Triton dynamic batcher")
    p.add_argument("--edge-port", type=int, default=8090)
    p.add_argument(
        "--edge-cmd",
        default=f"{MAIN_VENV / 'bin' / 'edge-service'} serve",
        help="command that starts edge-service (shell words; port etc. come from --edge-env)",
    )
    p.add_argument("--edge-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for edge-service (repeatable)")  # fmt: skip
    p.add_argument("--overhead-limit-ms", type=float, default=1.0)
    p.add_argument("--images", type=int, default=16, help="distinct input images")
    p.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # SIGTERM unwinds like Ctrl-C, so the servers (in their own sessions) are stopped too.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - {TRITON, EDGE}
    if unknown or not servers:
        raise SystemExit(f"--servers: pick from {TRITON}, {EDGE}")
    if not (TRITON_VENV / "bin" / "perf_analyzer").exists():
        raise SystemExit(
            f"{TRITON_VENV}/bin/perf_analyzer is missing: run bash bench/setup_triton.sh"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in [*OUT.glob("*_c*_r*.*"), *OUT.glob("*_warmup.txt"), *OUT.glob("*.log")]:
        stale.unlink()  # a previous run's per-run files
    onnx = variant_onnx(args.engines_dir, args.family, args.variant)
    input_json = OUT / "input.json"
    n_images = write_input_data(args.engines_dir, args.family, args.images, input_json)

    triton = Server(TRITON, args.triton_port, None, f"/v2/models/{MODEL}/ready", OUT / "triton.log")
    edge_ready = f"/v2/models/{MODEL}/versions/{args.variant}/ready"
    edge = Server(EDGE, args.edge_port, args.variant, edge_ready, OUT / "edge.log")
    triton_cmd = [
        str(TRITON_VENV / "bin" / "python"), str(ROOT / "bench" / "triton_server.py"),
        "--onnx", str(onnx), "--http-port", str(args.triton_port),
        "--grpc-port", str(args.triton_grpc_port), "--threads", str(args.threads),
        "--instances", str(args.triton_instances),
        "--max-queue-delay-us", str(args.max_queue_delay_us),
    ]  # fmt: skip
    edge_env = dict(os.environ)
    edge_env.update({
        "EDGE_HOST": "127.0.0.1",
        "EDGE_PORT": str(args.edge_port),
        "EDGE_INTRA_OP_THREADS": str(args.threads),
        "EDGE_ENGINES_DIR": str(args.engines_dir),
        "EDGE_FAMILY": args.family,
    })  # fmt: skip
    for kv in args.edge_env:
        key, _, value = kv.partition("=")
        edge_env[key] = value
    edge_cmd = shlex.split(args.edge_cmd)
    selectors = {
        "edge_request_seconds": {"endpoint": "v2_infer"},
        "edge_engine_seconds": {"variant": args.variant},
        "edge_overhead_seconds": {"endpoint": "v2_infer"},
    }

    runs: list[PaRun] = []
    metrics: dict[int, dict[str, Hist]] = {c: {} for c in args.concurrency}
    setup: dict[str, str] = {}
    with ExitStack() as stack:
        by_name: dict[str, Server] = {}
        if TRITON in servers:
            by_name[TRITON] = stack.enter_context(
                running(triton, triton_cmd, dict(os.environ), 180)
            )
            _, meta = http_get(triton.url("/v2"))
            setup["Triton"] = (
                f"server {json.loads(meta or b'{}').get('version', '?')} through nvidia-pytriton "
                f"{triton_venv_version('nvidia-pytriton')} (Python backend -> pytriton proxy -> "
                f"onnxruntime {triton_venv_version('onnxruntime')} in bench/triton_server.py), "
                f"model `{MODEL}` v1 = `{onnx.relative_to(ROOT)}`, max_batch_size 64, dynamic "
                f"batching with max_queue_delay {args.max_queue_delay_us} us, "
                f"{args.triton_instances} instance(s), metrics endpoint off"
            )
        if EDGE in servers:
            by_name[EDGE] = stack.enter_context(running(edge, edge_cmd, edge_env, 180))
            setup["edge-service"] = (
                f"{edge_version()} (`{' '.join(Path(w).name if '/' in w else w for w in edge_cmd)}`"
                f"), pinned to `{args.variant}` through "
                f"/v2/models/{MODEL}/versions/{args.variant}/infer; extra env: "
                f"{' '.join(args.edge_env) or 'none'}"
            )
        setup["both"] = (
            f"ORT intra-op threads {args.threads or 'auto (0)'}, inter-op 1, ORT_ENABLE_ALL, "
            "CPUExecutionProvider; loopback HTTP; both servers up for the whole run"
        )
        setup["load"] = (
            f"perf_analyzer {triton_venv_version('tritonclient')} (tritonclient wheel), HTTP, "
            f"closed loop (concurrency N, sync), binary tensors, batch 1, {n_images} real test "
            f"images normalised like edge-service (--input-data); time windows of "
            f"{args.interval_ms} ms until 3 are within {args.stability}% (max {args.max_trials}); "
            f"{args.warmup_requests} warm-up requests per server; {args.rounds} rounds, the two "
            "servers back to back in alternating order; medians over rounds"
        )
        for s in by_name.values():
            warm_up(s, input_json, args.warmup_requests)
        order = [by_name[n] for n in servers]
        for rnd in range(args.rounds):
            for ci, c in enumerate(args.concurrency):
                for s in order if (rnd + ci) % 2 == 0 else list(reversed(order)):
                    before = scrape(s, selectors) if s.name == EDGE else {}
                    run = run_perf_analyzer(s, c, rnd, args, input_json)
                    if s.name == EDGE:
                        after = scrape(s, selectors)
                        add(
                            metrics[c],
                            {k: h.minus(before.get(k, Hist())) for k, h in after.items()},
                        )
                    runs.append(run)
                    log.info(
                        "round %d c=%d %-12s %s infer/s, p50 %s ms, p99 %s ms",
                        rnd, c, s.name, fmt(run.infer_per_s, 1), fmt(run.p50_ms), fmt(run.p99_ms),
                    )  # fmt: skip
    # both servers are stopped here (also when anything above raised)

    table = summarize(runs, servers, args.concurrency)
    edge_overhead = {c: overhead(metrics[c]) for c in args.concurrency} if EDGE in servers else {}
    body, passed = render(
        table, servers, args.concurrency, edge_overhead, setup, args.overhead_limit_ms
    )
    (OUT / "summary.json").write_text(
        json.dumps(
            {
                "runs": [asdict(r) for r in runs],
                "table": table,
                "edge_overhead": {c: asdict(o) if o else None for c, o in edge_overhead.items()},
                "edge_metrics_delta": {
                    c: {n: asdict(h) for n, h in m.items()} for c, m in metrics.items()
                },
                "setup": setup,
                "passed": passed,
            },
            indent=2,
            default=str,
        )
    )
    print(body)
    both = TRITON in servers and EDGE in servers
    if both and not args.no_write:
        write_section(
            "serving_vs_triton", "edge-service vs Triton 2.51 (pytriton), same ORT model", body
        )
    elif not args.no_write:
        log.info("one server only: bench/RESULTS.md left as it is (raw results in %s)", OUT)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
