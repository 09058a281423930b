"""Engines built from the committed weights: accuracy, INT8 parity, dynamic batch."""

from __future__ import annotations

import numpy as np
import pytest

from edge_service.data.preprocess import preprocess
from edge_service.repository import load_catalog, verified_artifact_path
from edge_service.runtime.ort_engine import OrtEngine

pytestmark = pytest.mark.integration


def test_fp32_engine_reaches_90_percent_when_built_from_committed_weights(engines_dir):
    catalog = load_catalog(engines_dir / "fashion")
    assert catalog.variant("base@fp32").accuracy.value >= 0.90


def test_int8_engine_within_one_point_of_fp32_when_calibrated(engines_dir):
    catalog = load_catalog(engines_dir / "fashion")
    fp32 = catalog.variant("base@fp32").accuracy.value
    int8 = catalog.variant("base@int8").accuracy.value
    assert fp32 - int8 <= 0.01


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_engines_accept_any_batch_when_exported_with_dynamic_axis(engines_dir, test_split, batch):
    fam = engines_dir / "fashion"
    catalog = load_catalog(fam)
    x = preprocess(test_split.images[:batch], catalog.input.spec())
    for v in catalog.variants:
        with OrtEngine(
            verified_artifact_path(fam, v.artifact), variant_id=v.id, precision=v.precision
        ) as engine:
            assert engine.infer(x).shape == (batch, len(catalog.labels))


def test_catalog_records_profile_for_this_device_when_built(engines_dir):
    from edge_service.hostinfo import DEFAULT_POWER_MODE, device_id

    for v in load_catalog(engines_dir / "fashion").variants:
        profile = v.profile_for(device_id(), DEFAULT_POWER_MODE)
        assert profile is not None and profile.latency_ms(1) > 0
        assert np.isfinite(profile.latency["8"].p99_ms)
