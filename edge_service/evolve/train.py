"""Training the base model on Fashion-MNIST, through the shared preprocessing.

Augmentation (random shifts and horizontal flips) acts on the uint8 images *before*
:func:`edge_service.data.preprocess.preprocess`, so the tensors the network learns from are
made exactly as the served ones are.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_service.data.fashion import Split
from edge_service.data.preprocess import InputSpec, preprocess
from edge_service.evolve.model import ModelConfig, StagedCNN, count_params
from edge_service.fsutil import atomic_write_with

log = logging.getLogger(__name__)
WEIGHTS_FORMAT = "edge-service/staged-cnn/v1"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    max_shift: int = 2
    flip: bool = True
    seed: int = 0
    train_limit: int = 0  # 0: the whole train split; >0: a seeded subset (tiny runs, tests)
    threads: int = 0  # 0: torch's default
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass(frozen=True)
class TrainResult:
    """What a training run achieved."""

    test_top1: float
    epochs: int
    seconds: float
    params: int
    history: list[dict[str, float]]


def augment(images: np.ndarray, rng: np.random.Generator, max_shift: int, flip: bool) -> np.ndarray:
    """Random translation (zero padded) and horizontal flip of (N, H, W) uint8 images."""
    out: np.ndarray = images.copy()
    n, h, w = images.shape
    if flip:
        mask = rng.random(n) < 0.5
        out[mask] = out[mask, :, ::-1]
    if max_shift > 0:
        padded: np.ndarray = np.pad(out, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
        dy = np.asarray(rng.integers(0, 2 * max_shift + 1, size=n))
        dx = np.asarray(rng.integers(0, 2 * max_shift + 1, size=n))
        for i in range(n):
            y, x = int(dy[i]), int(dx[i])
            out[i] = padded[i, y : y + h, x : x + w]
    return out


def evaluate(model: nn.Module, split: Split, spec: InputSpec, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``split``."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            x = torch.from_numpy(preprocess(split.images[start : start + batch_size], spec))
            pred = model(x).argmax(dim=1).numpy()
            correct += int((pred == split.labels[start : start + batch_size]).sum())
    return correct / max(len(split), 1)


def train(
    cfg: TrainConfig,
    train_split: Split,
    test_split: Split,
    spec: InputSpec,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[StagedCNN, TrainResult]:
    """Train a fresh :class:`StagedCNN`; deterministic for a given seed and thread count."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = StagedCNN(cfg.model)
    return model, fit(model, cfg, train_split, test_split, spec, on_epoch)


def fit(
    model: nn.Module,
    cfg: TrainConfig,
    train_split: Split,
    eval_split: Split,
    spec: InputSpec,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    target: float | None = None,
) -> TrainResult:
    """Train ``model`` with the base recipe; stop early once top-1 on ``eval_split`` reaches
    ``target`` (if given). ``train_seconds`` in the history excludes evaluation time."""
    rng = np.random.default_rng(cfg.seed)
    data = train_split.subset(cfg.train_limit, cfg.seed) if cfg.train_limit else train_split
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[dict[str, float]] = []
    started, train_s = time.perf_counter(), 0.0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, data, spec, cfg, rng, opt, sched, loss_fn)
        train_s += time.perf_counter() - t0
        acc = evaluate(model, eval_split, spec)
        row = {
            "epoch": float(epoch),
            "loss": loss,
            "test_top1": acc,
            "seconds": time.perf_counter() - started,
            "train_seconds": train_s,
        }
        history.append(row)
        log.info("epoch %d/%d loss %.4f top-1 %.4f", epoch, cfg.epochs, loss, acc)
        if on_epoch:
            on_epoch(epoch, row)
        if target is not None and acc >= target:
            break
    return TrainResult(
        test_top1=history[-1]["test_top1"] if history else 0.0,
        epochs=len(history),
        seconds=time.perf_counter() - started,
        params=count_params(model),
        history=history,
    )


def _train_epoch(
    model: nn.Module,
    data: Split,
    spec: InputSpec,
    cfg: TrainConfig,
    rng: np.random.Generator,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
) -> float:
    model.train()
    order = rng.permutation(len(data))
    total, seen = 0.0, 0
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        images = augment(data.images[idx], rng, cfg.max_shift, cfg.flip)
        x = torch.from_numpy(preprocess(images, spec))
        y = torch.from_numpy(data.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


def save_weights(path: Path, model: StagedCNN, spec: InputSpec, meta: dict[str, object]) -> None:
    """Write the model's weights, config, input spec and training metadata atomically."""
    payload = {
        "format": WEIGHTS_FORMAT,
        "model_config": asdict(model.config),
        "input_spec": asdict(spec),
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_write_with(path, lambda tmp: torch.save(payload, tmp))


def load_payload(path: Path, fmt: str) -> dict[str, Any]:
    """A weights file's payload (tensors and plain data only, never pickled code), checked
    to be of format ``fmt``."""
    from edge_service.errors import DataError

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot load weights {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise DataError(f"{path} is not an edge-service weights file of format {fmt}")
    return payload


def load_weights(path: Path) -> tuple[StagedCNN, InputSpec, dict[str, object]]:
    """Load what :func:`save_weights` wrote."""
    payload = load_payload(path, WEIGHTS_FORMAT)
    model = StagedCNN(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, InputSpec(**payload["input_spec"]), dict(payload.get("meta", {}))
