"""TensorRT engine: a serialized TensorRT 10 engine run through pycuda buffers (Jetson).

``load`` first checks the engine's sidecar against this machine (TensorRT engines are not
portable across TensorRT versions or GPUs), then creates its own CUDA context, execution
context, stream and page-locked buffers sized for the profile's largest batch. The CUDA
context is pushed around each call and popped after, so the engine works from any thread
(the server's pool calls it from worker threads); a lock serializes calls because one
execution context and one set of buffers serve them all. Batches larger than the profile's
maximum are run in slices.

``tensorrt`` and ``pycuda`` are imported inside ``load`` only, so this module imports
anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_service.errors import BuildError, EdgeServiceError, EngineError
from edge_service.runtime.engine import EngineBase, EngineInfo
from edge_service.runtime.trt_cache import EngineCache, TrtTarget, detect_target

log = logging.getLogger(__name__)


@dataclass
class _Cuda:
    """The CUDA and TensorRT objects one loaded engine owns (freed together in close)."""

    cuda: Any
    context: Any
    runtime: Any  # kept alive: TensorRT wants the runtime to outlive its engines
    engine: Any
    execution: Any
    stream: Any
    host_in: np.ndarray
    host_out: np.ndarray
    device_in: Any
    device_outs: tuple[Any, ...]  # one per output; only the first is copied back
    max_batch: int


class TrtEngine(EngineBase):
    """One serialized TensorRT engine, run on GPU 0."""

    backend = "tensorrt"

    def __init__(
        self,
        path: Path,
        *,
        variant_id: str,
        precision: str,
        target_check: bool = True,
        target: TrtTarget | None = None,
    ) -> None:
        """``target`` is this machine's TensorRT + GPU; None detects it at ``load``."""
        self.path = path
        self.variant_id = variant_id
        self.precision = precision
        self.target_check = target_check
        self.target = target
        self._lock = threading.Lock()
        self._cuda: _Cuda | None = None
        self._info: EngineInfo | None = None

    def load(self) -> None:
        """Check the sidecar, then deserialize and allocate (idempotent).

        A foreign engine is refused with CatalogError before CUDA is touched.
        """
        if self._cuda is not None:
            return
        if not self.path.is_file():
            raise EngineError(f"TensorRT engine {self.path} does not exist; build it first")
        if self.target_check:
            EngineCache.check(self.path, self.target or self._detect_target())
        trt, cuda = _import_runtime()
        context = _make_context(cuda)
        try:
            self._cuda, self._info = self._setup(trt, cuda, context)
        except EdgeServiceError:
            _drop_context(context)
            raise
        except Exception as exc:  # pycuda / TensorRT raise their own error types
            _drop_context(context)
            raise EngineError(f"cannot load TensorRT engine {self.path}: {exc}") from exc
        context.pop()
        log.debug("loaded %s from %s", self.variant_id, self.path)

    def _detect_target(self) -> TrtTarget:
        try:
            return detect_target()
        except BuildError as exc:
            raise EngineError(
                f"cannot load TensorRT engine {self.variant_id}: {exc.message}; "
                "serve the ONNX Runtime engines instead"
            ) from exc

    def _setup(self, trt: Any, cuda: Any, context: Any) -> tuple[_Cuda, EngineInfo]:
        """Deserialize the engine and allocate buffers for the profile's largest batch."""
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = self._deserialize(runtime)
        inp, outs = _io_names(trt, engine)
        state = _allocate(trt, cuda, context, engine, inp, outs)
        state.runtime = runtime
        info = EngineInfo(
            variant_id=self.variant_id,
            backend=self.backend,
            precision=self.precision,
            input_name=inp,
            input_shape=tuple(d if d >= 0 else "batch" for d in engine.get_tensor_shape(inp)),
            output_names=outs,
            providers=("TensorRT",),
        )
        return state, info

    def _deserialize(self, runtime: Any) -> Any:
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EngineError(
                f"TensorRT cannot deserialize {self.path} (corrupt, or built by another "
                "TensorRT); rebuild it with `edge-service build --backend tensorrt`"
            )
        return engine

    def info(self) -> EngineInfo:
        """What the loaded engine takes and returns."""
        if self._info is None:
            raise EngineError(f"engine {self.variant_id} is not loaded; call load() first")
        return self._info

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with self._lock, self._current() as state:
            step = state.max_batch
            parts = [self._run(state, batch[i : i + step]) for i in range(0, len(batch), step)]
        if not parts:
            return np.empty((0, *state.host_out.shape[1:]), dtype=state.host_out.dtype)
        return np.concatenate(parts)

    @contextmanager
    def _current(self) -> Iterator[_Cuda]:
        """The engine's state with its CUDA context pushed on this thread."""
        state = self._cuda
        if state is None:
            raise EngineError(f"engine {self.variant_id} is closed; load() it again")
        state.context.push()
        try:
            yield state
        finally:
            state.context.pop()

    def _run(self, state: _Cuda, batch: np.ndarray) -> np.ndarray:
        """One slice of at most ``max_batch`` rows: H2D, execute, D2H, synchronize."""
        n, info = len(batch), self.info()
        state.execution.set_input_shape(info.input_name, batch.shape)
        host_in, host_out = state.host_in[:n], state.host_out[:n]
        np.copyto(host_in, batch, casting="same_kind")
        state.cuda.memcpy_htod_async(state.device_in, host_in, state.stream)
        if not state.execution.execute_async_v3(state.stream.handle):
            raise EngineError(
                f"{self.variant_id} failed to run on TensorRT (see its log); "
                "reload the engine or serve the ONNX Runtime one"
            )
        state.cuda.memcpy_dtoh_async(host_out, state.device_outs[0], state.stream)
        state.stream.synchronize()
        return np.array(host_out, dtype=np.float32)  # a copy: the buffer is reused

    def close(self) -> None:
        """Free the buffers and the CUDA context; further ``infer`` calls fail."""
        with self._lock:
            state, self._cuda = self._cuda, None
        if state is None:
            return
        state.context.push()
        try:
            _free(state)
        finally:
            _drop_context(state.context)
        log.debug("closed %s", self.variant_id)


