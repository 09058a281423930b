"""Opening a catalog variant's engine with the right backend, checksum verified first."""

from __future__ import annotations

from pathlib import Path

from edge_service.repository import Variant, verified_artifact_path
from edge_service.runtime.engine import Engine
from edge_service.runtime.ort_engine import OrtEngine, default_providers


def open_engine(variant: Variant, family_dir: Path, threads: int = 0) -> Engine:
    """The variant's engine, loaded (CatalogError if its artifact fails the checksum)."""
    path = verified_artifact_path(family_dir, variant.artifact)
    engine: Engine
    if variant.backend == "tensorrt":
        from edge_service.runtime.trt_engine import TrtEngine  # lazy: tensorrt + pycuda

        engine = TrtEngine(path, variant_id=variant.id, precision=variant.precision)
    else:
        engine = OrtEngine(
            path,
            variant_id=variant.id,
            precision=variant.precision,
            threads=threads,
            providers=default_providers(),
        )
    engine.load()
    return engine
