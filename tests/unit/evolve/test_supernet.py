"""The multi-branch network: routing, extraction, save/load."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edge_service.data.preprocess import InputSpec  # noqa: E402
from edge_service.evolve.model import ModelConfig, StagedCNN  # noqa: E402
from edge_service.evolve.supernet import (  # noqa: E402
    MultiBranchNet,
    load_supernet,
    save_supernet,
)
from edge_service.variants import VariantSpec  # noqa: E402

CFG = ModelConfig(stem=4, widths=(8, 8, 16), blocks=(2, 2, 2))


def _net() -> tuple[StagedCNN, MultiBranchNet]:
    torch.manual_seed(0)
    base = StagedCNN(CFG).eval()
    return base, MultiBranchNet(base).eval()


def _x(size: int = 28):
    torch.manual_seed(1)
    return torch.randn(2, 1, size, size)


def test_all_identity_path_equals_base_model_when_nothing_is_compressed() -> None:
    base, net = _net()
    net.set_active(("id", "id", "id"))
    assert torch.allclose(net(_x()), base(_x()), atol=1e-6)


@pytest.mark.parametrize(
    "choices", [("p50", "lr25", "id"), ("mdw", "dw", "m"), ("p75", "m", "lr50")]
)
def test_extract_matches_multi_branch_output_when_spec_is_active(choices) -> None:
    _, net = _net()
    spec = VariantSpec(choices, "fp32", 24, 28, "evolve")
    net.set_active(spec)
    static = net.extract(spec)
    assert torch.allclose(static(_x(24)), net(_x(24)), atol=1e-6)


def test_extracted_module_is_independent_when_supernet_changes_afterwards() -> None:
    _, net = _net()
    static = net.extract(("dw", "dw", "dw"))
    before = static(_x())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert torch.equal(static(_x()), before)


def test_set_active_refuses_spec_when_branch_unknown_or_length_wrong() -> None:
    _, net = _net()
    with pytest.raises(ValueError):
        net.set_active(("id", "id"))
    with pytest.raises(ValueError):
        net.set_active(("id", "zz", "id"))


def test_specs_enumerate_every_combination_when_asked() -> None:
    _, net = _net()
    specs = list(net.specs(resolutions=(28, 20)))
    assert len(specs) == len(net.branches) ** 3 * 2
    assert len({s.id for s in specs}) == len(specs)


def test_supernet_round_trips_when_saved_and_loaded(tmp_path) -> None:
    _, net = _net()
    kept = [VariantSpec(("p50", "id", "dw"), "fp32", 24, 28, "evolve")]
    save_supernet(tmp_path / "s.pt", net, InputSpec(), kept, {"seed": 0})
    loaded, spec, kept2, meta = load_supernet(tmp_path / "s.pt")
    assert kept2 == kept and meta == {"seed": 0} and spec == InputSpec()
    for choices in (("p50", "id", "dw"), ("mdw", "lr25", "p75")):
        net.set_active(choices)
        loaded.set_active(choices)
        assert torch.allclose(loaded(_x()), net(_x()), atol=1e-6)
