"""TensorRT builder logic without a GPU: plans, cache keys, the engine cache, and the
TensorRT 10 call sequence checked against a small recording fake of the ``tensorrt`` module
(a third-party library absent here)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_service.compile import trt_builder as tb
from edge_service.errors import BuildError, CatalogError
from edge_service.runtime import trt_cache as tc
from edge_service.runtime.trt_cache import EngineCache, TrtTarget

ORIN = TrtTarget(trt_version="10.3.0", device_name="Orin", compute_capability="8.7")
CHW = (1, 28, 28)


# --- fixtures ---------------------------------------------------------------------------


def _tiny_onnx(path: Path, *, qdq: bool) -> Path:
    """input (N,1,28,28) -> [Q -> DQ] -> Flatten -> MatMul -> logits (N,10)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((784, 10), np.float32), "w")]
    nodes = []
    x = "input"
    if qdq:
        inits += [
            numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
        ]
        x = "dq"
    nodes += [
        helper.make_node("Flatten", [x], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *CHW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A stand-in ONNX file: plans read only its bytes when ``quantized`` is given."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, hashed only")
    return path


def _plan(model: Path, tmp_path: Path, precision: str = "fp16", **kw: Any) -> tc.TrtBuildPlan:
    kw.setdefault("quantized", precision == "int8")
    return tb.plan_build(
        model,
        precision,
        kw.pop("target", ORIN),
        input_name="input",
        chw=CHW,
        timing_cache_dir=tmp_path / "timing",
        **kw,
    )


class FakeTrt:
    """Builds a fake ``tensorrt`` module whose objects record every call in ``calls``."""

    def __init__(self, *, parse_errors: tuple[str, ...] = (), build_ok: bool = True) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.parse_errors = parse_errors
        self.build_ok = build_ok

    def module(self) -> ModuleType:
        mod = ModuleType("tensorrt")
        rec = self.calls.append
        fake = self

        class Logger:
            WARNING = "WARNING"

            def __init__(self, severity: str) -> None:
                rec(("Logger", severity))

        class TimingCache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return self.data + b"+timings"

        class Config:
            cache: TimingCache | None = None

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                rec(("set_memory_pool_limit", pool, size))

            def set_flag(self, flag: str) -> None:
                rec(("set_flag", flag))

            def add_optimization_profile(self, profile: Any) -> None:
                rec(("add_optimization_profile", profile.shapes))

            def create_timing_cache(self, data: bytes) -> TimingCache:
                rec(("create_timing_cache", bytes(data)))
                return TimingCache(bytes(data))

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                rec(("set_timing_cache", ignore_mismatch))
                self.cache = cache
                return True

            def get_timing_cache(self) -> TimingCache | None:
                return self.cache

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[Any, ...]] = {}

            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                self.shapes = {name: (tuple(lo), tuple(opt), tuple(hi))}

        class Network:
            num_inputs = 1

            def get_input(self, i: int) -> Any:
                return SimpleNamespace(name="input")

        class Builder:
            def __init__(self, logger: Logger) -> None:
                rec(("Builder",))

            def create_network(self, flags: int) -> Network:
                rec(("create_network", flags))
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> Any:
                rec(("build_serialized_network",))
                return b"ENGINE-BYTES" if fake.build_ok else None

        class OnnxParser:
            def __init__(self, network: Network, logger: Logger) -> None:
                self.num_errors = len(fake.parse_errors)

            def parse_from_file(self, path: str) -> bool:
                rec(("parse_from_file", path))
                return not fake.parse_errors

            def get_error(self, i: int) -> str:
                return fake.parse_errors[i]

        mod.__dict__.update(
            Logger=Logger,
            Builder=Builder,
            OnnxParser=OnnxParser,
            MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
            BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8"),
        )
        return mod

    def names(self) -> list[Any]:
        return [c[0] for c in self.calls]


# --- plans ------------------------------------------------------------------------------


def test_plan_flags_are_fp16_only_when_precision_is_fp16(model: Path, tmp_path: Path) -> None:
    assert _plan(model, tmp_path, "fp16").flags == ("FP16",)


def test_plan_flags_are_int8_and_fp16_when_precision_is_int8_qdq(
    model: Path, tmp_path: Path
) -> None:
    assert _plan(model, tmp_path, "int8").flags == ("INT8", "FP16")