def _import_runtime() -> tuple[Any, Any]:
    """``tensorrt`` and ``pycuda.driver``, or EngineError saying what to install."""
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except (ImportError, OSError) as exc:
        raise EngineError(
            f"TensorRT engines need tensorrt and pycuda ({exc}): on a Jetson they come with "
            "JetPack (python3-libnvinfer) + pip install -e '.[jetson]'; elsewhere serve the "
            "ONNX Runtime engines"
        ) from exc
    return trt, cuda


def _io_names(trt: Any, engine: Any) -> tuple[str, tuple[str, ...]]:
    """The engine's one input and its outputs, by name; EngineError if not one input."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    if len(inputs) != 1 or not outputs:
        raise EngineError(
            f"TensorRT engine has inputs {inputs} and outputs {list(outputs)}; edge-service "
            "serves one image input and at least one output"
        )
    return inputs[0], outputs


def _make_context(cuda: Any) -> Any:
    """A new CUDA context on GPU 0, pushed (current on this thread)."""
    try:
        cuda.init()
        return cuda.Device(0).make_context()
    except Exception as exc:  # pycuda.driver.Error and friends
        raise EngineError(
            f"cannot open GPU 0 ({exc}); check the CUDA driver (nvidia-smi / tegrastats) "
            "or serve the ONNX Runtime engines"
        ) from exc


def _free(state: _Cuda) -> None:
    """Free buffers and TensorRT objects while their CUDA context is current."""
    for buffer in (state.device_in, *state.device_outs):
        buffer.free()
    for host in (state.host_in, state.host_out):
        getattr(host.base, "free", lambda: None)()  # pycuda's page-locked HostAllocation
    # Reverse order of creation: execution context, engine, runtime.
    state.execution = None
    state.engine = None
    state.runtime = None


def _drop_context(context: Any) -> None:
    """Pop ``context`` off this thread and release it."""
    context.pop()
    context.detach()


def _allocate(
    trt: Any, cuda: Any, context: Any, engine: Any, inp: str, outs: tuple[str, ...]
) -> _Cuda:
    """Execution context, stream, page-locked host and device buffers at the largest batch."""
    execution = engine.create_execution_context()
    max_shape = tuple(engine.get_tensor_profile_shape(inp, 0)[2])  # (min, opt, max)
    execution.set_input_shape(inp, max_shape)
    host_in = cuda.pagelocked_empty(max_shape, trt.nptype(engine.get_tensor_dtype(inp)))
    out_shape = tuple(execution.get_tensor_shape(outs[0]))
    host_out = cuda.pagelocked_empty(out_shape, trt.nptype(engine.get_tensor_dtype(outs[0])))
    device_in = cuda.mem_alloc(host_in.nbytes)
    execution.set_tensor_address(inp, int(device_in))
    return _Cuda(
        cuda=cuda,
        context=context,
        runtime=None,
        engine=engine,
        execution=execution,
        stream=cuda.Stream(),
        host_in=host_in,
        host_out=host_out,
        device_in=device_in,
        device_outs=tuple(_alloc_output(trt, cuda, engine, execution, o) for o in outs),
        max_batch=int(max_shape[0]),
    )


def _alloc_output(trt: Any, cuda: Any, engine: Any, execution: Any, name: str) -> Any:
    """Device memory for output ``name`` at the largest batch, bound to the context."""
    shape = tuple(execution.get_tensor_shape(name))
    nbytes = int(np.prod(shape)) * np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
    buffer = cuda.mem_alloc(max(nbytes, 1))
    execution.set_tensor_address(name, int(buffer))
    return buffer
