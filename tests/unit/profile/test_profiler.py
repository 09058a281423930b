"""The profiler on a real tiny family (two ONNX classifiers built with the BYO builder) in
two emulated power modes: every core, and one core."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import onnx_classifier as classifier
from unit.monitor.jetson_boards import ORIN_NANO, build_tree, fixture_text

from edge_service.compile.byo import OnnxFamilyRequest, build_from_onnx
from edge_service.errors import ConfigError, MonitorError
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.monitor.emulated import EmulatedNvpModel, EmulatedPowerMode
from edge_service.monitor.nvpmodel import NvpModel
from edge_service.monitor.tegra_source import TegraSource
from edge_service.profile import modes
from edge_service.profile.energy import CpuTimeEnergyMeter, RailEnergyMeter
from edge_service.profile.profiler import ProfileEvent, is_fresh, profile_family
from edge_service.repository import Catalog, load_catalog

onnx = pytest.importorskip("onnx")

DEVICE = "test-box"
CORES = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
pytestmark = pytest.mark.skipif(not CORES, reason="emulated power modes need CPU affinity")


@pytest.fixture
def family(tmp_path: Path) -> Path:
    """A two-variant FP32 family (``small@fp32``, ``big@fp32``) built from ONNX files."""
    models = (
        classifier(tmp_path / "small.onnx", 16, 4, seed=1),
        classifier(tmp_path / "big.onnx", 16, 4, seed=2, hidden=8),
    )
    family_dir = tmp_path / "engines" / "toys"
    req = OnnxFamilyRequest(
        family_dir=family_dir,
        models=models,
        task="classification",
        calibration_dir=tmp_path,
        precisions=("fp32",),
        threads=1,
    )
    build_from_onnx(req, progress=lambda msg: None)
    return family_dir


def two_modes() -> EmulatedNvpModel:
    """0 ``ALL`` (every usable core), 1 ``ONE`` (the last one, one thread)."""
    return EmulatedNvpModel(
        [
            EmulatedPowerMode(0, "ALL", CORES, len(CORES)),
            EmulatedPowerMode(1, "ONE", CORES[-1:], 1),
        ]
    )


def run(family: Path, events: list[ProfileEvent] | None = None, **kwargs) -> Catalog:
    def collect(event: ProfileEvent) -> None:
        if events is not None:
            events.append(event)

    options = {"modes": (0, 1), "batches": (1, 8), "runs": 10, "warmup": 2, **kwargs}
    options.setdefault("energy_seconds", 0.0)
    options.setdefault("nvpmodel", two_modes())
    options.setdefault("meter", CpuTimeEnergyMeter())
    return profile_family(
        load_catalog(family), family, device=DEVICE, on_progress=collect, **options
    )


def statuses(events: list[ProfileEvent]) -> list[tuple[str, str, str]]:
    return [(e.variant_id, e.mode, e.status) for e in events]


def test_every_variant_gets_a_profile_per_mode_when_profiling_two_emulated_modes(family):
    before = os.sched_getaffinity(0)
    returned = run(family)
    saved = load_catalog(family)
    assert saved == returned
    for variant in saved.variants:
        by_mode = variant.profiles[DEVICE]
        assert set(by_mode) == {"ALL", "ONE"}
        for mode, cores in (("ALL", len(CORES)), ("ONE", 1)):
            prof = by_mode[mode]
            assert set(prof.latency) == {"1", "8"}
            assert all(s.p50_ms > 0 and s.p99_ms >= s.p50_ms for s in prof.latency.values())
            assert prof.latency["1"].runs == 10
            assert prof.cores == cores and prof.threads == cores
            assert prof.energy_mj is not None and prof.energy_mj > 0
            assert prof.energy_estimated
            assert prof.power_mw is not None and prof.power_mw > 0
            assert prof.memory_mb is not None and prof.memory_mb >= 0
            assert prof.backend.startswith("onnxruntime[")
        builder_device = next(k for k in variant.profiles if k != DEVICE)
        assert set(variant.profiles[builder_device]) == {DEFAULT_POWER_MODE}  # left as it was
    assert os.sched_getaffinity(0) == before


def test_measured_pairs_are_skipped_when_resuming_an_interrupted_run(family):
    before = os.sched_getaffinity(0)

    class InterruptError(Exception):
        pass

    def stop_after_first(event: ProfileEvent) -> None:
        raise InterruptError

    with pytest.raises(InterruptError):
        profile_family(
            load_catalog(family),
            family,
            device=DEVICE,
            modes=(0, 1),
            batches=(1,),
            runs=10,
            warmup=1,
            energy_seconds=0.0,
            nvpmodel=two_modes(),
            meter=CpuTimeEnergyMeter(),
            on_progress=stop_after_first,
        )
    assert os.sched_getaffinity(0) == before
    first = load_catalog(family).variants[0]
    assert set(first.profiles[DEVICE]) == {"ALL"}  # saved before the interrupt

    events: list[ProfileEvent] = []
    run(family, events, batches=(1,))
    assert [s for *_, s in statuses(events)] == ["skipped", "measured", "measured", "measured"]
    assert events[0].variant_id == first.id and events[0].mode == "ALL"

    again: list[ProfileEvent] = []
    run(family, again, batches=(1,))
    assert {s for *_, s in statuses(again)} == {"skipped"}
    again.clear()
    run(family, again, batches=(1,), resume=False)
    assert {s for *_, s in statuses(again)} == {"measured"}
    assert os.sched_getaffinity(0) == before


def test_profile_is_stale_when_the_artifact_is_rewritten_after_it(family):
    run(family, batches=(1,), modes=(1,))
    variant = load_catalog(family).variants[0]
    assert is_fresh(variant, family, DEVICE, "ONE")
    assert not is_fresh(variant, family, DEVICE, "ALL")  # never measured there
    assert not is_fresh(variant, family, "other-board", "ONE")
    builder_device = next(k for k in variant.profiles if k != DEVICE)
    # the builder's profile has no energy figure: never taken for this profiler's
    assert not is_fresh(variant, family, builder_device, DEFAULT_POWER_MODE)
    artifact = family / variant.artifact.path
    later = artifact.stat().st_mtime + 3600
    os.utime(artifact, (later, later))
    assert not is_fresh(variant, family, DEVICE, "ONE")


def test_a_corrupt_artifact_is_skipped_and_affinity_restored_when_profiling(family):
    before = os.sched_getaffinity(0)
    catalog = load_catalog(family)
    broken, good = catalog.variants[0], catalog.variants[1]
    (family / broken.artifact.path).write_bytes(b"not an onnx model")
    events: list[ProfileEvent] = []
    result = run(family, events, batches=(1,))
    assert os.sched_getaffinity(0) == before
    failed = [e for e in events if e.status == "failed"]
    assert [(e.variant_id, e.mode) for e in failed] == [(broken.id, "ALL"), (broken.id, "ONE")]
    assert all(e.error and "checksum" in e.error for e in failed)
    assert DEVICE not in result.variant(broken.id).profiles
    assert set(result.variant(good.id).profiles[DEVICE]) == {"ALL", "ONE"}


def test_unknown_modes_are_refused_before_anything_is_pinned(family):
    before = os.sched_getaffinity(0)
    with pytest.raises(ConfigError, match="unknown"):
        run(family, modes=(0, 7))
    assert os.sched_getaffinity(0) == before
    assert DEVICE not in load_catalog(family).variants[0].profiles


def test_fixed_batch_sizes_are_refused_when_none_is_positive(family):
    with pytest.raises(ConfigError):
        run(family, batches=(0,))


class OrinNanoNvpModel:
    """Stands in for ``nvpmodel`` on the recorded Orin Nano: ``-q`` prints the recorded
    output of the current mode, ``-m N`` switches (unless ``stuck``: a mode that needs a
    reboot does not take)."""

    def __init__(self, stuck: bool = False) -> None:
        self.mode, self.stuck, self.calls = 0, stuck, []

    def __call__(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(args[1:])
        if args[1] == "-m" and not self.stuck:
            self.mode = int(args[2])
        recorded = {0: "nvpmodel-q.txt", 1: "nvpmodel-q-7w.txt"}[self.mode]
        out = fixture_text(ORIN_NANO, recorded) if args[1] == "-q" else ""
        return subprocess.CompletedProcess(args, 0, out, "")


@pytest.fixture
def orin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recorded Orin Nano's /sys and /etc, with no settling pause after a mode switch."""
    monkeypatch.setattr(modes, "JETSON_SETTLE_S", 0.0)
    root = build_tree(ORIN_NANO, tmp_path / "orin")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/nvpmodel.conf").write_text(fixture_text(ORIN_NANO, "nvpmodel.conf"))
    return root


