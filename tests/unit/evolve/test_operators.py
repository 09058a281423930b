"""Compression operators keep shapes, and are exact where they must be."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edge_service.evolve.model import count_params, make_stage  # noqa: E402
from edge_service.evolve.operators import (  # noqa: E402
    BRANCHES,
    DepthwiseSeparableConv,
    LowRankConv,
    cheapest,
    compose,
    depthwise_separable,
    full_rank,
    low_rank,
    merge,
    prune,
)


def _stage(c_in: int = 8, c_out: int = 16, blocks: int = 2, stride: int = 2) -> nn.Sequential:
    torch.manual_seed(0)
    stage = make_stage(c_in, c_out, blocks, stride)
    for m in stage.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return stage.eval()


def _x(c: int = 8, size: int = 12):
    torch.manual_seed(1)
    return torch.randn(3, c, size, size)


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_every_branch_keeps_output_shape_when_applied_to_a_stage(name: str) -> None:
    stage = _stage()
    out = BRANCHES[name](stage).eval()(_x())
    assert out.shape == stage(_x()).shape == (3, 16, 6, 6)


@pytest.mark.parametrize("name", [n for n in BRANCHES if n != "id"])
def test_every_compressing_branch_has_fewer_params_when_applied(name: str) -> None:
    stage = _stage(16, 32)
    assert count_params(BRANCHES[name](stage)) < count_params(stage)


def test_zero_pruning_is_the_identity_when_ratio_is_zero() -> None:
    stage = _stage()
    assert torch.equal(prune(0.0)(stage)(_x()), stage(_x()))


def test_pruning_removes_internal_channels_but_keeps_output_width_when_ratio_is_half() -> None:
    pruned = prune(0.5)(_stage())
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert convs[1].in_channels == 8


def test_pruning_keeps_most_important_channels_when_some_are_dead() -> None:
    stage = _stage()
    conv = stage[0][0]
    with torch.no_grad():
        conv.weight[::2] = 0.0  # even channels contribute nothing
    pruned = prune(0.5)(stage)
    kept = pruned[0][0].weight
    assert kept.abs().sum(dim=(1, 2, 3)).min() > 0


def test_full_rank_svd_reproduces_outputs_when_rank_is_full() -> None:
    stage = _stage()
    out = low_rank(1.0)(stage)(_x())
    assert torch.allclose(out, stage(_x()), atol=1e-4)


def test_low_rank_conv_has_requested_rank_when_ratio_given() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    lr = LowRankConv(conv, rank=4)
    assert lr[0].out_channels == 4 and lr[1].out_channels == 16
    assert full_rank(conv) == 16


def test_depthwise_init_is_exact_when_kernel_is_separable_per_input_channel() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    u, v = torch.randn(4, 6), torch.randn(4, 9)  # W[o, i] = u[i, o] * v[i]
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("io,ik->oik", u, v).reshape(6, 4, 3, 3))
    x = _x(4)
    assert torch.allclose(DepthwiseSeparableConv(conv)(x), conv(x), atol=1e-4)


def test_depthwise_replaces_dense_convs_when_applied() -> None:
    new = depthwise_separable(_stage())
    dense = [
        m
        for m in new.modules()
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size[0] > 1
    ]
    assert dense == []


def test_merge_keeps_first_block_weights_when_stage_is_collapsed() -> None:
    stage = _stage(blocks=3)
    merged = merge(1)(stage)
    assert len(merged) == 1
    assert torch.equal(merged[0][0].weight, stage[0][0].weight)


def test_compose_applies_operators_in_order_when_chained() -> None:
    out = compose(merge(1), depthwise_separable)(_stage())
    assert len(out) == 1 and isinstance(out[0][0], DepthwiseSeparableConv)


def test_operators_refuse_out_of_range_ratios() -> None:
    with pytest.raises(ValueError):
        prune(1.0)
    with pytest.raises(ValueError):
        low_rank(0.0)
    with pytest.raises(ValueError):
        merge(0)


def test_each_branch_states_its_own_cost_rank_and_the_cheapest_is_chosen_by_it() -> None:
    ranks = [b.cost_rank for b in BRANCHES.values()]
    assert len(set(ranks)) == len(ranks) and BRANCHES["id"].cost_rank == 0
    assert cheapest(BRANCHES) == "mdw"
    assert cheapest(["p50", "id", "lr25"]) == "lr25"  # not the order given
    with pytest.raises(KeyError):
        cheapest(["id", "nope"])
