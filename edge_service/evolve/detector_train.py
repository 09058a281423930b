"""Training :class:`~edge_service.evolve.detector.YoloV8`: an anchor-free loss, multi-scale.

Assignment: each ground-truth box goes to one stride level by its size (longest side
<= 64 px: stride 8, <= 128 px: 16, else 32); there, the cells whose centre lies inside the
box and within 2.5 strides of the box centre are positive (the cell holding the centre
always is); a cell claimed by two boxes takes the smaller.

Loss, normalised by the number of positive cells: BCE on the scores of every cell, with
target ``0.5 + 0.5 * IoU`` (the predicted box's IoU with its ground truth, detached) for
the true class at positive cells and 0 elsewhere, so a better-placed box scores higher;
GIoU and L1 on the decoded boxes (the DFL softmax expectations); DFL on the bins around
each side's distance. The v5 head puts that target on objectness and trains its class
scores on positive cells only (score = objectness x class).

Frames go through the server's own detection preprocessing
(:func:`edge_service.data.letterbox.letterbox`: RGB, aspect kept, grey 114 padding, /255),
after random crops, flips and brightness / contrast changes; each step draws one input
size from ``sizes``. An EMA of the weights is what the model holds at the end.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from edge_service.data.letterbox import letterbox
from edge_service.evolve.detector import REG_MAX, STRIDES, YoloV8, anchors

log = logging.getLogger(__name__)
LEVEL_LIMITS = (64.0, 128.0)  # longest side (input pixels) up to which stride 8, 16 is used
CENTRE_RADIUS = 2.5  # positive cells lie within this many strides of the box centre
WEIGHTS = {"cls": 1.0, "giou": 2.0, "l1": 0.2, "dfl": 0.5}


@dataclass
class DetectorTrainResult:
    """What a run did: steps taken, seconds, the total loss of every step, and the mean
    of each loss part over the last 10% of steps."""

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise IoU of ``(..., 4)`` xyxy boxes."""
    return _iou_terms(a, b, eps)[0]


def _iou_terms(
    a: torch.Tensor, b: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inter = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(0)
    inter_area = inter[..., 0] * inter[..., 1]
    size_a, size_b = (a[..., 2:] - a[..., :2]).clamp(0), (b[..., 2:] - b[..., :2]).clamp(0)
    union = size_a[..., 0] * size_a[..., 1] + size_b[..., 0] * size_b[..., 1] - inter_area + eps
    hull = torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])
    return inter_area / union, union, hull[..., 0] * hull[..., 1] + eps


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``1 - GIoU`` of ``(..., 4)`` xyxy boxes, element-wise."""
    iou, union, hull = _iou_terms(pred, target, eps)
    return 1 - iou + (hull - union) / hull


def dfl_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss of ``logits`` (M, 4, reg_max) for distances ``target``
    (M, 4) in stride units: cross-entropy on the two bins around each, linearly weighted.
    Returns (M,)."""
    target = target.clamp(0, REG_MAX - 1 - 0.01)
    left = target.floor().long()
    w_right = (target - left).reshape(-1)
    flat = logits.reshape(-1, REG_MAX)
    ce_left = F.cross_entropy(flat, left.reshape(-1), reduction="none")
    ce_right = F.cross_entropy(flat, (left + 1).reshape(-1), reduction="none")
    loss = ce_left * (1 - w_right) + ce_right * w_right
    return loss.view(target.shape).mean(-1)


