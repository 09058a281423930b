"""Serve one ONNX model through Triton 2.51 (nvidia-pytriton), CPU only, for comparisons.

    .venv-triton/bin/python bench/triton_server.py [--onnx engines/fashion/base/fp32.onnx]
        [--http-port 8000] [--threads 0] [--max-queue-delay-us 0] [--instances 1]

Runs in .venv-triton (bench/setup_triton.sh), not in .venv: pytriton needs numpy < 2.
Serves model ``fashion`` version 1 over KServe v2 HTTP (and gRPC, which pytriton's own
model manager uses): input ``input`` FP32 [-1, 1, 28, 28], output ``logits`` FP32
[-1, 10], max_batch_size 64. Triton's dynamic batcher merges requests that are queued
at the same moment; ``--max-queue-delay-us 0`` (default) never holds a request back to
wait for more, which is what edge-service does by default (EDGE_BATCH_MAX_DELAY_MS=0).
On this 2-core box that default was Triton's best setting: ``--instances 2``,
``--threads 1`` or ``--max-queue-delay-us 100`` gave the same or lower throughput at
concurrency 1 and 4 (2026-11-24, ``bench/serving_vs_triton.py --servers triton`` with
those flags). The metrics endpoint is off (no poller thread on the 2 cores).

The inference callable runs an ``onnxruntime.InferenceSession`` with the session options
of edge_service/runtime/ort_engine.py: intra_op_num_threads = ``--threads`` (0 lets ONNX
Runtime choose, edge-service's default), inter_op_num_threads = 1, ORT_ENABLE_ALL,
CPUExecutionProvider. Triton's Python backend (pytriton's proxy) hands each batch to
this process over shared memory and ZeroMQ.

Stop it with SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

log = logging.getLogger("triton_server")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ONNX = ROOT / "engines" / "fashion" / "base" / "fp32.onnx"
MODEL = "fashion"
INPUT = "input"
OUTPUT = "logits"
INPUT_SHAPE = (1, 28, 28)
CLASSES = 10


def ensure_onnx(path: Path) -> None:
    """Build the default family with edge-service's own build step if ``path`` is missing."""
    if path.exists():
        return
    cli = ROOT / ".venv" / "bin" / "edge-service"
    if path.resolve() != DEFAULT_ONNX or not cli.exists():
        raise SystemExit(f"{path} does not exist (build it with: .venv/bin/edge-service build)")
    log.info("%s is missing: running %s build", path, cli)
    subprocess.run([str(cli), "build", "--only", "base"], cwd=ROOT, check=True)


def prefer_own_libpython() -> None:
    """Make the backend stub load this interpreter's libpython, not the system's one.

    pytriton's Python backend stub links ``libpython3.X.so.1.0`` by name; with a pyenv
    Python the loader would otherwise find Debian's /usr/lib libpython3.X (another patch
    release) and run it against this interpreter's stdlib, which fails (e.g. 3.11.2's
    ``_thread.RLock`` has no ``_recursion_count``, which the 3.11.7 stdlib calls).
    pytriton passes this process's environment to tritonserver and the stub.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir:
        log.warning("this Python has no shared libpython; the stub uses the system one")
        return
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir not in current.split(os.pathsep):
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, current) if p)


def make_session(path: Path, threads: int) -> ort.InferenceSession:
    """The session options of edge_service.runtime.ort_engine.OrtEngine.load, CPU only."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def make_infer(session: ort.InferenceSession) -> Callable[..., Any]:
    """The inference callable: pytriton's @batch stacks the queued requests' inputs."""
    input_name = session.get_inputs()[0].name

    def infer(**inputs: npt.NDArray[Any]) -> dict[str, npt.NDArray[np.float32]]:
        x = np.ascontiguousarray(inputs[INPUT], dtype=np.float32)
        (logits,) = session.run([OUTPUT], {input_name: x})
        return {OUTPUT: np.asarray(logits, dtype=np.float32)}

    return cast("Callable[..., Any]", batch(infer))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help="ONNX model to serve")
    p.add_argument("--host", default="127.0.0.1", help="HTTP/gRPC bind address")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001, help="pytriton's model manager uses it")
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT picks)")
    p.add_argument("--instances", type=int, default=1, help="inference callables (model instances)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        help="dynamic batcher: longest wait for more requests (0: batch only what is queued)",
    )
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ensure_onnx(args.onnx)
    prefer_own_libpython()
    sessions = [make_session(args.onnx, args.threads) for _ in range(args.instances)]
    log.info(
        "onnxruntime %s, %s, intra-op threads %s, %d instance(s)",
        ort.__version__,
        args.onnx,
        args.threads or "auto",
        args.instances,
    )
    config = TritonConfig(
        http_address=args.host,
        http_port=args.http_port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        allow_metrics=False,  # no metrics poller thread competing for the 2 cores
        log_verbose=args.log_verbose,
    )
    # pytriton 0.7 puts the statistics endpoint (which perf_analyzer reads) behind a
    # token by default; the server binds loopback only, so leave every endpoint open.
    security = TritonSecurityConfig(restricted_endpoints=[])
    model_config = ModelConfig(
        batching=True,
        max_batch_size=args.max_batch_size,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=[make_infer(s) for s in sessions],
            inputs=[Tensor(name=INPUT, dtype=np.float32, shape=INPUT_SHAPE)],
            outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(CLASSES,))],
            config=model_config,
            strict=False,
        )
        triton.run()  # returns once the model is loaded; the server runs in the background
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        log.info("serving %s on http://%s:%d", MODEL, args.host, args.http_port)
        while not stop.wait(0.5):
            if not triton.is_alive():
                log.error("Triton exited")
                sys.exit(1)
    log.info("stopped")


if __name__ == "__main__":
    main()
