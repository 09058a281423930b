"""Evolve's training cost vs training the same kept variants independently.

    python bench/evolve_cost.py [--evolved models/fashion/evolved.pt] [--measure 3]

The protocol (what "the same accuracy" and "cost" mean here) is PROTOCOL below.
Writes the "evolve_cost" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from results import write_section

from edge_service.config import Settings
from edge_service.data.fashion import load_split
from edge_service.evolve.model import StagedCNN
from edge_service.evolve.run import split_train_val
from edge_service.evolve.search import at_size
from edge_service.evolve.supernet import MultiBranchNet, load_supernet
from edge_service.evolve.train import TrainConfig, _train_epoch, fit

PROTOCOL = """Protocol:
- Evolve cost: the wall seconds of its two training phases (block-wise distillation and
  joint fine-tune), as recorded in evolved.pt on this machine. The base model's own
  training is needed by both sides (independent training needs it for the base variant),
  so neither side counts it.
- Independent cost of one kept variant: its architecture, randomly initialised, trained
  with the base model's recipe (AdamW, one-cycle over 15 epochs, same augmentation, same
  55k training images, at the variant's input resolution) until its top-1 on the same 5k
  validation images reaches the evolved variant's; the cost is the training seconds up to
  that epoch (evaluation excluded). A run that never reaches it is counted at 15 epochs,
  a lower bound, and marked so.
- `--measure N` variants (the fastest, the most accurate and evenly spaced ones between)
  are trained for real; for the others, seconds per epoch are measured on 40 training
  steps and epochs-to-target is the median of the measured ones: an estimate, labelled.
- Caveats: the 5k validation images were part of the base model's own training set, so
  the evolved variants' validation top-1 (the targets) is inflated, which makes the
  targets harder to reach from scratch; and this 2-core machine also ran other work
  during parts of both the evolve run and these runs, so seconds carry some noise."""


def fresh(net: MultiBranchNet, spec, seed: int):
    """The variant's architecture with random weights (operators applied to a fresh base)."""
    torch.manual_seed(seed)
    return MultiBranchNet(StagedCNN(net.config), net.branches).extract(spec).train()


def seconds_per_epoch(model, data, spec, cfg: TrainConfig, steps: int = 40) -> float:
    sub = data.subset(steps * cfg.batch_size, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    t0 = time.perf_counter()
    _train_epoch(
        model, sub, spec, cfg, np.random.default_rng(0), opt, sched, torch.nn.CrossEntropyLoss()
    )
    return (time.perf_counter() - t0) * len(data) / len(sub)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evolved", type=Path, default=Path("models/fashion/evolved.pt"))
    parser.add_argument("--measure", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    net, spec, kept_specs, meta = load_supernet(args.evolved)
    # training is per network: one kept at both precisions is trained once, to the better
    # of its measured accuracies (the search may keep a network at FP32, INT8 or both)
    measured_top1 = {k["id"]: k["measured_top1"] for k in meta["kept"]}
    kept = list({s.family_key: s.with_precision("fp32") for s in kept_specs}.values())
    targets = {
        s.id: max(a for i, a in measured_top1.items() if i.split("@")[0] == s.family_key)
        for s in kept
    }
    cfg = TrainConfig(epochs=args.epochs)
    data, val = split_train_val(load_split(Settings().data_dir, "train"), 5000, 0, 0)
    order = np.linspace(0, len(kept) - 1, min(args.measure, len(kept))).round().astype(int)
    measured_ids = {kept[i].id for i in order}
    rows, epochs_needed = {}, []
    for s in kept:
        if s.id not in measured_ids:
            continue
        vin = at_size(spec, s.input_size)
        result = fit(fresh(net, s, 0), cfg, data, val, vin, target=targets[s.id])
        reached = result.history[-1]["test_top1"] >= targets[s.id]
        epochs_needed.append(result.epochs)
        rows[s.id] = (
            result.history[-1]["train_seconds"],
            result.epochs,
            "measured" if reached else f"not reached in {args.epochs} (lower bound)",
            result.history[-1]["test_top1"],
        )
        print(s.id, rows[s.id])
    median_epochs = statistics.median(epochs_needed)
    for s in kept:
        if s.id in rows:
            continue
        per_epoch = seconds_per_epoch(fresh(net, s, 0), data, at_size(spec, s.input_size), cfg)
        rows[s.id] = (per_epoch * median_epochs, median_epochs, "estimated", float("nan"))
        print(s.id, rows[s.id])
    evolve_s = meta["distill_s"] + meta["finetune_s"]
    independent_s = sum(r[0] for r in rows.values())
    lines = [
        "| variant | evolved val top-1 (target) | independent: epochs | seconds | how | "
        "reached top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for s in kept:
        sec, ep, how, acc = rows[s.id]
        lines.append(
            f"| {s.id} | {targets[s.id]:.4f} | {ep} | {sec:.0f} | {how} | {acc:.4f} |"
            if acc == acc
            else f"| {s.id} | {targets[s.id]:.4f} | {ep} | {sec:.0f} | {how} | - |"
        )
    body = "\n".join(lines) + (
        f"\n\n- evolve training: distill {meta['distill_s']:.0f} s + fine-tune "
        f"{meta['finetune_s']:.0f} s = **{evolve_s:.0f} s** for all {len(kept)} kept variants "
        f"(and every other combination)\n"
        f"- independent training of the {len(kept)} kept variants to the same accuracy: "
        f"**{independent_s:.0f} s** ({len(measured_ids)} measured, "
        f"{len(kept) - len(measured_ids)} estimated from {median_epochs} epochs)\n"
        f"- ratio evolve / independent: **{evolve_s / independent_s:.1%}** "
        f"(training overhead {evolve_s / independent_s - 1:+.1%})\n\n" + PROTOCOL
    )
    write_section("evolve_cost", "Evolve training cost vs independent training", body)


if __name__ == "__main__":
    main()