def assign(
    centres: torch.Tensor, strides: torch.Tensor, gt: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive cells of one image: ``centres`` (N, 2), ``strides`` (N,), ``gt`` (G, 5)
    rows ``class, x1, y1, x2, y2``. Returns a bool mask (N,) and, per cell, the index of
    its ground truth (N,), meaningful where the mask is set."""
    n = centres.shape[0]
    if gt.shape[0] == 0:
        return torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long)
    boxes = gt[:, 1:]
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    side = wh.max(1).values
    level_stride = torch.full_like(side, float(STRIDES[2]))
    level_stride[side <= LEVEL_LIMITS[1]] = float(STRIDES[1])
    level_stride[side <= LEVEL_LIMITS[0]] = float(STRIDES[0])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    same_level = strides[None, :] == level_stride[:, None]  # (G, N)
    offset = (centres[None, :, :] - centre[:, None, :]).abs()  # (G, N, 2)
    near = (offset < CENTRE_RADIUS * strides[None, :, None]).all(-1)
    inside = (centres[None] > boxes[:, None, :2]).all(-1) & (
        centres[None] < boxes[:, None, 2:]
    ).all(-1)
    holds_centre = (offset <= strides[None, :, None] / 2).all(-1)
    cand = same_level & ((near & inside) | holds_centre)
    area = (wh[:, 0] * wh[:, 1])[:, None].expand_as(cand)
    cost = torch.where(cand, area, torch.full_like(area, math.inf))
    best_cost, best = cost.min(0)
    return torch.isfinite(best_cost), best


def detection_loss(
    model: YoloV8, raw: list[torch.Tensor], targets: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of ``model``'s raw maps for ``targets`` (one (G, 5) tensor per image, rows
    ``class, x1, y1, x2, y2`` in input pixels). Returns the total and its parts."""
    batch = raw[0].shape[0]
    xywh, logits = model.decode(raw)  # (B, 4, N), (B, C, N)
    pred = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    pred = pred.transpose(1, 2)  # (B, N, 4)
    box_logits = torch.cat([r.flatten(2) for r in raw], 2)[:, : 4 * REG_MAX]
    box_logits = box_logits.reshape(batch, 4, REG_MAX, -1).permute(0, 3, 1, 2)  # (B,N,4,R)
    centres, strides = anchors(raw)
    centres, strides = centres[0].T.detach(), strides[0, 0].detach()
    nc = model.num_classes
    parts = {k: torch.zeros(()) for k in WEIGHTS}
    num_pos = 0
    for b, gt in enumerate(targets):
        mask, idx = assign(centres, strides, gt)
        pos = int(mask.sum())
        num_pos += pos
        score_target = torch.zeros_like(logits[b])  # (C, N)
        if pos:
            gt_box = gt[idx[mask], 1:]
            gt_cls = gt[idx[mask], 0].long()
            p_box = pred[b, mask]
            iou = box_iou_xyxy(p_box.detach(), gt_box).clamp(0, 1)
            quality = 0.5 + 0.5 * iou
            cols = mask.nonzero().squeeze(1)
            if model.head == "v8":
                score_target[gt_cls, cols] = quality
            else:
                score_target[0, cols] = quality
                onehot = F.one_hot(gt_cls, nc).to(logits.dtype).T  # (nc, P)
                parts["cls"] = parts["cls"] + _bce(logits[b, 1:, cols], onehot) / nc
            s = strides[mask][:, None]
            c = centres[mask]
            ltrb_t = torch.cat([c - gt_box[:, :2], gt_box[:, 2:] - c], 1) / s
            ltrb_p = torch.cat([c - p_box[:, :2], p_box[:, 2:] - c], 1) / s
            parts["giou"] = parts["giou"] + giou_loss(p_box, gt_box).sum()
            parts["l1"] = parts["l1"] + (ltrb_p - ltrb_t).abs().mean(1).sum()
            parts["dfl"] = parts["dfl"] + dfl_loss(box_logits[b, mask], ltrb_t).sum()
        score_logits = logits[b] if model.head == "v8" else logits[b, :1]
        score_t = score_target if model.head == "v8" else score_target[:1]
        parts["cls"] = parts["cls"] + _bce(score_logits, score_t)
    norm = max(num_pos, 1)
    total = sum((WEIGHTS[k] * v / norm for k, v in parts.items()), torch.zeros(()))
    return total, {k: float(v.detach()) / norm for k, v in parts.items()} | {"positives": num_pos}


def _augment(
    rgb: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, min_crop: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random crop (same aspect, side fraction in ``min_crop``..1), horizontal flip and
    brightness / contrast. ``boxes`` (G, 5) ``class, x1, y1, x2, y2`` in frame pixels;
    boxes less than 40% visible after the crop are dropped."""
    h, w = rgb.shape[:2]
    frac = rng.uniform(min_crop, 1.0)
    cw, ch = max(8, round(w * frac)), max(8, round(h * frac))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = rgb[y0 : y0 + ch, x0 : x0 + cw]
    b = boxes.astype(np.float64).copy()
    if len(b):
        area = (b[:, 3] - b[:, 1]) * (b[:, 4] - b[:, 2])
        b[:, [1, 3]] = np.clip(b[:, [1, 3]] - x0, 0, cw)
        b[:, [2, 4]] = np.clip(b[:, [2, 4]] - y0, 0, ch)
        kept = (b[:, 3] - b[:, 1]) * (b[:, 4] - b[:, 2])
        b = b[kept >= 0.4 * np.maximum(area, 1e-6)]
    if rng.random() < 0.5:
        out = out[:, ::-1]
        b[:, [1, 3]] = cw - b[:, [3, 1]]
    gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
    out = np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), b


def make_batch(
    frames: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    indices: Sequence[int],
    size: int,
    rng: np.random.Generator | None = None,
    min_crop: float = 0.6,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Letterboxed ``(B, 3, size, size)`` float input in 0..1 and per-image targets
    ``(G, 5)`` in input pixels; augmented when ``rng`` is given."""
    images, targets = [], []
    for i in indices:
        rgb, b = frames[i], np.asarray(boxes[i], np.float64).reshape(-1, 5)
        if rng is not None:
            rgb, b = _augment(rgb, b, rng, min_crop)
        square, geometry = letterbox(rgb, size)
        if len(b):
            b = np.concatenate([b[:, :1], geometry.map(b[:, 1:])], 1)
            b = b[((b[:, 3] - b[:, 1]) >= 2) & ((b[:, 4] - b[:, 2]) >= 2)]
        images.append(square)
        targets.append(torch.as_tensor(b, dtype=torch.float32).reshape(-1, 5))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(), targets


def _with_classes(
    boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray] | None
) -> list[np.ndarray]:
    out = []
    for i, b in enumerate(boxes):
        xyxy = np.asarray(b, np.float64).reshape(-1, 4)
        cls = np.zeros(len(xyxy)) if classes is None else np.asarray(classes[i], np.float64)
        if cls.shape != (len(xyxy),):
            raise ValueError(f"frame {i}: {len(xyxy)} boxes but classes of shape {cls.shape}")
        out.append(np.concatenate([cls[:, None], xyxy], 1))
    return out


def train_detector(
    model: YoloV8,
    frames: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    sizes: Sequence[int],
    steps: int,
    *,
    classes: Sequence[np.ndarray] | None = None,
    batch_size: int = 8,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    augment: bool = True,
    min_crop: float = 0.6,
    ema_decay: float = 0.998,
    max_seconds: float | None = None,
    seed: int = 0,
    bn_batches: int = 10,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> DetectorTrainResult:
    """Train ``model`` in place for ``steps`` steps (or until ``max_seconds``).

    ``frames``: (H, W, 3) uint8 RGB images; ``boxes``: per frame (G, 4) ``x1, y1, x2, y2``
    in frame pixels; ``classes``: per frame (G,) class indices (default: all 0); ``sizes``:
    input sides, multiples of 32, one drawn per step. AdamW with a warm-up and a cosine
    decay over the run (by steps or by time, whichever is further along). The model ends in
    eval mode holding the EMA weights (``ema_decay`` 0: the last weights), its BatchNorm
    statistics re-estimated over ``bn_batches`` fresh batches (:func:`recalibrate_bn`).
    """
    if len(frames) != len(boxes) or not frames:
        raise ValueError(f"need frames and one box array per frame: {len(frames)}, {len(boxes)}")
    if not sizes or any(s % 32 or s < 32 for s in sizes):
        raise ValueError(f"sizes must be multiples of 32, got {list(sizes)}")
    labelled = _with_classes(boxes, classes)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
    )
    ema = copy.deepcopy(model).eval() if ema_decay > 0 else None
    warmup = max(1, min(100, steps // 10))
    result = DetectorTrainResult(steps=0, seconds=0.0)
    history: list[dict[str, float]] = []
    order: list[int] = []
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        elapsed = time.perf_counter() - start
        if max_seconds is not None and elapsed >= max_seconds:
            break
        progress = max(step / steps, elapsed / max_seconds if max_seconds else 0.0)
        scale = min(1.0, (step + 1) / warmup) * (
            0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
        )
        for group in opt.param_groups:
            group["lr"] = lr * scale
        if len(order) < batch_size:
            order.extend(rng.permutation(len(frames)).tolist())
        picked, order = order[:batch_size], order[batch_size:]
        size = int(rng.choice(np.asarray(sizes)))
        x, targets = make_batch(frames, labelled, picked, size, rng if augment else None, min_crop)
        raw = model(x)
        assert isinstance(raw, list)
        loss, parts = detection_loss(model, raw, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if ema is not None:
            _ema_update(ema, model, ema_decay * (1 - math.exp(-(step + 1) / 100)))
        parts = parts | {"loss": float(loss.detach()), "size": size, "lr": lr * scale}
        history.append(parts)
        result.losses.append(parts["loss"])
        if on_step is not None:
            on_step(step, parts)
    result.steps = len(history)
    result.seconds = time.perf_counter() - start
    tail = history[-max(1, len(history) // 10) :]
    result.final = {k: float(np.mean([h[k] for h in tail])) for k in tail[0]} if tail else {}
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    if bn_batches and result.steps:
        batches = (
            make_batch(
                frames,
                labelled,
                rng.permutation(len(frames))[:batch_size].tolist(),
                int(rng.choice(np.asarray(sizes))),
                rng if augment else None,
                min_crop,
            )[0]
            for _ in range(bn_batches)
        )
        recalibrate_bn(model, batches)
    model.eval()
    return result


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running mean and variance as the plain average over
    ``batches`` (train-mode forwards, no gradients), so eval mode matches the weights."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for x in batches:
        model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, d: float) -> None:
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(d).add_(m.detach(), alpha=1 - d)
        else:
            e.copy_(m)
