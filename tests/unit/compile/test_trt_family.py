"""Which TensorRT engines a family gets, and how they enter its catalog (no GPU needed)."""

from __future__ import annotations

from typing import Any

from support import profiled_catalog

from edge_service.compile.trt_family import merge_tensorrt, tensorrt_jobs
from edge_service.variants import VariantSpec

SHA = "0" * 64


def _variant(
    stages: tuple[str, ...], precision: str, backend: str = "onnxruntime"
) -> dict[str, Any]:
    spec = VariantSpec(stages, precision, 28, 28, "evolve")
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "backend": backend,
        "artifact": {"path": f"{spec.family_key}/{precision}.onnx", "sha256": SHA, "bytes": 1},
    }


def test_each_network_gets_fp16_from_fp32_and_int8_from_int8_when_planned() -> None:
    cat = profiled_catalog(
        _variant(("id", "id"), "fp32"),
        _variant(("id", "id"), "int8"),
        _variant(("dw", "id"), "fp32"),
    )
    jobs = {(j.network, j.precision, j.source.id) for j in tensorrt_jobs(cat)}
    assert jobs == {
        ("base", "fp16", "base@fp32"),
        ("base", "int8", "base@int8"),
        ("dw-id", "fp16", "dw-id@fp32"),
    }


def test_tensorrt_int8_replaces_onnx_runtime_int8_when_merged() -> None:
    cat = profiled_catalog(_variant(("id",), "fp32"), _variant(("id",), "int8"))
    built = profiled_catalog(
        _variant(("id",), "fp16", "tensorrt"), _variant(("id",), "int8", "tensorrt")
    )
    merged = merge_tensorrt(cat, list(built.variants))
    assert {(v.id, v.backend) for v in merged.variants} == {
        ("base@fp32", "onnxruntime"),
        ("base@fp16", "tensorrt"),
        ("base@int8", "tensorrt"),
    }


def test_no_jobs_come_from_tensorrt_variants_when_family_already_has_them() -> None:
    cat = profiled_catalog(_variant(("id",), "fp32"), _variant(("id",), "int8", "tensorrt"))
    assert [j.precision for j in tensorrt_jobs(cat)] == ["fp16"]
