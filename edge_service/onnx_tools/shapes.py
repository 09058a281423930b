"""Input shapes of a user's ONNX file: read them, and fix a dynamic height and width.

A detector exported with dynamic axes (``images [batch, 3, height, width]``, as an
Ultralytics ``dynamic=True`` export gives) runs at any size a multiple of its largest
stride. :func:`fix_input_size` writes a copy whose height and width are fixed to one size,
with every tensor shape inferred again, so ONNX Runtime plans and folds that graph for
that size, and INT8 calibration sees the tensors it will serve. The batch axis stays
dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_service.errors import BuildError
from edge_service.fsutil import atomic_write_with

Dim = int | str  # a fixed size, or the name of a dynamic axis


@dataclass(frozen=True)
class InputDims:
    """The first input of a model: its name and NCHW dims (ints fixed, strings dynamic)."""

    name: str
    dims: tuple[Dim, ...]

    @property
    def dynamic_size(self) -> bool:
        """True when height or width is dynamic."""
        return len(self.dims) == 4 and not all(isinstance(d, int) for d in self.dims[2:])


def _dims(value_info: object) -> tuple[Dim, ...]:
    shape = value_info.type.tensor_type.shape  # type: ignore[attr-defined]
    out: list[Dim] = []
    for i, dim in enumerate(shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            out.append(int(dim.dim_value))
        else:
            out.append(dim.dim_param or f"dim{i}")
    return tuple(out)


def input_dims(path: Path) -> InputDims:
    """The first graph input that is not an initializer, read without loading weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, and more
        raise BuildError(f"{path} is not an ONNX model: {exc}") from exc
    weights = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in weights:
            return InputDims(value.name, _dims(value))
    raise BuildError(f"{path.name} has no input tensor")


def fix_input_size(src: Path, dst: Path, size: int, stride: int = 32) -> Path:
    """Copy ``src`` to ``dst`` with its first input's height and width fixed to ``size``.

    Refused with what to do when ``size`` is not a multiple of ``stride`` (a YOLO head's
    largest stride) or when the model does not infer shapes at that size.
    """
    import onnx

    if size < stride or size % stride:
        raise BuildError(
            f"--input-size {size}: use multiples of {stride} (the detector's largest "
            f"stride), e.g. 640,512,416,320"
        )
    model = onnx.load(str(src))
    weights = {init.name for init in model.graph.initializer}
    inp = next(v for v in model.graph.input if v.name not in weights)
    dims = inp.type.tensor_type.shape.dim
    for axis in (2, 3):
        dims[axis].Clear()
        dims[axis].dim_value = size
    del model.graph.value_info[:]  # stale intermediate shapes: inferred again below
    for out in model.graph.output:
        for dim in out.type.tensor_type.shape.dim:
            if not dim.HasField("dim_param") or dim.dim_param != dims[0].dim_param:
                dim.Clear()  # unknown until inferred at this size (the batch stays named)
    try:
        fixed = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        onnx.checker.check_model(fixed)
    except Exception as exc:  # onnx raises InferenceError, ValidationError, ...
        raise BuildError(
            f"{src.name} does not run at {size}x{size}: {exc}; pick sizes its layers accept"
        ) from exc
    atomic_write_with(dst, lambda tmp: onnx.save(fixed, str(tmp)))
    return dst
