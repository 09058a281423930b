"""LinuxSource on fixture cgroup / sysfs trees written into tmp_path, and on this machine."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from edge_service.monitor import LinuxSource, MonitorSource
from edge_service.monitor.cgroup import own_cgroups, read_limits
from edge_service.monitor.linux_source import busy_fraction, usable_cores

MIB = 1024 * 1024
AFFINITY = len(usable_cores())
HOST_TOTAL_MB = psutil.virtual_memory().total / MIB

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def source_on(
    tmp_path: Path, cgroup_files: dict[str, str], host_files: dict[str, str] | None = None
) -> LinuxSource:
    cgroup = write_tree(tmp_path / "cgroup", cgroup_files)
    host = write_tree(tmp_path / "host", host_files or {})
    return LinuxSource(cgroup_root=cgroup, root=host)


def v2(**files: str) -> dict[str, str]:
    return {"cgroup.controllers": "cpuset cpu io memory pids", **files}


def test_linux_source_caps_cores_by_quota_and_affinity_when_cgroup_v2_sets_cpu_max(
    tmp_path: Path,
) -> None:
    ctx = source_on(tmp_path, v2(**{"cpu.max": "150000 100000"})).sample()
    assert ctx.cpu_online == min(AFFINITY, 2)


def test_linux_source_caps_memory_by_limit_when_cgroup_v2_sets_memory_max(tmp_path: Path) -> None:
    files = v2(**{"memory.max": str(256 * MIB), "memory.current": str(64 * MIB)})
    ctx = source_on(tmp_path, files).sample()
    assert ctx.mem_total_mb == pytest.approx(256.0)
    assert ctx.mem_available_mb == pytest.approx(192.0)


def test_linux_source_leaves_page_cache_out_of_usage_when_cgroup_v2_reports_inactive_file(
    tmp_path: Path,
) -> None:
    files = v2(
        **{
            "memory.max": str(256 * MIB),
            "memory.current": str(200 * MIB),
            "memory.stat": f"anon {100 * MIB}\nfile {100 * MIB}\ninactive_file {96 * MIB}",
        }
    )
    ctx = source_on(tmp_path, files).sample()
    assert ctx.mem_available_mb == pytest.approx(152.0)


def test_linux_source_reports_the_host_when_cgroup_v2_limits_are_max(tmp_path: Path) -> None:
    files = v2(**{"cpu.max": "max 100000", "memory.max": "max", "memory.current": "12345"})
    ctx = source_on(tmp_path, files).sample()
    assert ctx.cpu_online == AFFINITY
    assert ctx.mem_total_mb == pytest.approx(HOST_TOTAL_MB)


def test_linux_source_takes_the_tightest_ancestor_limit_when_own_cgroup_is_nested(
    tmp_path: Path,
) -> None:
    files = v2(
        **{
            "cpu.max": "max 100000",
            "app.slice/memory.max": str(128 * MIB),
            "app.slice/svc/memory.max": str(512 * MIB),
            "app.slice/svc/memory.current": str(28 * MIB),
        }
    )
    host = {"proc/self/cgroup": "0::/app.slice/svc"}
    ctx = source_on(tmp_path, files, host).sample()
    assert ctx.mem_total_mb == pytest.approx(128.0)
    assert ctx.mem_available_mb == pytest.approx(100.0)


def test_linux_source_caps_cores_and_memory_when_cgroup_v1_sets_quota_and_limit(
    tmp_path: Path,
) -> None:
    files = {
        "cpu/cpu.cfs_quota_us": "50000",
        "cpu/cpu.cfs_period_us": "100000",
        "memory/memory.limit_in_bytes": str(300 * MIB),
        "memory/memory.usage_in_bytes": str(100 * MIB),
        "memory/memory.stat": f"cache {50 * MIB}\ntotal_inactive_file {20 * MIB}",
    }
    ctx = source_on(tmp_path, files).sample()
    assert ctx.cpu_online == 1
    assert ctx.mem_total_mb == pytest.approx(300.0)
    assert ctx.mem_available_mb == pytest.approx(220.0)


def test_linux_source_reports_the_host_when_cgroup_v1_limits_are_unlimited(tmp_path: Path) -> None:
    files = {
        "cpu/cpu.cfs_quota_us": "-1",
        "cpu/cpu.cfs_period_us": "100000",
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "memory/memory.usage_in_bytes": str(100 * MIB),
    }
    ctx = source_on(tmp_path, files).sample()
    assert ctx.cpu_online == AFFINITY
    assert ctx.mem_total_mb == pytest.approx(HOST_TOTAL_MB)


def test_linux_source_reports_the_host_when_there_are_no_cgroup_files(tmp_path: Path) -> None:
    ctx = source_on(tmp_path, {}).sample()
    assert ctx.cpu_online == AFFINITY
    assert ctx.mem_total_mb == pytest.approx(HOST_TOTAL_MB)
    assert 0 < ctx.mem_available_mb <= ctx.mem_total_mb


def test_linux_source_reports_the_host_total_when_the_limit_exceeds_host_memory(
    tmp_path: Path,
) -> None:
    files = v2(**{"memory.max": str(int(HOST_TOTAL_MB * 4) * MIB), "memory.current": "0"})
    assert source_on(tmp_path, files).sample().mem_total_mb == pytest.approx(HOST_TOTAL_MB)


def test_linux_source_reads_clocks_and_temperatures_when_sysfs_has_them(tmp_path: Path) -> None:
    host = {
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "1200000",
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq": "1500000",
        "sys/devices/system/cpu/cpu10/cpufreq/scaling_cur_freq": "2000000",
        "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "999",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal",
        "sys/class/thermal/thermal_zone0/temp": "48500",
        "sys/class/thermal/thermal_zone1/type": "gpu-thermal",
        "sys/class/thermal/thermal_zone1/temp": "47000",
        "sys/class/thermal/thermal_zone2/type": "pmic-thermal",
        "sys/class/thermal/thermal_zone10/type": "cpu-thermal",
        "sys/class/thermal/thermal_zone10/temp": "50000",
    }
    ctx = source_on(tmp_path, {}, host).sample()
    assert ctx.cpu_freqs_hz == (1_200_000_000, 1_500_000_000, 2_000_000_000)
    assert ctx.temps_c == {"cpu-thermal": 48.5, "gpu-thermal": 47.0, "thermal_zone10": 50.0}


def test_linux_source_reports_no_clocks_or_temperatures_when_sysfs_lacks_them(
    tmp_path: Path,
) -> None:
    ctx = source_on(tmp_path, {}).sample()
    assert ctx.cpu_freqs_hz == ()
    assert ctx.temps_c == {}


def test_linux_source_names_the_jetson_when_the_device_tree_has_a_model(tmp_path: Path) -> None:
    host = {"proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit\x00"}
    ctx = source_on(tmp_path, {}, host).sample()
    assert ctx.device == "NVIDIA Jetson Orin Nano Developer Kit"


def test_linux_source_returns_sane_values_when_run_on_this_machine() -> None:
    source: MonitorSource = LinuxSource()
    try:
        for _ in range(2):
            ctx = source.sample()
            assert ctx.source == "linux"
            assert ctx.device
            assert 0.0 <= ctx.cpu_load <= 1.0
            assert ctx.cpu_online >= 1
            assert 0.0 < ctx.mem_available_mb <= ctx.mem_total_mb
            assert ctx.power_mode is None
            assert ctx.gpu_freq_hz is None
    finally:
        source.close()


def test_own_cgroups_maps_each_controller_when_proc_self_cgroup_is_hybrid(tmp_path: Path) -> None:
    path = write_tree(tmp_path, {"cgroup": "4:memory:/svc\n2:cpu,cpuacct:/svc/cpu\n0::/"})
    assert own_cgroups(path / "cgroup") == {
        "memory": "/svc",
        "cpu": "/svc/cpu",
        "cpuacct": "/svc/cpu",
        "": "/",
    }


def test_read_limits_ignores_the_own_path_when_it_is_not_under_the_mount(tmp_path: Path) -> None:
    root = write_tree(tmp_path, v2(**{"cpu.max": "200000 100000"}))
    assert read_limits(root, {"": "/docker/abc"}).cpu_cores == pytest.approx(2.0)


def times(busy: float, idle: float) -> CpuTimes:
    return CpuTimes(busy, 0.0, 0.0, idle, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_busy_fraction_counts_only_usable_cores_when_affinity_is_restricted() -> None:
    before = [times(0, 0), times(0, 0), times(0, 0)]
    now = [times(10, 0), times(1, 9), times(5, 5)]
    assert busy_fraction(before, now, [1, 2]) == pytest.approx(6 / 20)
    assert busy_fraction(before, now, [0, 1, 2]) == pytest.approx(16 / 30)


def test_busy_fraction_leaves_guest_time_out_when_it_is_counted_in_user() -> None:
    before = [times(0, 0)]
    now = [CpuTimes(10.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0)]
    assert busy_fraction(before, now, [0]) == pytest.approx(0.5)


def test_busy_fraction_is_none_when_no_time_passed_or_cpus_changed() -> None:
    snap = [times(1, 1)]
    assert busy_fraction(snap, snap, [0]) is None
    assert busy_fraction(snap, [*snap, times(1, 1)], [0]) is None
