"""TegraSource on recorded Jetson sysfs / procfs trees (see fixtures/README.md).

Each test names the board and the regression it guards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from jetson_boards import AGX_ORIN, BOARDS, NANO, ORIN_NANO, XAVIER_NX, write_file

from edge_service.errors import MonitorError
from edge_service.monitor import EmulatedNvpModel, NvpModel, PowerMode, TegraSource
from edge_service.monitor.procfs import memory_mb
from edge_service.monitor.sysfs import parse_cpu_list
from edge_service.monitor.tegra_source import is_jetson

Tree = Callable[[str], Path]


@dataclass(frozen=True)
class Expected:
    device: str
    mode: PowerMode
    gpu_hz: int
    gpu_max_hz: int
    gpu_load: float
    cpu_online: int
    mem_total_mb: float
    rails: frozenset[str]
    total_mw: float
    gpu_shared_mb: float | None


EXPECTED = {
    NANO: Expected(
        "NVIDIA Jetson Nano Developer Kit",
        PowerMode(0, "MAXN"),
        921_600_000,
        921_600_000,
        0.253,
        4,
        4059432 / 1024,
        frozenset({"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}),
        3482.0,  # POM_5V_IN alone: the other rails are parts of it
        412292 / 1024,  # NvMapMemUsed in /proc/meminfo
    ),
    XAVIER_NX: Expected(
        "NVIDIA Jetson Xavier NX Developer Kit",
        PowerMode(8, "MODE_20W_6CORE"),
        510_000_000,
        1_109_250_000,
        0.415,
        6,
        7018496 / 1024,
        frozenset({"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}),
        5048 * 862 / 1000,  # VDD_IN from mV x mA
        None,
    ),
    ORIN_NANO: Expected(
        "NVIDIA Jetson Orin Nano Developer Kit",
        PowerMode(0, "15W"),
        624_750_000,
        624_750_000,
        0.732,
        6,
        7620.0,
        frozenset({"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}),
        5096 * 1003 / 1000,
        None,
    ),
    AGX_ORIN: Expected(
        "NVIDIA Jetson AGX Orin Developer Kit",
        PowerMode(0, "MAXN"),
        816_000_000,
        1_300_500_000,
        0.318,
        12,
        64335836 / 1024,
        frozenset({"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}),
        (4976 * 621 + 4976 * 99 + 4984 * 667 + 4984 * 101) / 1000,  # no VDD_IN: the sum
        1348864 / 1024,  # the nvmap debugfs client table's total line
    ),
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("board", BOARDS)
def test_tegra_source_reads_each_board_into_the_recorded_values(
    board: str, board_tree: Tree
) -> None:
    ctx = TegraSource(board_tree(board)).sample()
    want = EXPECTED[board]
    assert ctx.source == "tegra"
    assert ctx.device == want.device
    assert ctx.power_mode == want.mode
    assert (ctx.gpu_freq_hz, ctx.gpu_max_freq_hz) == (want.gpu_hz, want.gpu_max_hz)
    assert ctx.gpu_load == pytest.approx(want.gpu_load)
    assert ctx.cpu_online == want.cpu_online
    assert ctx.mem_total_mb == pytest.approx(want.mem_total_mb)
    assert set(ctx.power_mw) == want.rails
    assert ctx.power_total_mw == pytest.approx(want.total_mw)
    assert ctx.extra.get("gpu_shared_mb") == (
        pytest.approx(want.gpu_shared_mb) if want.gpu_shared_mb else None
    )


@pytest.mark.parametrize("board", BOARDS)
def test_tegra_source_gives_a_sane_context_when_sampled_twice(board: str, board_tree: Tree) -> None:
    source = TegraSource(board_tree(board))
    for ctx in (source.sample(), source.sample()):
        assert 0.0 <= ctx.cpu_load <= 1.0
        assert 0.0 < ctx.mem_available_mb <= ctx.mem_total_mb
        assert len(ctx.cpu_freqs_hz) == ctx.cpu_online
        assert all(-40.0 < t < 125.0 for t in ctx.temps_c.values())
        assert all(mw > 0 for mw in ctx.power_mw.values())
        assert ctx.throttled is False
    source.close()


def test_tegra_source_skips_nc_and_sum_channels_when_agx_orin_has_two_ina3221(
    board_tree: Tree,
) -> None:
    # AGX Orin: 1-0041 has "NC" channels, each chip a "sum of shunt voltages" channel,
    # and the two chips sit at different hwmon indexes (hwmon2, hwmon3).
    rails = TegraSource(board_tree(AGX_ORIN)).sample().power_mw
    assert "NC" not in rails
    assert "sum of shunt voltages" not in rails
    assert rails["VDDQ_VDD2_1V8AO"] == pytest.approx(4984 * 101 / 1000)


def test_tegra_source_reads_iio_power_files_when_a_nano_runs_jetpack_4(board_tree: Tree) -> None:
    # JetPack 4: ina3221x driver, iio:device0/in_powerN_input already in mW.
    rails = TegraSource(board_tree(NANO)).sample().power_mw
    assert rails == {"POM_5V_IN": 3482.0, "POM_5V_GPU": 1186.0, "POM_5V_CPU": 1027.0}


def test_tegra_source_leaves_out_cv_zones_when_orin_nano_reads_minus_256(board_tree: Tree) -> None:
    # Orin Nano has no DLA: cv0-cv2 read -256 C, which is "sensor off", not a temperature.
    temps = TegraSource(board_tree(ORIN_NANO)).sample().temps_c
    assert not any(name.startswith("cv") for name in temps)
    assert temps["tj-thermal"] == pytest.approx(48.312)


def test_tegra_source_is_not_throttled_when_nano_pmic_reads_100c_past_a_fan_trip(
    board_tree: Tree,
) -> None:
    # Nano: PMIC-Die always reads 100 C (no trip point) and thermal-fan-est is past its
    # first *active* (fan) trip; neither caps clocks.
    ctx = TegraSource(board_tree(NANO)).sample()
    assert ctx.temps_c["PMIC-Die"] == 100.0
    assert ctx.temps_c["thermal-fan-est"] > 51.0
    assert ctx.throttled is False


def test_tegra_source_reports_throttled_when_a_zone_passes_its_passive_trip(
    board_tree: Tree,
) -> None:
    root = board_tree(ORIN_NANO)
    source = TegraSource(root)
    write_file(root, "sys/devices/virtual/thermal/thermal_zone0/temp", "99500\n")
    assert source.sample().throttled is True


def test_tegra_source_reports_throttled_when_soctherm_cpu_balanced_is_engaged(
    board_tree: Tree,
) -> None:
    root = board_tree(NANO)
    source = TegraSource(root)
    write_file(root, "sys/devices/virtual/thermal/cooling_device1/cur_state", "3\n")
    assert source.sample().throttled is True


def test_tegra_source_measures_cpu_load_over_online_cores_when_proc_stat_advances(
    board_tree: Tree,
) -> None:
    # Orin Nano switched to 7W (cores 4-5 off): only cores 0-3 count.
    root = board_tree(ORIN_NANO)
    source = TegraSource(root)
    write_file(root, "sys/devices/system/cpu/online", "0-3\n")
    stat = [
        "cpu0 20187 81 6120 981269 412 0 2212 0 0 0",  # +75 busy, +25 idle
        "cpu1 16087 62 4802 984037 298 0 402 0 0 0",
        "cpu2 15896 71 4788 984127 301 0 350 0 0 0",
        "cpu3 15574 66 4811 983946 297 0 348 0 0 0",
        "cpu4 15401 68 4799 984102 299 0 352 0 0 0",  # +100 idle, but offline now
    ]
    write_file(root, "proc/stat", "cpu  1 1 1 1 1 0 0 0 0 0\n" + "\n".join(stat) + "\n")
    ctx = source.sample()
    assert ctx.cpu_online == 4
    assert ctx.cpu_load == pytest.approx(0.75)
    assert source.sample().cpu_load == pytest.approx(0.75)  # no time passed: keep the last


def test_tegra_source_follows_the_mode_when_nvpmodel_status_changes_after_a_refresh(
    board_tree: Tree,
) -> None:
    root = board_tree(ORIN_NANO)
    clock = FakeClock()
    source = TegraSource(root, mode_refresh_s=5.0, clock=clock)
    assert source.sample().power_mode == PowerMode(0, "15W")
    write_file(root, "var/lib/nvpmodel/status", "pmode:0001\n")
    clock.now += 4.9
    assert source.sample().power_mode == PowerMode(0, "15W")
    clock.now += 0.1
    assert source.sample().power_mode == PowerMode(1, "7W")


def test_tegra_source_runs_nvpmodel_once_per_refresh_when_sampled_at_10hz(
    board_tree: Tree,
) -> None:
    runs: list[list[str]] = []

    def runner(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        runs.append(args)
        return subprocess.CompletedProcess(args, 0, "NV Power Mode: 15W\n0\n", "")

    clock = FakeClock()
    source = TegraSource(board_tree(ORIN_NANO), NvpModel(runner=runner), clock=clock)
    for _ in range(49):
        assert source.sample().power_mode == PowerMode(0, "15W")
        clock.now += 0.1
    assert runs == [["nvpmodel", "-q"]]


def test_tegra_source_starts_no_process_when_it_samples(
    board_tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = TegraSource(board_tree(AGX_ORIN))

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a sample must not start a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert source.sample().cpu_online == 12


def test_tegra_source_reports_the_emulated_mode_when_given_an_emulated_nvpmodel(
    board_tree: Tree,
) -> None:
    modes = EmulatedNvpModel(apply=False)
    modes.set_mode(2)
    ctx = TegraSource(board_tree(XAVIER_NX), modes, mode_refresh_s=0).sample()
    assert ctx.power_mode == PowerMode(2, "MIN")


def test_tegra_source_finds_the_l4t35_orin_gpu_when_devfreq_is_named_ga10b(tmp_path: Path) -> None:
    # Orin on JetPack 5 (L4T 35): devfreq node 17000000.ga10b, load read via gpu.0.
    node = "sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
    write_file(tmp_path, f"{node}/cur_freq", "306000000\n")
    write_file(tmp_path, f"{node}/max_freq", "1300500000\n")
    write_file(tmp_path, "sys/devices/17000000.ga10b/load", "120\n")
    (tmp_path / "sys/devices/gpu.0").symlink_to("17000000.ga10b")
    (tmp_path / "sys/class/devfreq").mkdir(parents=True)
    (tmp_path / "sys/class/devfreq/17000000.ga10b").symlink_to(f"../../../{node}")
    write_file(tmp_path, "proc/meminfo", "MemTotal: 31000000 kB\nMemAvailable: 30000000 kB\n")
    write_file(tmp_path, "sys/devices/system/cpu/online", "0-7\n")
    ctx = TegraSource(tmp_path).sample()
    assert (ctx.gpu_freq_hz, ctx.gpu_max_freq_hz) == (306_000_000, 1_300_500_000)
    assert ctx.gpu_load == pytest.approx(0.12)
    assert ctx.power_mode is None  # no nvpmodel status file
    assert ctx.throttled is None  # no trip points, no throttle devices: cannot tell


def test_tegra_source_refuses_when_root_has_no_l4t_release_or_gpu_devfreq(tmp_path: Path) -> None:
    assert not is_jetson(tmp_path)
    with pytest.raises(MonitorError, match="not a Jetson"):
        TegraSource(tmp_path)


def test_tegra_source_raises_monitor_error_when_meminfo_disappears(board_tree: Tree) -> None:
    root = board_tree(XAVIER_NX)
    source = TegraSource(root)
    (root / "proc/meminfo").unlink()
    with pytest.raises(MonitorError, match="MemTotal"):
        source.sample()


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-3,5", [0, 1, 2, 3, 5]), ("0", [0]), ("0-11\n", list(range(12))), ("", []), ("x,2", [2])],
)
def test_parse_cpu_list_expands_ranges_when_given_a_kernel_cpu_list(
    text: str, cpus: list[int]
) -> None:
    assert parse_cpu_list(text) == cpus


def test_memory_mb_estimates_available_when_an_old_kernel_lacks_memavailable() -> None:
    info = {"MemTotal": 4096 * 1024, "MemFree": 1024 * 1024, "Buffers": 0, "Cached": 512 * 1024}
    assert memory_mb(info) == (4096.0, 1536.0)
    assert memory_mb({}) is None