def test_plan_profile_spans_batch_one_to_max_when_built(model: Path, tmp_path: Path) -> None:
    plan = _plan(model, tmp_path, max_batch=32, opt_batch=8, workspace_mb=256)
    assert plan.min_shape == (1, *CHW)
    assert plan.opt_shape == (8, *CHW)
    assert plan.max_shape == (32, *CHW)
    assert plan.workspace_bytes == 256 * 1024 * 1024
    assert plan.timing_cache.parent == tmp_path / "timing"


@pytest.mark.parametrize("precision", ["fp32", "FP16", "int4", ""])
def test_plan_raises_build_error_when_precision_is_not_fp16_or_int8(
    model: Path, tmp_path: Path, precision: str
) -> None:
    with pytest.raises(BuildError, match="fp16 or int8"):
        _plan(model, tmp_path, precision, quantized=False)


def test_plan_raises_build_error_when_int8_model_has_no_qdq(model: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="Q/DQ"):
        _plan(model, tmp_path, "int8", quantized=False)


def test_plan_raises_build_error_when_fp16_model_is_qdq(model: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="build it as int8"):
        _plan(model, tmp_path, "fp16", quantized=True)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"opt_batch": 20, "max_batch": 16}, "opt_batch"),
        ({"opt_batch": 0}, "opt_batch"),
        ({"workspace_mb": 0}, "workspace_mb"),
    ],
)
def test_plan_raises_build_error_when_sizes_are_inconsistent(
    model: Path, tmp_path: Path, kw: dict[str, Any], match: str
) -> None:
    with pytest.raises(BuildError, match=match):
        _plan(model, tmp_path, **kw)


def test_plan_raises_build_error_when_onnx_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        _plan(tmp_path / "absent.onnx", tmp_path)


def test_plan_detects_qdq_nodes_when_quantized_is_not_given(tmp_path: Path) -> None:
    qdq = _tiny_onnx(tmp_path / "q.onnx", qdq=True)
    fp32 = _tiny_onnx(tmp_path / "f.onnx", qdq=False)
    assert _plan(qdq, tmp_path, "int8", quantized=None).flags == ("INT8", "FP16")
    with pytest.raises(BuildError, match="no Q/DQ nodes"):
        _plan(fp32, tmp_path, "int8", quantized=None)


def test_plan_raises_build_error_naming_quantized_when_onnx_package_is_missing(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BuildError, match="quantized=True/False"):
        _plan(model, tmp_path, "int8", quantized=None)


