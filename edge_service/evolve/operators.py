"""Compression operators: each a function from a stage (an ``nn.Sequential`` of conv blocks)
to a cheaper stage with the same input channels, output channels and stride.

Every operator starts the new stage from the teacher's weights (a deep copy, then the
transform), so block-wise distillation only has to repair what the operator lost:

- :func:`prune` removes the least important (L1) internal channels with torch-pruning's
  dependency graph (the stage's output width is kept, so stages stay interchangeable);
- :func:`low_rank` splits each k x k convolution by truncated SVD into a k x k convolution
  to ``r`` channels and a 1 x 1 convolution back (exact at full rank);
- :func:`depthwise_separable` replaces each dense convolution by depthwise + pointwise,
  initialised by a rank-1 SVD per input channel (exact when the kernel is separable);
- :func:`merge` keeps the first block(s) and drops the rest (one block stands for several);
- :func:`compose` chains operators; input resolution is the fifth knob, in the spec.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Operator = Callable[[nn.Sequential], nn.Sequential]


def identity(stage: nn.Sequential) -> nn.Sequential:
    """An independent copy of the stage."""
    return copy.deepcopy(stage)


def compose(*ops: Operator) -> Operator:
    """Apply ``ops`` left to right."""

    def run(stage: nn.Sequential) -> nn.Sequential:
        for op in ops:
            stage = op(stage)
        return stage

    return run


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _dense_convs(module: nn.Module) -> list[tuple[nn.Module, str, nn.Conv2d]]:
    """(parent, attribute name, conv) for every dense (groups=1) k x k conv, k > 1."""
    out = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.groups == 1 and child.kernel_size[0] > 1:
                out.append((parent, name, child))
    return out


def prune(ratio: float) -> Operator:
    """Remove ``ratio`` of the internal channels of every block but the last."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")

    def run(stage: nn.Sequential) -> nn.Sequential:
        import torch_pruning as tp

        new = copy.deepcopy(stage).eval()
        convs = _convs(new)
        if ratio == 0.0 or len(convs) < 2:
            return new
        example = torch.zeros(1, convs[0].in_channels, 16, 16)
        graph = tp.DependencyGraph().build_dependency(new, example_inputs=example)
        for conv in convs[:-1]:  # the last conv sets the stage's output width: keep it
            n_drop = round(conv.out_channels * ratio)
            if n_drop == 0:
                continue
            importance = conv.weight.detach().abs().sum(dim=(1, 2, 3))
            idxs = importance.argsort()[:n_drop].tolist()
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs).prune()
        return new

    return run


def _geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """Stride, padding and dilation of ``conv``, for a replacement that keeps its shapes."""
    return {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}


class LowRankConv(nn.Sequential):
    """k x k conv to ``rank`` channels, then 1 x 1 conv to the original outputs."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        c_out, c_in, kh, kw = conv.weight.shape
        first = nn.Conv2d(
            c_in,
            rank,
            (kh, kw),
            **_geometry(conv),
            bias=False,
        )
        second = nn.Conv2d(rank, c_out, 1, bias=conv.bias is not None)
        w = conv.weight.detach().reshape(c_out, -1)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:rank].sqrt()
        first.weight.data = (root[:, None] * vh[:rank]).reshape(rank, c_in, kh, kw).clone()
        second.weight.data = (u[:, :rank] * root[None, :]).reshape(c_out, rank, 1, 1).clone()
        if conv.bias is not None and second.bias is not None:
            second.bias.data = conv.bias.detach().clone()
        super().__init__(first, second)


def full_rank(conv: nn.Conv2d) -> int:
    """The rank at which :class:`LowRankConv` reproduces ``conv`` exactly."""
    c_out, c_in, kh, kw = conv.weight.shape
    return min(c_out, c_in * kh * kw)


def low_rank(ratio: float) -> Operator:
    """Replace every dense k x k conv by a rank-``ratio`` SVD factorisation."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"rank ratio must be in (0, 1], got {ratio}")

    def run(stage: nn.Sequential) -> nn.Sequential:
        new = copy.deepcopy(stage)
        for parent, name, conv in _dense_convs(new):
            rank = max(1, round(ratio * full_rank(conv)))
            setattr(parent, name, LowRankConv(conv, rank))
        return new

    return run


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise k x k then pointwise 1 x 1, linear in between (so the init can be exact)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        c_out, c_in, kh, kw = conv.weight.shape
        depthwise = nn.Conv2d(
            c_in,
            c_in,
            (kh, kw),
            **_geometry(conv),
            groups=c_in,
            bias=False,
        )
        pointwise = nn.Conv2d(c_in, c_out, 1, bias=conv.bias is not None)
        # W[o, i] ~= s_i u_i[o] v_i (rank 1 per input channel): depthwise gets v_i,
        # pointwise gets s_i u_i.
        per_input = conv.weight.detach().permute(1, 0, 2, 3).reshape(c_in, c_out, kh * kw)
        u, s, vh = torch.linalg.svd(per_input, full_matrices=False)
        depthwise.weight.data = vh[:, 0, :].reshape(c_in, 1, kh, kw).clone()
        pointwise.weight.data = (u[:, :, 0] * s[:, :1]).T.reshape(c_out, c_in, 1, 1).clone()
        if conv.bias is not None and pointwise.bias is not None:
            pointwise.bias.data = conv.bias.detach().clone()
        super().__init__(depthwise, pointwise)


def depthwise_separable(stage: nn.Sequential) -> nn.Sequential:
    """Replace every dense k x k conv by depthwise + pointwise."""
    new = copy.deepcopy(stage)
    for parent, name, conv in _dense_convs(new):
        setattr(parent, name, DepthwiseSeparableConv(conv))
    return new


def merge(keep: int = 1) -> Operator:
    """Keep the first ``keep`` blocks: they stand for the whole stage.

    The first block of a stage sets its width and stride, so the output shape is kept.
    """
    if keep < 1:
        raise ValueError("merge must keep at least one block")

    def run(stage: nn.Sequential) -> nn.Sequential:
        return nn.Sequential(*[copy.deepcopy(b) for b in list(stage)[:keep]])

    return run


@dataclass(frozen=True)
class Branch:
    """One entry of the branch menu: the operator, and its rank by cost (0: the base's own
    stage, the most expensive; a higher rank is cheaper). The rank picks the path that
    distillation trains as the smallest, so it is stated, not implied by an order."""

    operator: Operator
    cost_rank: int

    def __call__(self, stage: nn.Sequential) -> nn.Sequential:
        return self.operator(stage)


# The branch menu: name -> branch. Names are what variant ids are made of.
BRANCHES: dict[str, Branch] = {
    "id": Branch(identity, 0),
    "p25": Branch(prune(0.25), 1),
    "p50": Branch(prune(0.50), 2),
    "p75": Branch(prune(0.75), 3),
    "lr50": Branch(low_rank(0.50), 4),
    "lr25": Branch(low_rank(0.25), 5),
    "dw": Branch(depthwise_separable, 6),
    "m": Branch(merge(1), 7),
    "mdw": Branch(compose(merge(1), depthwise_separable), 8),
}


def cheapest(names: Iterable[str]) -> str:
    """The branch of ``names`` with the highest cost rank (KeyError for an unknown one)."""
    return max(names, key=lambda name: BRANCHES[name].cost_rank)
RESOLUTIONS: tuple[int, ...] = (28, 24, 20)
