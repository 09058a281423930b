"""Training the branches: block-wise distillation, then a short joint sandwich fine-tune.

Phase 1 (block-wise distillation): the frozen teacher (the trained base model) runs once
per batch; every non-identity branch of stage ``s`` learns to map the teacher's features
entering stage ``s`` to the teacher's features leaving it (MSE). Branches never feed each
other, so the cost grows with the number of branches, not of their combinations.

Phase 2 (joint fine-tune, sandwich rule): each step trains the largest path with the
labels, and the smallest path plus ``random_paths`` random ones (random resolutions too)
with the teacher's soft labels, so the shared stem and head learn to serve every path.

Both phases are deterministic under a seed (per-epoch seeding), checkpoint after every
epoch, and resume from the last checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from edge_service.data.fashion import Split
from edge_service.data.preprocess import InputSpec, preprocess
from edge_service.evolve.model import StagedCNN
from edge_service.evolve.operators import BRANCHES, RESOLUTIONS, cheapest
from edge_service.evolve.supernet import MultiBranchNet
from edge_service.evolve.train import augment
from edge_service.fsutil import atomic_write_with
from edge_service.variants import IDENTITY

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # phase, step, total steps


@dataclass(frozen=True)
class EvolveConfig:
    """Hyper-parameters of one evolve run."""

    branches: tuple[str, ...] = tuple(BRANCHES)
    resolutions: tuple[int, ...] = RESOLUTIONS
    distill_epochs: int = 2
    finetune_epochs: int = 1
    batch_size: int = 128
    lr_distill: float = 2e-3
    lr_finetune: float = 4e-4
    random_paths: int = 2
    kd_temperature: float = 2.0
    seed: int = 0
    train_limit: int = 0
    threads: int = 0
    smallest: str = field(default_factory=lambda: cheapest(BRANCHES))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PhaseTimes:
    """Wall seconds spent per phase (the training cost the bench compares)."""

    distill_s: float = 0.0
    finetune_s: float = 0.0


def _batches(data: Split, cfg: EvolveConfig, phase: int, epoch: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng([cfg.seed, phase, epoch])
    order = rng.permutation(len(data))
    for start in range(0, len(order), cfg.batch_size):
        yield order[start : start + cfg.batch_size]


def _input(data: Split, idx: np.ndarray, spec: InputSpec, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(preprocess(augment(data.images[idx], rng, 2, True), spec))


def teacher_features(teacher: StagedCNN, x: torch.Tensor) -> list[torch.Tensor]:
    """[stem output, stage 1 output, ...]: the inputs and targets of block distillation."""
    feats = [teacher.stem(x)]
    for stage in teacher.stages:
        feats.append(stage(feats[-1]))
    return feats


def distill_epoch(
    net: MultiBranchNet,
    teacher: StagedCNN,
    data: Split,
    spec: InputSpec,
    cfg: EvolveConfig,
    opt: torch.optim.Optimizer,
    epoch: int,
    progress: Progress | None = None,
) -> float:
    """One epoch of block-wise distillation of every non-identity branch."""
    torch.manual_seed(cfg.seed * 1000 + epoch)
    rng = np.random.default_rng([cfg.seed, 1, epoch, 1])
    trained = [(s, b) for s in range(net.num_stages) for b in net.branches if b != IDENTITY]
    total, n, steps = 0.0, 0, math.ceil(len(data) / cfg.batch_size)
    for step, idx in enumerate(_batches(data, cfg, 1, epoch), 1):
        with torch.no_grad():
            feats = teacher_features(teacher, _input(data, idx, spec, rng))
        loss: torch.Tensor = sum(
            (F.mse_loss(net.branch(s, b)(feats[s]), feats[s + 1]) for s, b in trained),
            start=torch.zeros(()),
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        total += float(loss.detach()) / len(trained)
        n += 1
        if progress:
            progress("distill", step, steps)
    return total / max(n, 1)


def sandwich_paths(
    net: MultiBranchNet, cfg: EvolveConfig, rnd: random.Random
) -> list[tuple[tuple[str, ...], int]]:
    """Largest, smallest, and ``random_paths`` random (branches, resolution) paths."""
    k = net.num_stages
    paths = [((IDENTITY,) * k, max(cfg.resolutions)), ((cfg.smallest,) * k, min(cfg.resolutions))]
    for _ in range(cfg.random_paths):
        paths.append(
            (tuple(rnd.choice(net.branches) for _ in range(k)), rnd.choice(cfg.resolutions))
        )
    return paths


def finetune_epoch(
    net: MultiBranchNet,
    teacher: StagedCNN,
    data: Split,
    spec: InputSpec,
    cfg: EvolveConfig,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    progress: Progress | None = None,
) -> float:
    """One epoch of joint fine-tuning under the sandwich rule."""
    torch.manual_seed(cfg.seed * 1000 + 500 + epoch)
    rng = np.random.default_rng([cfg.seed, 2, epoch, 1])
    rnd = random.Random(cfg.seed * 1000 + epoch)  # noqa: S311 - sampling, not secrets
    t = cfg.kd_temperature
    total, n, steps = 0.0, 0, math.ceil(len(data) / cfg.batch_size)
    for step, idx in enumerate(_batches(data, cfg, 2, epoch), 1):
        images = augment(data.images[idx], rng, 2, True)
        labels = torch.from_numpy(data.labels[idx])
        with torch.no_grad():
            soft = F.softmax(teacher(torch.from_numpy(preprocess(images, spec))) / t, dim=1)
        opt.zero_grad(set_to_none=True)
        batch_loss = 0.0
        for i, (choices, res) in enumerate(sandwich_paths(net, cfg, rnd)):
            net.set_active(choices)
            logits = net(
                torch.from_numpy(preprocess(images, InputSpec(spec.name, res, spec.mean, spec.std)))
            )
            loss: torch.Tensor
            if i == 0:
                loss = F.cross_entropy(logits, labels, label_smoothing=0.05)
            else:
                loss = (
                    F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t
                )
            loss.backward()  # type: ignore[no-untyped-call]
            batch_loss += float(loss.detach())
        opt.step()
        sched.step()
        total += batch_loss
        n += 1
        if progress:
            progress("finetune", step, steps)
    net.set_active((IDENTITY,) * net.num_stages)
    return total / max(n, 1)


def branch_parameters(net: MultiBranchNet) -> list[nn.Parameter]:
    """The parameters phase 1 trains: every branch except the teacher's own stages."""
    return [
        p
        for s in range(net.num_stages)
        for b in net.branches
        if b != IDENTITY
        for p in net.branch(s, b).parameters()
    ]


