"""Branch training: distillation lowers the branch error; runs are deterministic and resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_service.data.fashion import Split  # noqa: E402
from edge_service.data.preprocess import InputSpec  # noqa: E402
from edge_service.evolve.distill import (  # noqa: E402
    EvolveConfig,
    evolve_training,
    sandwich_paths,
    teacher_features,
)
from edge_service.evolve.model import ModelConfig, StagedCNN  # noqa: E402
from edge_service.evolve.supernet import MultiBranchNet  # noqa: E402

CFG = EvolveConfig(
    branches=("id", "p50", "dw", "mdw"),
    resolutions=(28, 20),
    distill_epochs=2,
    finetune_epochs=1,
    batch_size=32,
    threads=1,
    seed=3,
)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    teacher = StagedCNN(ModelConfig(stem=4, widths=(8, 8, 8), blocks=(2, 2, 2))).eval()
    rng = np.random.default_rng(seed)
    data = Split(rng.integers(0, 255, (96, 28, 28), dtype=np.uint8), rng.integers(0, 10, 96))
    return teacher, MultiBranchNet(teacher, CFG.branches), data


def _branch_error(net, teacher, data) -> float:
    x = torch.from_numpy(((data.images[:32] / 255.0 - 0.3) / 0.35).astype(np.float32))[:, None]
    with torch.no_grad():
        feats = teacher_features(teacher, x)
        return float(((net.branch(1, "mdw")(feats[1]) - feats[2]) ** 2).mean())


def test_distillation_reduces_branch_error_when_trained() -> None:
    teacher, net, data = _setup()
    net.eval()
    before = _branch_error(net, teacher, data)
    evolve_training(
        net,
        teacher,
        data,
        InputSpec(),
        dataclasses.replace(CFG, finetune_epochs=0, distill_epochs=3),
    )
    net.eval()
    assert _branch_error(net, teacher, data) < before


def test_same_seed_gives_same_weights_when_run_twice() -> None:
    results = []
    for _ in range(2):
        teacher, net, data = _setup()
        evolve_training(net, teacher, data, InputSpec(), CFG)
        results.append(net.state_dict())
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def test_resumed_run_matches_uninterrupted_run_when_checkpointed(tmp_path) -> None:
    teacher, straight, data = _setup()
    evolve_training(straight, teacher, data, InputSpec(), CFG)
    ckpt = tmp_path / "evolve.ckpt"
    teacher, first, data = _setup()

    # interrupt in the second epoch (the first one's checkpoint exists by then)
    class StopError(Exception):
        pass

    def stop_in_second_epoch(phase: str, step: int, total: int) -> None:
        if phase == "distill" and ckpt.exists():
            raise StopError

    with pytest.raises(StopError):
        evolve_training(first, teacher, data, InputSpec(), CFG, ckpt, stop_in_second_epoch)
    teacher, resumed, data = _setup()
    _, history = evolve_training(resumed, teacher, data, InputSpec(), CFG, ckpt)
    assert len(history) == 3
    for k, v in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k].float(), v.float(), atol=1e-6), k


def test_sandwich_includes_largest_and_smallest_paths_when_sampled() -> None:
    import random

    _, net, _ = _setup()
    paths = sandwich_paths(net, CFG, random.Random(0))
    assert paths[0] == (("id", "id", "id"), 28)
    assert paths[1] == (("mdw", "mdw", "mdw"), 20)
    assert len(paths) == 2 + CFG.random_paths


def test_training_starts_afresh_when_the_checkpoint_is_damaged(tmp_path, caplog) -> None:
    teacher, net, data = _setup()
    ckpt = tmp_path / "evolve.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 cut short")  # a torch.save zip that ends mid-file
    cfg = dataclasses.replace(CFG, distill_epochs=1, finetune_epochs=0)
    _, history = evolve_training(net, teacher, data, InputSpec(), cfg, ckpt)
    assert len(history) == 1 and "cannot be read" in caplog.text
    assert torch.load(ckpt, weights_only=False)["epochs_done"] == 1  # replaced by a whole one
