"""A YOLOv8-architecture detector in plain torch, and its ONNX export (the ``train`` extra).

The network follows Ultralytics' ``yolov8.yaml``: Conv-BN-SiLU blocks, C2f stages, SPPF,
a PAN-FPN neck and a decoupled, anchor-free head at strides 8, 16 and 32 whose box branch
predicts each side's distance from the cell centre as a distribution over ``reg_max`` = 16
bins (DFL; the distance is the softmax expectation). ``width`` and ``depth`` scale channels
and repeats as Ultralytics does: ``YoloV8(nc)`` (width 0.25, depth 0.33) is yolov8n.

Inference output (eval mode) is what an Ultralytics ONNX export gives, and what
:mod:`edge_service.runtime.detection` decodes:

* ``head="v8"``: ``(batch, 4 + nc, N)``: ``cx, cy, w, h`` in input pixels, then the
  sigmoid class scores;
* ``head="v5"``: ``(batch, N, 5 + nc)``: ``cx, cy, w, h, objectness`` then class scores
  (score = objectness x class), anchor-free like the v8 head.

``N = sum((H / s) * (W / s) for s in (8, 16, 32))``: any input whose sides are multiples
of 32 works, and :func:`export_detector` keeps batch, height and width dynamic. Inputs are
RGB in 0..1 (``/255``, no mean or std), letterboxed with grey 114 as the server does.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from edge_service.errors import BuildError
from edge_service.onnx_tools.export import checked_write, dynamo_export

log = logging.getLogger(__name__)
HeadKind = Literal["v8", "v5"]
STRIDES = (8, 16, 32)
REG_MAX = 16
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "output0"
MAX_SIDE = 2048  # largest exported height / width (a multiple of 32)


def make_divisible(x: float, divisor: int = 8) -> int:
    """The smallest multiple of ``divisor`` >= ``x`` (Ultralytics' channel rounding)."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> SiLU, padded to keep the size at stride 1."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.bn(self.conv(x)))
        return out


class Bottleneck(nn.Module):
    """Two 3x3 Convs, with a residual connection when ``shortcut`` and shapes allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions: split, ``n`` Bottlenecks, concat every output."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        out: torch.Tensor = self.cv2(torch.cat(y, 1))
        return out


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools, concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        out: torch.Tensor = self.cv2(torch.cat(y, 1))
        return out


def _branch(c1: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(Conv(c1, c_mid, 3), Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, c_out, 1))


class YoloV8(nn.Module):
    """YOLOv8 backbone, PAN-FPN neck and anchor-free head; see the module docstring.

    In training mode :meth:`forward` returns the raw per-level maps of :meth:`forward_raw`;
    in eval mode the decoded Ultralytics layout. ``labels`` is metadata kept with the model.
    """

    def __init__(
        self,
        num_classes: int,
        width: float = 0.25,
        depth: float = 0.33,
        head: HeadKind = "v8",
        max_channels: int = 1024,
        labels: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if head not in ("v8", "v5"):
            raise ValueError(f"head must be 'v8' or 'v5', got {head!r}")
        if width <= 0 or depth <= 0:
            raise ValueError(f"width and depth must be > 0, got {width}, {depth}")
        if labels and len(labels) != num_classes:
            raise ValueError(f"{len(labels)} labels for {num_classes} classes")
        self.num_classes, self.head, self.width, self.depth = num_classes, head, width, depth
        self.max_channels = max_channels
        self.labels = tuple(labels)
        ch = [make_divisible(min(c, max_channels) * width) for c in (64, 128, 256, 512, 1024)]
        n3, n6 = (max(round(n * depth), 1) for n in (3, 6))
        self.stem = nn.Sequential(Conv(3, ch[0], 3, 2), Conv(ch[0], ch[1], 3, 2))
        self.b2 = C2f(ch[1], ch[1], n3, True)
        self.b3 = nn.Sequential(Conv(ch[1], ch[2], 3, 2), C2f(ch[2], ch[2], n6, True))  # P3
        self.b4 = nn.Sequential(Conv(ch[2], ch[3], 3, 2), C2f(ch[3], ch[3], n6, True))  # P4
        self.b5 = nn.Sequential(
            Conv(ch[3], ch[4], 3, 2), C2f(ch[4], ch[4], n3, True), SPPF(ch[4], ch[4])
        )  # P5
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.top4 = C2f(ch[4] + ch[3], ch[3], n3)
        self.top3 = C2f(ch[3] + ch[2], ch[2], n3)  # out P3
        self.down3 = Conv(ch[2], ch[2], 3, 2)
        self.bot4 = C2f(ch[2] + ch[3], ch[3], n3)  # out P4
        self.down4 = Conv(ch[3], ch[3], 3, 2)
        self.bot5 = C2f(ch[3] + ch[4], ch[4], n3)  # out P5
        levels = (ch[2], ch[3], ch[4])
        c2 = max(16, levels[0] // 4, REG_MAX * 4)
        c3 = max(levels[0], min(num_classes, 100))
        self.score_channels = num_classes + (1 if head == "v5" else 0)  # v5: objectness first
        self.box_head = nn.ModuleList(_branch(c, c2, 4 * REG_MAX) for c in levels)
        self.cls_head = nn.ModuleList(_branch(c, c3, self.score_channels) for c in levels)
        self.proj: torch.Tensor
        self.register_buffer("proj", torch.arange(REG_MAX, dtype=torch.float32), persistent=False)
        self._init_biases()

    def _init_biases(self) -> None:
        """Ultralytics' prior: few objects per image, so low initial scores."""
        for box, cls, s in zip(self.box_head, self.cls_head, STRIDES, strict=True):
            box_out, cls_out = list(box.children())[-1], list(cls.children())[-1]
            assert isinstance(box_out, nn.Conv2d) and isinstance(cls_out, nn.Conv2d)
            assert box_out.bias is not None and cls_out.bias is not None
            nn.init.constant_(box_out.bias, 1.0)
            prior = math.log(5 / self.num_classes / (640 / s) ** 2)
            with torch.no_grad():
                if self.head == "v8":
                    cls_out.bias.fill_(prior)
                else:  # objectness gets the prior, classes YOLOv5's
                    cls_out.bias[0] = math.log(8 / (640 / s) ** 2)
                    cls_out.bias[1:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    def config(self) -> dict[str, object]:
        """What rebuilds this model: pass as keyword arguments to :class:`YoloV8`."""
        return {
            "num_classes": self.num_classes,
            "width": self.width,
            "depth": self.depth,
            "head": self.head,
            "max_channels": self.max_channels,
            "labels": list(self.labels),
        }

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The neck's three outputs, at strides 8, 16 and 32."""
        p3 = self.b3(self.b2(self.stem(x)))
        p4 = self.b4(p3)
        p5 = self.b5(p4)
        t4 = self.top4(torch.cat([self.up(p5), p4], 1))
        o3 = self.top3(torch.cat([self.up(t4), p3], 1))
        o4 = self.bot4(torch.cat([self.down3(o3), t4], 1))
        o5 = self.bot5(torch.cat([self.down4(o4), p5], 1))
        return [o3, o4, o5]

    def forward_raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per level ``(B, 4 * reg_max + score_channels, H / s, W / s)``: DFL box logits,
        then score logits (v5: objectness first)."""
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {x.shape}")
        return [
            torch.cat([box(f), cls(f)], 1)
            for f, box, cls in zip(self.features(x), self.box_head, self.cls_head, strict=True)
        ]

    def decode(self, raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes ``(B, 4, N)`` (cx, cy, w, h in input pixels) and score logits
        ``(B, score_channels, N)`` from :meth:`forward_raw`'s maps."""
        batch = raw[0].shape[0]
        flat = torch.cat([r.flatten(2) for r in raw], 2)
        centres, strides = anchors(raw)
        dist = flat[:, : 4 * REG_MAX].reshape(batch, 4, REG_MAX, -1).softmax(2)
        ltrb = (dist * self.proj.view(1, 1, REG_MAX, 1)).sum(2) * strides
        lt, rb = ltrb[:, :2], ltrb[:, 2:]
        x1y1, x2y2 = centres - lt, centres + rb
        xywh = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], 1)
        return xywh, flat[:, 4 * REG_MAX :]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        raw = self.forward_raw(x)
        if self.training:
            return raw
        xywh, logits = self.decode(raw)
        out = torch.cat([xywh, logits.sigmoid()], 1)
        return out if self.head == "v8" else out.transpose(1, 2)