def evolve_training(
    net: MultiBranchNet,
    teacher: StagedCNN,
    data: Split,
    spec: InputSpec,
    cfg: EvolveConfig,
    checkpoint: Path | None = None,
    progress: Progress | None = None,
) -> tuple[PhaseTimes, list[dict[str, float]]]:
    """Run both phases, resuming from ``checkpoint`` if it holds a run with this config."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    d_opt = torch.optim.Adam(branch_parameters(net), lr=cfg.lr_distill)
    f_opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr_finetune, weight_decay=1e-4)
    f_steps = max(1, cfg.finetune_epochs * math.ceil(len(data) / cfg.batch_size))
    f_sched = torch.optim.lr_scheduler.CosineAnnealingLR(f_opt, T_max=f_steps)
    times, history, done = PhaseTimes(), [], 0
    state = _load_checkpoint(checkpoint, cfg)
    if state:
        net.load_state_dict(state["net"])
        d_opt.load_state_dict(state["d_opt"])
        f_opt.load_state_dict(state["f_opt"])
        f_sched.load_state_dict(state["f_sched"])
        times = PhaseTimes(**state["times"])
        history, done = state["history"], int(state["epochs_done"])
        log.info("resuming evolve from %s after %d epoch(s)", checkpoint, done)
    schedule = [("distill", e) for e in range(1, cfg.distill_epochs + 1)] + [
        ("finetune", e) for e in range(1, cfg.finetune_epochs + 1)
    ]
    for i, (phase, epoch) in enumerate(schedule):
        if i < done:
            continue
        net.train()
        started = time.perf_counter()
        if phase == "distill":
            loss = distill_epoch(net, teacher, data, spec, cfg, d_opt, epoch, progress)
            times.distill_s += time.perf_counter() - started
        else:
            loss = finetune_epoch(net, teacher, data, spec, cfg, f_opt, f_sched, epoch, progress)
            times.finetune_s += time.perf_counter() - started
        history.append(
            {
                "phase": 1.0 if phase == "distill" else 2.0,
                "epoch": float(epoch),
                "loss": loss,
                "seconds": time.perf_counter() - started,
            }
        )
        log.info("%s epoch %d: loss %.4f (%.0f s)", phase, epoch, loss, history[-1]["seconds"])
        if checkpoint:
            _save_checkpoint(checkpoint, cfg, net, d_opt, f_opt, f_sched, times, history, i + 1)
    net.eval()
    return times, history


def _save_checkpoint(
    path: Path,
    cfg: EvolveConfig,
    net: MultiBranchNet,
    d_opt: torch.optim.Optimizer,
    f_opt: torch.optim.Optimizer,
    f_sched: torch.optim.lr_scheduler.LRScheduler,
    times: PhaseTimes,
    history: list[dict[str, float]],
    epochs_done: int,
) -> None:
    payload = {
        "config": asdict(cfg),
        "net": net.state_dict(),
        "d_opt": d_opt.state_dict(),
        "f_opt": f_opt.state_dict(),
        "f_sched": f_sched.state_dict(),
        "times": asdict(times),
        "history": history,
        "epochs_done": epochs_done,
    }
    atomic_write_with(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path | None, cfg: EvolveConfig) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint costs a retrain, not the run
        log.warning("checkpoint %s cannot be read (%s); starting afresh", path, exc)
        return None
    saved = state.get("config", {})
    saved["branches"] = tuple(saved.get("branches", ()))
    saved["resolutions"] = tuple(saved.get("resolutions", ()))
    if saved != asdict(cfg):
        log.warning("checkpoint %s was made with another config; starting afresh", path)
        return None
    return state
