"""Build TensorRT engines (FP16, INT8 from a Q/DQ ONNX) and cache them per target.

Written against the TensorRT 10.x Python API (JetPack 6 ships TensorRT 10.3): networks are
always explicit-batch, so ``create_network(0)``; the workspace is a memory-pool limit; the
batch axis gets one optimization profile (min 1, opt, max).

INT8 comes only from an explicitly quantized (Q/DQ) ONNX, the form ``calibration.py``
writes: TensorRT's implicit calibrators are deprecated since 10.1. The network is built
weakly typed with ``INT8`` + ``FP16``: on TensorRT 10.3 a Q/DQ network needs the INT8 flag
to accept its INT8 tensors, and FP16 lets the layers outside Q/DQ pairs run in FP16 instead
of FP32. (Later TensorRT docs move explicit quantization to strongly typed networks, and
TensorRT 11 removes both flags; revisit when JetPack moves.)

TensorRT engines are not portable across TensorRT versions or GPUs, so each engine is
stored under a key of (TensorRT version, device, compute capability, ONNX hash, precision,
calibration hash, profile shapes) with a JSON sidecar that says what it was built for;
``EngineCache.check`` refuses an engine built elsewhere.

``tensorrt`` and ``pycuda`` are imported inside functions only, so this module imports
anywhere; ``build_engine`` takes the ``tensorrt`` module as a parameter so that its call
sequence can be checked without a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_service.errors import BuildError
from edge_service.fsutil import atomic_write_bytes, sha256_file
from edge_service.runtime.trt_cache import (
    EngineCache,
    TrtBuildPlan,
    TrtTarget,
    engine_cache_key,
    import_lazily,
    target_slug,
    write_sidecar,
)

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp16", "int8")
PRECISION_FLAGS: dict[str, tuple[str, ...]] = {"fp16": ("FP16",), "int8": ("INT8", "FP16")}
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
def onnx_has_qdq(onnx_path: Path) -> bool:
    """True when the ONNX graph has Q/DQ nodes (needs the ``onnx`` package)."""
    try:
        import onnx
    except ImportError as exc:
        raise BuildError(
            f"cannot tell whether {onnx_path} is Q/DQ-quantized without the onnx package: "
            "pip install onnx, or pass quantized=True/False to plan_build"
        ) from exc
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BuildError(f"cannot read ONNX model {onnx_path}: {exc}; export it again") from exc
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    return any(node.op_type in QDQ_OPS for node in nodes)


def plan_build(
    onnx_path: Path,
    precision: str,
    target: TrtTarget,
    *,
    input_name: str,
    chw: tuple[int, int, int],
    timing_cache_dir: Path,
    max_batch: int = 16,
    opt_batch: int = 1,
    workspace_mb: int = 1024,
    calibration_hash: str | None = None,
    quantized: bool | None = None,
) -> TrtBuildPlan:
    """Validate a build request and derive its flags, profile, cache key and timing cache.

    ``quantized`` says whether the ONNX carries Q/DQ nodes; None detects it with the
    ``onnx`` package. INT8 needs a Q/DQ model; FP16 needs a float one.
    """
    _check_request(onnx_path, precision, chw, max_batch, opt_batch, workspace_mb)
    is_qdq = onnx_has_qdq(onnx_path) if quantized is None else quantized
    _check_quantization(onnx_path, precision, is_qdq)
    shapes = tuple((batch, *chw) for batch in (1, opt_batch, max_batch))
    onnx_sha256 = sha256_file(onnx_path)
    key = engine_cache_key(target, onnx_sha256, precision, calibration_hash, profile=shapes)
    return TrtBuildPlan(
        precision=precision,
        flags=PRECISION_FLAGS[precision],
        input_name=input_name,
        min_shape=shapes[0],
        opt_shape=shapes[1],
        max_shape=shapes[2],
        workspace_bytes=workspace_mb * 1024 * 1024,
        cache_key=key,
        timing_cache=timing_cache_dir / f"timing-{target_slug(target)}.cache",
        target=target,
        onnx_sha256=onnx_sha256,
        calibration_hash=calibration_hash,
    )


def _check_request(
    onnx_path: Path,
    precision: str,
    chw: tuple[int, int, int],
    max_batch: int,
    opt_batch: int,
    workspace_mb: int,
) -> None:
    """Refuse a request that cannot be built, saying which argument to change."""
    if precision not in PRECISIONS:
        raise BuildError(
            f"TensorRT builds precision fp16 or int8, not {precision!r}; "
            "fp32 engines are built and served by ONNX Runtime"
        )
    if not onnx_path.is_file():
        raise BuildError(f"ONNX model {onnx_path} does not exist; export it first")
    if len(chw) != 3 or min(chw) < 1:
        raise BuildError(f"chw must be three positive sizes (C, H, W), got {chw}")
    if not 1 <= opt_batch <= max_batch:
        raise BuildError(f"need 1 <= opt_batch <= max_batch, got {opt_batch} and {max_batch}")
    if workspace_mb < 1:
        raise BuildError(f"workspace_mb must be at least 1, got {workspace_mb}")


def _check_quantization(onnx_path: Path, precision: str, is_qdq: bool) -> None:
    """INT8 needs explicit Q/DQ nodes; FP16 from a Q/DQ model would need the INT8 flag."""
    if precision == "int8" and not is_qdq:
        raise BuildError(
            f"int8 needs a Q/DQ-quantized ONNX, and {onnx_path} has no Q/DQ nodes: "
            "quantize it first (edge_service.compile.calibration.quantize_int8); TensorRT's "
            "implicit INT8 calibration is deprecated since TensorRT 10.1"
        )
    if precision == "fp16" and is_qdq:
        raise BuildError(
            f"{onnx_path} is Q/DQ-quantized: build it as int8, or build fp16 from the FP32 ONNX"
        )


def build_engine(
    plan: TrtBuildPlan, onnx_path: Path, out_path: Path, trt_module: ModuleType | None = None
) -> Path:
    """Build ``onnx_path`` into a serialized engine at ``out_path`` (+ sidecar); returns it.

    ``trt_module`` is the ``tensorrt`` module (imported when None).
    """
    if sha256_file(onnx_path) != plan.onnx_sha256:
        raise BuildError(f"{onnx_path} changed since the build was planned; plan it again")
    trt: Any = trt_module if trt_module is not None else import_lazily("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: always explicit batch
    _parse(trt, network, logger, onnx_path, plan.input_name)
    config = _config(trt, builder, plan)
    log.info(
        "building %s engine from %s for %s (minutes on a Jetson)",
        plan.precision,
        onnx_path.name,
        plan.target.describe(),
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(
            f"TensorRT could not build {onnx_path} as {plan.precision}; TensorRT's log (stderr) "
            f"says why (often: too small a workspace, now {plan.workspace_bytes >> 20} MiB, or an "
            "unsupported layer). Try a larger workspace_mb, or serve the ONNX Runtime engine"
        )
    _save_timing_cache(config, plan.timing_cache)
    atomic_write_bytes(out_path, bytes(serialized))
    # The sidecar goes last: an engine without one is never taken from the cache.
    write_sidecar(plan, out_path)
    log.info("wrote %s", out_path)
    return out_path


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path, input_name: str) -> None:
    """Parse the ONNX into ``network``; the parser's errors become one BuildError."""
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            f"TensorRT's ONNX parser rejected {onnx_path}: {'; '.join(errors) or 'no detail'}. "
            "Re-export with the supported opset, or serve the ONNX Runtime engine"
        )
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if input_name not in inputs:
        raise BuildError(f"{onnx_path} has inputs {inputs}, not {input_name!r}; fix input_name")


