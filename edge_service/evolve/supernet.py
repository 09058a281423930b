"""The multi-branch network: shared stem and head, several branches per stage.

``set_active(spec)`` picks one branch per stage (what a forward pass runs);
``extract(spec)`` copies that path out as a plain static module for ONNX export.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from edge_service.data.preprocess import InputSpec
from edge_service.evolve.model import ModelConfig, StagedCNN
from edge_service.evolve.operators import BRANCHES, RESOLUTIONS
from edge_service.fsutil import atomic_write_with
from edge_service.variants import IDENTITY, VariantSpec

FORMAT = "edge-service/multi-branch/v1"


class StaticNet(nn.Module):
    """One extracted variant: stem, one branch per stage, head."""

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem, self.stages, self.head = stem, nn.ModuleList(stages), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        for stage in self.stages:
            out = stage(out)
        return self.head(out)  # type: ignore[no-any-return]


class MultiBranchNet(nn.Module):
    """Stages of interchangeable branches grown from a trained :class:`StagedCNN`."""

    def __init__(self, base: StagedCNN, branches: Sequence[str] = tuple(BRANCHES)) -> None:
        super().__init__()
        unknown = sorted(set(branches) - set(BRANCHES))
        if unknown or IDENTITY not in branches:
            raise ValueError(
                f"branches must include {IDENTITY!r} and come from "
                f"{sorted(BRANCHES)}; unknown: {unknown}"
            )
        self.config = base.config
        self.branches = tuple(branches)
        self.stem = copy.deepcopy(base.stem)
        self.head = copy.deepcopy(base.head)
        self.stages = nn.ModuleList(
            nn.ModuleDict({b: BRANCHES[b](cast(nn.Sequential, stage)) for b in self.branches})
            for stage in base.stages
        )
        self.active: tuple[str, ...] = (IDENTITY,) * len(self.stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def _choices(self, spec: VariantSpec | Sequence[str]) -> tuple[str, ...]:
        choices = tuple(spec.stages if isinstance(spec, VariantSpec) else spec)
        if len(choices) != self.num_stages or not set(choices) <= set(self.branches):
            raise ValueError(
                f"spec {choices} does not fit {self.num_stages} stages of {self.branches}"
            )
        return choices

    def set_active(self, spec: VariantSpec | Sequence[str]) -> None:
        """Route forward passes through one branch per stage."""
        self.active = self._choices(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        for i, choice in enumerate(self.active):
            out = self.branch(i, choice)(out)
        return self.head(out)  # type: ignore[no-any-return]

    def branch(self, stage: int, choice: str) -> nn.Module:
        """One stage's branch module."""
        return cast(nn.ModuleDict, self.stages[stage])[choice]

    def extract(self, spec: VariantSpec | Sequence[str]) -> StaticNet:
        """A standalone copy of the path ``spec`` selects (eval mode)."""
        choices = self._choices(spec)
        stages = [copy.deepcopy(self.branch(i, c)) for i, c in enumerate(choices)]
        net = StaticNet(copy.deepcopy(self.stem), stages, copy.deepcopy(self.head))
        return net.eval()

    def specs(
        self, resolutions: Sequence[int] = RESOLUTIONS, precision: str = "fp32"
    ) -> Iterator[VariantSpec]:
        """Every combination of branches and resolutions."""
        native = max(resolutions)
        for choices in itertools.product(self.branches, repeat=self.num_stages):
            for res in resolutions:
                yield VariantSpec(choices, precision, res, native, source="evolve")


def save_supernet(
    path: Path,
    net: MultiBranchNet,
    spec: InputSpec,
    kept: list[VariantSpec],
    meta: dict[str, Any],
) -> None:
    """Write the multi-branch weights, the kept variants and metadata atomically."""
    from dataclasses import asdict

    payload = {
        "format": FORMAT,
        "model_config": asdict(net.config),
        "branches": list(net.branches),
        "input_spec": asdict(spec),
        "kept": [s.to_dict() for s in kept],
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    atomic_write_with(path, lambda tmp: torch.save(payload, tmp))


def load_supernet(
    path: Path,
) -> tuple[MultiBranchNet, InputSpec, list[VariantSpec], dict[str, Any]]:
    """Load what :func:`save_supernet` wrote."""
    from edge_service.evolve.train import load_payload

    payload = load_payload(path, FORMAT)
    base = StagedCNN(ModelConfig.from_dict(payload["model_config"]))
    net = MultiBranchNet(base, payload["branches"])
    net.load_state_dict(payload["state_dict"])
    net.eval()
    kept = [VariantSpec.from_dict(d) for d in payload["kept"]]
    return net, InputSpec(**payload["input_spec"]), kept, dict(payload["meta"])
