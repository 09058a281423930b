"""ONNX export with a dynamic batch axis (needs the ``train`` extra).

Exporter: torch's ``torch.export``-based exporter (``dynamo=True``, the default since
torch 2.9), opset 18: TensorRT 10.x (JetPack 6) and ONNX Runtime >= 1.17 both read it.
The export is checked with the ONNX checker and shape inference before it is kept.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge_service.errors import BuildError
from edge_service.fsutil import atomic_write_with

log = logging.getLogger(__name__)
OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_BATCH = 64


def export_onnx(
    model: object,
    path: Path,
    input_size: int,
    in_channels: int = 1,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (a torch module) in eval mode to ``path``; returns the path."""
    try:
        import onnx
        import torch
    except ImportError as exc:
        raise BuildError(
            "exporting to ONNX needs torch and onnx: pip install -e '.[train]'"
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise BuildError(f"export_onnx takes a torch module, got {type(model).__name__}")
    model.eval()
    # A batch of 2 keeps torch.export from specialising the dynamic axis to 1.
    example = torch.zeros(2 if dynamic_batch else 1, in_channels, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    arg = next(iter(inspect.signature(model.forward).parameters))
    dynamic = {arg: {0: batch}} if dynamic_batch else None

    def write(tmp: Path) -> None:
        dynamo_export(model, example, tmp, (INPUT_NAME, OUTPUT_NAME), dynamic)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(onnx.shape_inference.infer_shapes(proto), str(tmp))

    checked_write(path, write, "ONNX export")
    batch_desc = f"dynamic batch 1..{MAX_BATCH}" if dynamic_batch else "batch 1"
    log.debug("exported %s (opset %d, %s)", path, OPSET, batch_desc)
    return path


def checked_write(path: Path, write: Callable[[Path], None], what: str) -> None:
    """`atomic_write_with`, any failure but a BuildError reported as one naming ``what``
    (the exporters raise anything from torch, onnx and ONNX Runtime)."""
    try:
        atomic_write_with(path, write)
    except BuildError:
        raise
    except Exception as exc:
        raise BuildError(f"{what} to {path} failed: {exc}") from exc


def dynamo_export(
    model: object,
    example: object,
    path: Path,
    names: tuple[str, str],
    dynamic_shapes: Mapping[str, Mapping[int, Any]] | None,
) -> None:
    """``torch.onnx.export`` with the ``torch.export``-based exporter at this project's
    opset, one input and one output named ``names``, written to ``path`` (unchecked)."""
    import torch

    program = torch.onnx.export(
        model,  # type: ignore[arg-type]
        (example,),
        input_names=[names[0]],
        output_names=[names[1]],
        dynamic_shapes=None if dynamic_shapes is None else dict(dynamic_shapes),
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    if program is None:
        raise BuildError("torch.onnx.export returned no program")
    program.save(str(path))
