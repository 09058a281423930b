"""The base model: a compact CNN built in stages.

stem -> stage 1 (28x28) -> stage 2 (14x14) -> stage 3 (7x7) -> global pool -> linear.
Each stage is a sequence of conv-BN-ReLU blocks, the first of stages 2 and 3 striding by 2.
The stage boundaries are where the evolve step hangs its branches, and global pooling
keeps the network resolution-agnostic (so input resolution is a compression knob too).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Widths and depths of the staged CNN."""

    in_channels: int = 1
    stem: int = 24
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (2, 2, 2)
    num_classes: int = 10
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ValueError("widths and blocks need one entry per stage, at least one stage")
        if min(self.widths) < 1 or min(self.blocks) < 1 or self.stem < 1:
            raise ValueError("widths, blocks and stem must all be >= 1")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        fields = dict(data)
        for key in ("widths", "blocks"):
            if key in fields:
                fields[key] = tuple(fields[key])  # type: ignore[arg-type]
        return cls(**fields)  # type: ignore[arg-type]


class ConvBNAct(nn.Sequential):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


def make_stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    """One stage: ``blocks`` conv blocks, the first changing width and striding."""
    layers = [ConvBNAct(c_in, c_out, stride)]
    layers += [ConvBNAct(c_out, c_out) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class StagedCNN(nn.Module):
    """The base classifier; ``stages`` is an ``nn.ModuleList`` of ``nn.Sequential``."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        cfg = self.config
        self.stem = ConvBNAct(cfg.in_channels, cfg.stem)
        stages, c_in = [], cfg.stem
        for i, (width, depth) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
            stages.append(make_stage(c_in, width, depth, stride=1 if i == 0 else 2))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(c_in, cfg.num_classes),
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage (what block-wise distillation matches)."""
        out, feats = self.stem(x), []
        for stage in self.stages:
            out = stage(out)
            feats.append(out)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        for stage in self.stages:
            out = stage(out)
        return self.head(out)  # type: ignore[no-any-return]


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
