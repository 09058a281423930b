"""How a profile's latency scales to the compute the board has now (the predictor's step 2,
`edge_service.control.predictor`): cores and CPU clock for CPU backends, GPU clock for GPU
ones."""

from __future__ import annotations

import math

from edge_service.monitor.context import Context
from edge_service.repository import Profile, Variant


def is_gpu_backend(variant: Variant, profile: Profile) -> bool:
    """True for TensorRT engines and ONNX Runtime profiles run on the CUDA / TensorRT EP."""
    marker = profile.backend.lower()
    return variant.backend == "tensorrt" or "cuda" in marker or "tensorrt" in marker


def scale_factor(profile: Profile, variant: Variant, ctx: Context) -> float:
    """How much slower (>1) or faster (<1) ``profile``'s latency is in ``ctx`` (module doc)."""
    return math.prod(ratios(profile, variant, ctx))


def ratios(profile: Profile, variant: Variant, ctx: Context) -> list[float]:
    """The then / now resource ratios this backend depends on, where both sides are known."""
    pairs: list[tuple[float | None, float | None]]
    if is_gpu_backend(variant, profile):
        gpu_now = ctx.gpu_max_freq_hz or ctx.gpu_freq_hz
        pairs = [(profile.gpu_max_freq_hz, gpu_now)]
    else:
        cpu_now = max(ctx.cpu_freqs_hz, default=None)
        pairs = [
            (
                parallelism(profile.threads, profile.cores),
                parallelism(profile.threads, ctx.cpu_online),
            ),
            (profile.cpu_max_freq_hz, cpu_now),
        ]
    return [then / now for then, now in pairs if then and now and then > 0 and now > 0]


def parallelism(threads: int, cores: int | None) -> int | None:
    """Cores an engine with ``threads`` threads (0: one per core) can use on ``cores``."""
    if cores is None:
        return None
    return min(threads, cores) if threads > 0 else cores
