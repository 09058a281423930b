"""The micro-batcher never puts more rows in one engine call than the engines take."""

from __future__ import annotations

import pytest

from edge_service.server.engines import batch_limit


@pytest.mark.parametrize(
    ("setting", "batch_dim", "expected"),
    [
        (8, "batch", 8),  # dynamic batch axis: the setting
        (8, 1, 1),  # a detector exported without dynamic axes: one frame per call
        (8, 4, 4),
        (2, 16, 2),
        (8, 0, 8),  # no fixed size to honour
    ],
)
def test_batch_limit_honours_a_fixed_batch_axis(setting, batch_dim, expected):
    assert batch_limit(setting, batch_dim) == expected
