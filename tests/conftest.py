"""Shared fixtures: the real data set, trained weights, engines built into temp folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from edge_service.config import DEFAULT_FASHION_DIR, REPO_ROOT
from edge_service.data.fashion import Split, load_split, selection_split

BASE_WEIGHTS = REPO_ROOT / "models" / "fashion" / "base.pt"
EVOLVED = REPO_ROOT / "models" / "fashion" / "evolved.pt"
# The networks the integration tier builds: the committed family's most accurate and
# fastest ones (all 11 would add a minute to every CI run).
TEST_NETWORKS = frozenset({"base", "dw-dw-dw"})
CALIBRATION = REPO_ROOT / "calibration" / "fashion"
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (DEFAULT_FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed: sudo apt-get install dataset-fashion-mnist")
    return DEFAULT_FASHION_DIR


@pytest.fixture(scope="session")
def test_split(fashion_dir: Path) -> Split:
    return load_split(fashion_dir, "test")


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory: pytest.TempPathFactory, test_split: Split) -> Path:
    """The default family built as `edge-service build --eval-limit 1000 --only base --only
    dw-dw-dw` builds it (from the committed evolved weights, accuracy on 1,000 images)."""
    if not HAS_TORCH:
        pytest.skip("building engines needs the train extra (torch)")
    from edge_service.compile.family import build_family
    from edge_service.compile.ort_builder import BuildRequest

    root = tmp_path_factory.mktemp("engines")
    train = load_split(DEFAULT_FASHION_DIR, "train")
    build_family(
        BuildRequest(
            family_dir=root / "fashion",
            weights=BASE_WEIGHTS,
            evolved=EVOLVED,
            only=TEST_NETWORKS,
            calibration_dir=CALIBRATION,
            test_split=test_split.subset(1000),
            selection_split=selection_split(train),
            calibration_cache=root / "calibration-cache",
            profile_runs=20,
        )
    )
    return root


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> Path:
    """A tiny base model trained for one epoch on 1,024 images (seconds)."""
    if not HAS_TORCH:
        pytest.skip("training needs the train extra (torch)")
    from edge_service.data.preprocess import InputSpec
    from edge_service.evolve.model import ModelConfig
    from edge_service.evolve.train import TrainConfig, save_weights, train

    cfg = TrainConfig(
        epochs=1,
        train_limit=1024,
        threads=1,
        model=ModelConfig(stem=4, widths=(8, 8, 16), blocks=(2, 2, 2)),
    )
    model, result = train(
        cfg,
        load_split(fashion_dir, "train"),
        load_split(fashion_dir, "test").subset(256),
        InputSpec(),
    )
    path = tmp_path_factory.mktemp("tiny") / "base.pt"
    save_weights(path, model, InputSpec(), {"test_top1": result.test_top1})
    return path
