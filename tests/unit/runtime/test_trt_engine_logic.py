"""TrtEngine without a GPU: it refuses foreign engines before touching CUDA, says what to
install when TensorRT is absent, and moves batches through its buffers correctly, checked
against small fakes of the third-party ``tensorrt`` and ``pycuda.driver`` modules whose
"GPU" is a numpy matmul."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_service.compile.trt_builder import plan_build
from edge_service.errors import CatalogError, EngineError
from edge_service.runtime.engine import Engine
from edge_service.runtime.trt_cache import TrtTarget, sidecar_path, write_sidecar
from edge_service.runtime.trt_engine import TrtEngine

ORIN = TrtTarget(trt_version="10.3.0", device_name="Orin", compute_capability="8.7")
CHW = (1, 4, 4)
K = 3
MAX_BATCH = 4
WEIGHTS = np.arange(16 * K, dtype=np.float32).reshape(16, K) / 10


@pytest.fixture
def engine_file(tmp_path: Path) -> Path:
    """A stand-in engine file with a real sidecar saying it was built on ``ORIN``."""
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx stand-in")
    plan = plan_build(
        onnx,
        "fp16",
        ORIN,
        input_name="input",
        chw=CHW,
        max_batch=MAX_BATCH,
        timing_cache_dir=tmp_path,
        quantized=False,
    )
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized engine")
    write_sidecar(plan, path)
    return path


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any ``import tensorrt`` / ``import pycuda.driver`` now fails, as on this machine."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)


def _engine(path: Path, **kw: Any) -> TrtEngine:
    return TrtEngine(path, variant_id="base@fp16", precision="fp16", **kw)


# --- refusals before CUDA ---------------------------------------------------------------


def test_module_imports_when_tensorrt_and_pycuda_are_absent() -> None:
    code = (
        "import sys\n"
        "for m in ('tensorrt', 'pycuda', 'pycuda.driver'): sys.modules[m] = None\n"
        "import edge_service.runtime.trt_engine, edge_service.compile.trt_builder\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_trt_engine_is_an_engine_when_constructed(engine_file: Path) -> None:
    assert isinstance(_engine(engine_file), Engine)


@pytest.mark.parametrize(
    "here",
    [
        dataclasses.replace(ORIN, trt_version="10.7.0"),
        TrtTarget("10.3.0", "Xavier", "7.2"),
    ],
    ids=["other-tensorrt", "other-gpu"],
)
def test_load_raises_catalog_error_before_cuda_when_engine_is_foreign(
    engine_file: Path, no_tensorrt: None, here: TrtTarget
) -> None:
    # With tensorrt/pycuda unimportable, reaching CUDA would raise EngineError instead.
    with pytest.raises(CatalogError) as err:
        _engine(engine_file, target=here).load()
    assert "not portable" in err.value.message
    assert "edge-service build --backend tensorrt" in err.value.message


def test_load_raises_catalog_error_when_sidecar_is_missing(
    engine_file: Path, no_tensorrt: None
) -> None:
    sidecar_path(engine_file).unlink()
    with pytest.raises(CatalogError, match="no sidecar"):
        _engine(engine_file, target=ORIN).load()


def test_load_raises_engine_error_when_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        _engine(tmp_path / "absent.engine").load()


def test_load_raises_engine_error_with_advice_when_tensorrt_is_absent(
    engine_file: Path, no_tensorrt: None
) -> None:
    with pytest.raises(EngineError) as err:
        _engine(engine_file).load()  # target detected: needs tensorrt + pycuda
    assert "TensorRT is not available" in err.value.message
    assert "ONNX Runtime" in err.value.message


def test_load_raises_engine_error_with_advice_when_check_is_off_and_tensorrt_absent(
    engine_file: Path, no_tensorrt: None
) -> None:
    with pytest.raises(EngineError, match="JetPack"):
        _engine(engine_file, target_check=False).load()


def test_info_and_infer_raise_engine_error_when_not_loaded(engine_file: Path) -> None:
    engine = _engine(engine_file)
    with pytest.raises(EngineError, match="not loaded"):
        engine.info()
    with pytest.raises(EngineError):
        engine.infer(np.zeros((1, *CHW), np.float32))
    engine.close()  # closing an engine never loaded is a no-op


# --- buffer logic, against fakes of tensorrt and pycuda.driver ---------------------------


class FakeGpu:
    """Fake ``tensorrt`` + ``pycuda.driver`` modules sharing one fake device memory."""

    def __init__(self) -> None:
        self.memory: dict[int, bytearray] = {}
        self.freed: list[int] = []
        self.context_stack: list[str] = []
        self.batches: list[int] = []

    def cuda(self) -> ModuleType:
        gpu = self
        mod = ModuleType("pycuda.driver")

        class Context:
            def push(self) -> None:
                gpu.context_stack.append("ctx")

            def pop(self) -> None:
                gpu.context_stack.pop()

            def detach(self) -> None:
                gpu.context_stack.append("detached")

        class Device:
            def __init__(self, ordinal: int) -> None:
                assert ordinal == 0

            def make_context(self) -> Context:
                gpu.context_stack.append("ctx")
                return Context()

        class DeviceAllocation:
            def __init__(self, nbytes: int) -> None:
                self.address = len(gpu.memory) + 1
                gpu.memory[self.address] = bytearray(nbytes)

            def __int__(self) -> int:
                return self.address

            def free(self) -> None:
                gpu.freed.append(self.address)

        def htod(dev: DeviceAllocation, host: np.ndarray, stream: Any) -> None:
            gpu.memory[int(dev)][: host.nbytes] = host.tobytes()

        def dtoh(host: np.ndarray, dev: DeviceAllocation, stream: Any) -> None:
            raw = bytes(gpu.memory[int(dev)][: host.nbytes])
            host[...] = np.frombuffer(raw, host.dtype).reshape(host.shape)

        mod.__dict__.update(
            init=lambda: None,
            Device=Device,
            mem_alloc=DeviceAllocation,
            pagelocked_empty=np.empty,
            Stream=lambda: SimpleNamespace(handle=7, synchronize=lambda: None),
            memcpy_htod_async=htod,
            memcpy_dtoh_async=dtoh,
        )
        return mod

    def trt(self) -> ModuleType:
        gpu = self
        mod = ModuleType("tensorrt")
        modes = SimpleNamespace(INPUT="in", OUTPUT="out")

        class Execution:
            def __init__(self) -> None:
                self.shape: tuple[int, ...] = ()
                self.addresses: dict[str, int] = {}

            def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
                assert len(shape) == 4 and 1 <= shape[0] <= MAX_BATCH
                self.shape = tuple(shape)
                return True

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return self.shape if name == "input" else (self.shape[0], K)

            def set_tensor_address(self, name: str, address: int) -> bool:
                self.addresses[name] = address
                return True

            def execute_async_v3(self, stream_handle: int) -> bool:
                assert gpu.context_stack[-1] == "ctx", "CUDA context not current"
                n = self.shape[0]
                raw = gpu.memory[self.addresses["input"]][: n * 16 * 4]
                x = np.frombuffer(bytes(raw), np.float32).reshape(n, 16)
                out = (x @ WEIGHTS).astype(np.float32).tobytes()
                gpu.memory[self.addresses["logits"]][: len(out)] = out
                gpu.batches.append(n)
                return True

        class CudaEngine:
            num_io_tensors = 2

            def get_tensor_name(self, i: int) -> str:
                return ("input", "logits")[i]

            def get_tensor_mode(self, name: str) -> Any:
                return modes.INPUT if name == "input" else modes.OUTPUT

            def get_tensor_dtype(self, name: str) -> str:
                return "float32"

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return (-1, *CHW) if name == "input" else (-1, K)

            def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
                return [(1, *CHW), (1, *CHW), (MAX_BATCH, *CHW)]

            def create_execution_context(self) -> Execution:
                return Execution()

        class Runtime:
            def __init__(self, logger: Any) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> CudaEngine | None:
                return CudaEngine() if data == b"serialized engine" else None

        mod.__dict__.update(
            Logger=lambda severity: None,
            Runtime=Runtime,
            TensorIOMode=modes,
            nptype=np.dtype,
        )
        mod.Logger.WARNING = "WARNING"  # type: ignore[attr-defined]
        return mod


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    fake = FakeGpu()
    cuda = fake.cuda()
    monkeypatch.setitem(sys.modules, "tensorrt", fake.trt())
    monkeypatch.setitem(sys.modules, "pycuda", SimpleNamespace(driver=cuda))
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return fake


def test_infer_matches_reference_and_slices_batches_when_batch_exceeds_profile_max(
    engine_file: Path, gpu: FakeGpu
) -> None:
    batch = np.random.default_rng(0).standard_normal((10, *CHW)).astype(np.float32)
    with _engine(engine_file, target=ORIN) as engine:
        out = engine.infer(batch)
    np.testing.assert_allclose(out, batch.reshape(10, 16) @ WEIGHTS, rtol=1e-5)
    assert gpu.batches == [4, 4, 2]


def test_info_reports_tensorrt_backend_and_dynamic_batch_when_loaded(
    engine_file: Path, gpu: FakeGpu
) -> None:
    with _engine(engine_file, target=ORIN) as engine:
        info = engine.info()
    assert (info.backend, info.precision, info.input_name) == ("tensorrt", "fp16", "input")
    assert info.input_shape == ("batch", *CHW)
    assert info.output_names == ("logits",)


def test_close_frees_buffers_and_balances_context_when_engine_was_used(
    engine_file: Path, gpu: FakeGpu
) -> None:
    engine = _engine(engine_file, target=ORIN)
    engine.load()
    engine.infer(np.ones((2, *CHW), np.float32))
    assert gpu.context_stack == []  # popped after load and after each call
    engine.close()
    assert sorted(gpu.freed) == sorted(gpu.memory)
    assert gpu.context_stack == ["detached"]
    with pytest.raises(EngineError, match="closed"):
        engine.infer(np.ones((1, *CHW), np.float32))


def test_load_raises_engine_error_and_releases_context_when_engine_is_corrupt(
    engine_file: Path, gpu: FakeGpu
) -> None:
    engine_file.write_bytes(b"garbage")
    with pytest.raises(EngineError, match="cannot deserialize"):
        _engine(engine_file, target_check=False).load()
    assert gpu.context_stack == ["detached"]