def _config(trt: Any, builder: Any, plan: TrtBuildPlan) -> Any:
    """Builder config: workspace limit, precision flags, batch profile, timing cache."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, plan.min_shape, plan.opt_shape, plan.max_shape)
    config.add_optimization_profile(profile)
    _load_timing_cache(config, plan.timing_cache)
    return config


def _load_timing_cache(config: Any, path: Path) -> None:
    """Attach the saved timing cache, or a fresh one if none is saved or it does not fit."""
    data = path.read_bytes() if path.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(data), False):
        log.debug("timing cache %s: %d bytes", path, len(data))
        return
    log.warning("timing cache %s is from another TensorRT or GPU; starting a new one", path)
    config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: Any, path: Path) -> None:
    """Write the (now larger) timing cache back, atomically, for the next build."""
    cache = config.get_timing_cache()
    if cache is not None:
        atomic_write_bytes(path, bytes(cache.serialize()))


def build_or_reuse(
    plan: TrtBuildPlan,
    onnx_path: Path,
    cache: EngineCache,
    trt_module: ModuleType | None = None,
) -> Path:
    """The cached engine for ``plan.cache_key`` if there is one, else a fresh build."""
    hit = cache.lookup(plan.cache_key)
    if hit is not None:
        log.info("cache hit: reusing %s engine %s", plan.precision, hit)
        return hit
    log.info("cache miss for %s %s: building", onnx_path.name, plan.precision)
    return build_engine(plan, onnx_path, cache.engine_path(plan.cache_key), trt_module)
