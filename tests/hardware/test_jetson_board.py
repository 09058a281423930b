"""On a Jetson: the device is named from its device tree, and the engines run there."""

from __future__ import annotations

import shutil
import subprocess

from edge_service.hostinfo import device_name


def test_device_name_is_the_jetson_model_when_on_a_jetson() -> None:
    assert "NVIDIA" in device_name() or "Jetson" in device_name()


def test_nvpmodel_reports_a_power_mode_when_on_a_jetson() -> None:
    nvpmodel = shutil.which("nvpmodel")
    assert nvpmodel, "nvpmodel is part of L4T; is this a full JetPack install?"
    out = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True, timeout=10).stdout
    assert "NV Power Mode" in out


def test_fp32_engine_classifies_on_the_board_when_built_there(engines_dir, test_split) -> None:
    from edge_service.profile.accuracy import engine_accuracy
    from edge_service.repository import load_catalog, verified_artifact_path
    from edge_service.runtime.ort_engine import OrtEngine, default_providers

    fam = engines_dir / "fashion"
    catalog = load_catalog(fam)
    v = catalog.variant("base@fp32")
    with OrtEngine(
        verified_artifact_path(fam, v.artifact),
        variant_id=v.id,
        precision=v.precision,
        providers=default_providers(),
    ) as engine:
        assert engine_accuracy(engine, test_split.subset(500), catalog.input.spec()) >= 0.9