def anchors(raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres ``(1, 2, N)`` in input pixels and their strides ``(1, 1, N)``, level by
    level, row-major, matching ``torch.cat([r.flatten(2) for r in raw], 2)``."""
    centres, strides = [], []
    for r, s in zip(raw, STRIDES, strict=True):
        h, w = r.shape[2], r.shape[3]
        ys = (torch.arange(h, dtype=r.dtype, device=r.device) + 0.5) * s
        xs = (torch.arange(w, dtype=r.dtype, device=r.device) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack([gx.reshape(-1), gy.reshape(-1)], 0))
        strides.append(torch.full_like(gx.reshape(1, -1), float(s)))
    return torch.cat(centres, 1)[None], torch.cat(strides, 1)[None]


def num_anchors(height: int, width: int) -> int:
    """``N`` of the output for an input of ``height`` x ``width`` (multiples of 32)."""
    return sum((height // s) * (width // s) for s in STRIDES)


def export_detector(model: YoloV8, path: Path, size: int = 640, dynamo: bool = False) -> Path:
    """Export ``model`` (eval mode) to ONNX at ``path``, opset 18, atomically.

    Input ``images`` ``[batch, 3, height, width]`` and output ``output0`` keep batch,
    height and width dynamic (sides: multiples of 32); ``size`` is the example input's
    side. The default is torch's TorchScript exporter with ``dynamic_axes``, as Ultralytics
    exports (about a second); ``dynamo=True`` uses the ``torch.export``-based one (sides up
    to 2048; much slower to export, same outputs). The file is checked with the ONNX
    checker and run once in ONNX Runtime before it is kept.
    """
    try:
        import onnx
    except ImportError as exc:
        raise BuildError("exporting needs torch and onnx: pip install -e '.[train]'") from exc
    if size % 32 or not 32 <= size <= MAX_SIDE:
        raise BuildError(f"export size must be a multiple of 32 in 32..{MAX_SIDE}, got {size}")
    was_training = model.training
    model.eval()

    def write(tmp: Path) -> None:
        (_export_dynamo if dynamo else _export_torchscript)(model, tmp, size)
        proto = onnx.load(str(tmp))
        _name_dims(proto, model.head, model.num_classes)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        _smoke_test(tmp, model.num_classes, model.head)

    try:
        checked_write(path, write, "detector export")
    finally:
        model.train(was_training)
    log.info("exported %s (opset %d, dynamic batch, height and width)", path, OPSET)
    return path


def _export_torchscript(model: YoloV8, tmp: Path, size: int) -> None:
    import warnings

    anchors_axis = 2 if model.head == "v8" else 1
    with warnings.catch_warnings():  # the exporter's deprecation notice, tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAME: {0: "batch", anchors_axis: "anchors"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def _export_dynamo(model: YoloV8, tmp: Path, size: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=64)
    rows = torch.export.Dim("rows", min=1, max=MAX_SIDE // 32)
    cols = torch.export.Dim("cols", min=1, max=MAX_SIDE // 32)
    # A batch of 2 keeps torch.export from specialising the batch axis to 1.
    example = torch.zeros(2, 3, size, size)
    dynamic = {"x": {0: batch, 2: 32 * rows, 3: 32 * cols}}
    dynamo_export(model, example, tmp, (INPUT_NAME, OUTPUT_NAME), dynamic)


def _name_dims(proto: object, head: HeadKind, num_classes: int) -> None:
    """Readable dynamic axes and a fixed score axis: images [batch, 3, height, width],
    output0 [batch, 4 + nc, anchors] (v8) or [batch, anchors, 5 + nc] (v5)."""
    graph = proto.graph  # type: ignore[attr-defined]
    out = (
        ("batch", 4 + num_classes, "anchors")
        if head == "v8"
        else ("batch", "anchors", 5 + num_classes)
    )
    names: dict[str, tuple[str | int, ...]] = {
        INPUT_NAME: ("batch", 3, "height", "width"),
        OUTPUT_NAME: out,
    }
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, names.get(value.name, ()), strict=False):
            if isinstance(name, int):
                dim.dim_value = name  # clears any dim_param (a oneof)
            elif not dim.HasField("dim_value"):
                dim.dim_param = name


def _smoke_test(path: Path, num_classes: int, head: HeadKind) -> None:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros((1, 3, 64, 96), np.float32)})
    n = num_anchors(64, 96)
    want = (1, 4 + num_classes, n) if head == "v8" else (1, n, 5 + num_classes)
    if tuple(out.shape) != want:
        raise BuildError(f"exported detector gives {out.shape} for a 64x96 input, want {want}")