def test_plan_raises_build_error_when_onnx_file_is_not_onnx(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    with pytest.raises(BuildError, match="cannot read ONNX"):
        _plan(model, tmp_path, "int8", quantized=None)


# --- cache keys -------------------------------------------------------------------------


BASE_KEY = {"target": ORIN, "onnx_sha256": "a" * 64, "precision": "fp16", "calibration_hash": None}


def _key(**changes: Any) -> str:
    args = {**BASE_KEY, **changes}
    return tc.engine_cache_key(
        args["target"], args["onnx_sha256"], args["precision"], args["calibration_hash"]
    )


def test_cache_key_is_stable_when_inputs_are_equal() -> None:
    assert _key() == _key(target=TrtTarget("10.3.0", "Orin", "8.7"))


@pytest.mark.parametrize(
    "changes",
    [
        {"target": dataclasses.replace(ORIN, trt_version="10.4.0")},
        {"target": dataclasses.replace(ORIN, device_name="Xavier")},
        {"target": dataclasses.replace(ORIN, compute_capability="7.2")},
        {"onnx_sha256": "b" * 64},
        {"precision": "int8"},
        {"calibration_hash": "c" * 64},
    ],
    ids=["trt-version", "device", "compute-capability", "onnx", "precision", "calibration"],
)
def test_cache_key_changes_when_any_input_changes(changes: dict[str, Any]) -> None:
    assert _key(**changes) != _key()


def test_plan_cache_key_changes_when_profile_changes(model: Path, tmp_path: Path) -> None:
    assert _plan(model, tmp_path, max_batch=8).cache_key != _plan(model, tmp_path).cache_key
    assert _plan(model, tmp_path).cache_key == _plan(model, tmp_path).cache_key


def test_timing_cache_file_differs_when_target_differs(model: Path, tmp_path: Path) -> None:
    other = dataclasses.replace(ORIN, device_name="Xavier", compute_capability="7.2")
    assert _plan(model, tmp_path, target=other).timing_cache != _plan(model, tmp_path).timing_cache


# --- the engine cache -------------------------------------------------------------------


def _built(model: Path, tmp_path: Path, **kw: Any) -> tuple[tc.TrtBuildPlan, EngineCache, Path]:
    plan = _plan(model, tmp_path, **kw)
    cache = EngineCache(tmp_path / "engines")
    path = tb.build_engine(plan, model, cache.engine_path(plan.cache_key), FakeTrt().module())
    return plan, cache, path


def test_lookup_misses_when_nothing_is_built(model: Path, tmp_path: Path) -> None:
    assert EngineCache(tmp_path / "engines").lookup(_plan(model, tmp_path).cache_key) is None


def test_lookup_hits_when_engine_and_sidecar_match(model: Path, tmp_path: Path) -> None:
    plan, cache, path = _built(model, tmp_path)
    assert cache.lookup(plan.cache_key) == path


def test_lookup_misses_when_sidecar_is_missing(model: Path, tmp_path: Path) -> None:
    plan, cache, path = _built(model, tmp_path)
    tc.sidecar_path(path).unlink()
    assert cache.lookup(plan.cache_key) is None


def test_lookup_misses_when_sidecar_key_differs(model: Path, tmp_path: Path) -> None:
    plan, cache, path = _built(model, tmp_path)
    side = tc.sidecar_path(path)
    side.write_text(json.dumps({**json.loads(side.read_text()), "key": "0" * 64}))
    assert cache.lookup(plan.cache_key) is None


def test_lookup_misses_when_cached_engine_file_was_damaged(model: Path, tmp_path: Path) -> None:
    plan, cache, path = _built(model, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the sidecar still says the right key
    path.write_bytes(bytes(data))
    assert cache.lookup(plan.cache_key) is None


def test_lookup_misses_when_sidecar_predates_engine_checksums(model: Path, tmp_path: Path) -> None:
    plan, cache, path = _built(model, tmp_path)
    side = tc.sidecar_path(path)
    old = {k: v for k, v in json.loads(side.read_text()).items() if k != "engine_sha256"}
    side.write_text(json.dumps(old))
    assert cache.lookup(plan.cache_key) is None


def test_check_passes_when_engine_was_built_for_this_target(model: Path, tmp_path: Path) -> None:
    _, _, path = _built(model, tmp_path)
    EngineCache.check(path, ORIN)
    EngineCache.check(path, dataclasses.replace(ORIN, trt_version="10.3"))  # same version


@pytest.mark.parametrize(
    ("here", "says"),
    [
        (dataclasses.replace(ORIN, trt_version="10.7.0"), "TensorRT version 10.3.0 vs 10.7.0"),
        (TrtTarget("10.3.0", "Xavier", "7.2"), "device Orin vs Xavier"),
        (dataclasses.replace(ORIN, compute_capability="8.6"), "compute capability 8.7 vs 8.6"),
    ],
    ids=["trt-version", "gpu", "compute-capability"],
)
def test_check_raises_catalog_error_when_engine_is_from_another_target(
    model: Path, tmp_path: Path, here: TrtTarget, says: str
) -> None:
    _, _, path = _built(model, tmp_path)
    with pytest.raises(CatalogError) as err:
        EngineCache.check(path, here)
    assert says in err.value.message
    assert "not portable" in err.value.message
    assert "edge-service build --backend tensorrt" in err.value.message


def test_check_raises_catalog_error_when_sidecar_is_missing(model: Path, tmp_path: Path) -> None:
    _, _, path = _built(model, tmp_path)
    tc.sidecar_path(path).unlink()
    with pytest.raises(CatalogError, match="no sidecar"):
        EngineCache.check(path, ORIN)


def test_check_raises_catalog_error_when_sidecar_target_was_edited(
    model: Path, tmp_path: Path
) -> None:
    _, _, path = _built(model, tmp_path)
    side = tc.sidecar_path(path)
    data = json.loads(side.read_text())
    data["target"]["trt_version"] = "10.7.0"  # claims to fit a newer TensorRT
    side.write_text(json.dumps(data))
    with pytest.raises(CatalogError, match="does not match its own key"):
        EngineCache.check(path, dataclasses.replace(ORIN, trt_version="10.7.0"))


# --- build_engine against a recording fake of tensorrt -----------------------------------


def test_build_engine_calls_tensorrt_10_api_in_order_when_building_int8(
    model: Path, tmp_path: Path
) -> None:
    plan = _plan(model, tmp_path, "int8", max_batch=8, opt_batch=4, workspace_mb=64)
    fake = FakeTrt()
    out = tb.build_engine(plan, model, tmp_path / "e.engine", fake.module())
    assert fake.names() == [
        "Logger",
        "Builder",
        "create_network",
        "parse_from_file",
        "set_memory_pool_limit",
        "set_flag",
        "set_flag",
        "add_optimization_profile",
        "create_timing_cache",
        "set_timing_cache",
        "build_serialized_network",
    ]
    calls = fake.calls
    assert ("create_network", 0) in calls  # explicit batch is the only mode in TensorRT 10
    assert ("set_memory_pool_limit", "WORKSPACE", 64 * 1024 * 1024) in calls
    assert [c[1] for c in calls if c[0] == "set_flag"] == ["INT8", "FP16"]
    profile = next(c[1] for c in calls if c[0] == "add_optimization_profile")
    assert profile == {"input": ((1, *CHW), (4, *CHW), (8, *CHW))}
    assert out.read_bytes() == b"ENGINE-BYTES"


def test_build_engine_writes_sidecar_with_key_and_target_when_built(
    model: Path, tmp_path: Path
) -> None:
    plan, _, path = _built(model, tmp_path)
    side = json.loads(tc.sidecar_path(path).read_text())
    assert side["key"] == plan.cache_key
    assert side["target"] == {
        "trt_version": "10.3.0",
        "device_name": "Orin",
        "compute_capability": "8.7",
    }
    assert side["precision"] == "fp16"
    assert side["profile"] == [[1, *CHW], [1, *CHW], [16, *CHW]]
    assert side["built_at"]


def test_build_engine_saves_and_reloads_timing_cache_when_built_twice(
    model: Path, tmp_path: Path
) -> None:
    plan = _plan(model, tmp_path)
    tb.build_engine(plan, model, tmp_path / "a.engine", FakeTrt().module())
    assert plan.timing_cache.read_bytes() == b"+timings"
    second = FakeTrt()
    tb.build_engine(plan, model, tmp_path / "b.engine", second.module())
    assert ("create_timing_cache", b"+timings") in second.calls
    assert plan.timing_cache.read_bytes() == b"+timings+timings"


def test_build_engine_raises_build_error_with_parser_errors_when_onnx_is_rejected(
    model: Path, tmp_path: Path
) -> None:
    fake = FakeTrt(parse_errors=("node 3 (Foo): unsupported op", "node 7: bad shape"))
    out = tmp_path / "e.engine"
    with pytest.raises(BuildError) as err:
        tb.build_engine(_plan(model, tmp_path), model, out, fake.module())
    assert "unsupported op" in err.value.message and "bad shape" in err.value.message
    assert not out.exists() and not tc.sidecar_path(out).exists()


def test_build_engine_raises_build_error_when_tensorrt_returns_no_engine(
    model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "e.engine"
    with pytest.raises(BuildError, match="could not build"):
        tb.build_engine(_plan(model, tmp_path), model, out, FakeTrt(build_ok=False).module())
    assert not out.exists()


def test_build_engine_raises_build_error_when_onnx_changed_after_planning(
    model: Path, tmp_path: Path
) -> None:
    plan = _plan(model, tmp_path)
    model.write_bytes(b"edited")
    with pytest.raises(BuildError, match="changed"):
        tb.build_engine(plan, model, tmp_path / "e.engine", FakeTrt().module())


def test_build_or_reuse_skips_tensorrt_when_cache_hits(model: Path, tmp_path: Path) -> None:
    plan, cache, path = _built(model, tmp_path)
    fake = FakeTrt()
    assert tb.build_or_reuse(plan, model, cache, fake.module()) == path
    assert fake.calls == []


def test_build_or_reuse_builds_into_cache_when_cache_misses(model: Path, tmp_path: Path) -> None:
    plan = _plan(model, tmp_path)
    cache = EngineCache(tmp_path / "engines")
    fake = FakeTrt()
    path = tb.build_or_reuse(plan, model, cache, fake.module())
    assert "build_serialized_network" in fake.names()
    assert cache.lookup(plan.cache_key) == path


# --- this machine has no TensorRT ---------------------------------------------------------


def test_tensorrt_available_is_false_when_tensorrt_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt now fails
    assert tc.tensorrt_available() is False


def test_tensorrt_available_is_false_when_pycuda_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", ModuleType("tensorrt"))
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    assert tc.tensorrt_available() is False


def test_detect_target_raises_build_error_with_fallback_when_tensorrt_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BuildError) as err:
        tc.detect_target()
    message = err.value.message
    assert "TensorRT is not available" in message
    assert "ONNX Runtime" in message
    assert "JetPack" in message and ".[jetson]" in message
