"""Engines as the service loads them: the loader over the repository, the blank frame
warm-up and shadow runs feed, and how many rows one engine call may take."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from edge_service.repository import Catalog
from edge_service.runtime.engine import Engine
from edge_service.runtime.loader import open_engine


def engine_loader(catalog: Catalog, family_dir: Path, threads: int) -> Callable[[str], Engine]:
    """A ``variant_id -> loaded Engine`` function over the repository (checksums verified),
    each engine warmed by one call (`warm`)."""

    def load(variant_id: str) -> Engine:
        engine = open_engine(catalog.variant(variant_id), family_dir, threads)
        try:
            warm(engine)
        except BaseException:
            engine.close()
            raise
        return engine

    return load


def warm(engine: Engine) -> bool:
    """Run ``engine`` once on zeros of one row, so its first served call does not pay for
    the runtime's first-run allocations (ONNX Runtime: 2-3x a warm call); an engine that
    cannot run fails here, at load, not on a request. False (nothing run) when a dimension
    other than the batch is not fixed (no shape to feed)."""
    import numpy as np

    rest = engine.info().input_shape[1:]
    dims = [d for d in rest if isinstance(d, int) and d >= 1]
    if len(dims) != len(rest):
        return False
    engine.infer(np.zeros((1, *dims), dtype=np.float32))
    return True


@functools.cache
def blank_png() -> bytes:
    """A small black PNG: what warm-up and shadow runs feed (latency does not depend on
    the pixels); made once."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def batch_limit(setting: int, batch_dim: int | str) -> int:
    """Most rows per engine call: the setting, or the engines' fixed batch where their input
    has one (a detector exported without dynamic axes takes one frame per call, and a
    micro-batch of two would fail the engine)."""
    return min(setting, batch_dim) if isinstance(batch_dim, int) and batch_dim >= 1 else setting
