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
    """A ``variant_id -> loaded Engine`` function over the repository (checksums verified)."""

    def load(variant_id: str) -> Engine:
        return open_engine(catalog.variant(variant_id), family_dir, threads)

    return load


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