def test_nvpmodel_modes_get_rail_energy_and_the_mode_restored_on_a_recorded_orin_nano(family, orin):
    runner = OrinNanoNvpModel()
    nvp = NvpModel(runner=runner, conf=orin / "etc/nvpmodel.conf")
    result = run(
        family,
        modes=None,
        batches=(1,),
        nvpmodel=nvp,
        meter=RailEnergyMeter(TegraSource(orin), period_s=0.01),
        energy_seconds=0.03,
        root=orin,
    )
    for variant in result.variants:
        by_mode = variant.profiles[DEVICE]
        assert set(by_mode) == {"15W", "7W"}
        prof = by_mode["7W"]
        assert not prof.energy_estimated and prof.energy_mj and prof.energy_mj > 0
        assert prof.cores == 6 and prof.gpu_max_freq_hz == 624_750_000
        assert prof.threads == 0
    assert ["-m", "1"] in runner.calls
    assert runner.calls[-1] == ["-m", "0"] and runner.mode == 0  # back where it was


def test_a_mode_that_does_not_take_stops_the_run_and_restores_the_mode(family, orin):
    runner = OrinNanoNvpModel(stuck=True)
    nvp = NvpModel(runner=runner, conf=orin / "etc/nvpmodel.conf")
    with pytest.raises(MonitorError, match="reboot"):
        run(family, modes=(1,), nvpmodel=nvp, root=orin)
    assert runner.calls[-1] == ["-m", "0"]
    assert DEVICE not in load_catalog(family).variants[0].profiles


def test_cli_profiles_a_family_and_reports_json_when_asked(family):
    import json

    from typer.testing import CliRunner

    from edge_service.cli import app

    args = ["profile", "--engines-dir", str(family.parent), "--family", family.name]
    args += ["--modes", "0", "--runs", "5", "--batches", "1", "--energy-seconds", "0", "--json"]
    before = os.sched_getaffinity(0)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert [(r["mode"], r["status"]) for r in report["results"]] == [("MAXN", "measured")] * 2
    assert all(r["p50_ms"] > 0 and r["energy_mj"] > 0 for r in report["results"])
    assert os.sched_getaffinity(0) == before


def test_cli_fails_with_a_message_when_the_family_is_missing(tmp_path):
    from typer.testing import CliRunner

    from edge_service.cli import app

    result = CliRunner().invoke(app, ["profile", "--engines-dir", str(tmp_path), "--family", "x"])
    assert result.exit_code == 2
    assert "edge-service build" in result.output
