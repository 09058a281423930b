"""tegrastats: each board's recorded lines, and the source running a stand-in binary."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from jetson_boards import AGX_ORIN, BOARDS, FIXTURES, NANO, ORIN_NANO, XAVIER_NX
from jetson_boards import fixture_text as text

from edge_service.errors import MonitorError
from edge_service.monitor import PowerMode, TegrastatsSource, parse_tegrastats
from edge_service.monitor.emulated import EmulatedNvpModel


def lines(board: str) -> list[str]:
    return [line for line in text(board, "tegrastats.txt").splitlines() if line.strip()]


EVERY_LINE = [(board, line) for board in BOARDS for line in lines(board)]


@pytest.mark.parametrize(("board", "line"), EVERY_LINE)
def test_parse_tegrastats_gives_a_sane_context_when_given_every_recorded_line(
    board: str, line: str
) -> None:
    ctx = parse_tegrastats(line, t=5.0)
    assert (ctx.source, ctx.t) == ("tegrastats", 5.0)
    assert 0.0 <= ctx.cpu_load <= 1.0
    assert 0.0 < ctx.mem_available_mb < ctx.mem_total_mb
    assert ctx.power_mw and not {"RAM", "SWAP", "IRAM"} & set(ctx.power_mw)
    assert all(-40.0 < t < 125.0 for t in ctx.temps_c.values())


def test_parse_tegrastats_reads_unitless_rails_and_off_cores_when_a_nano_runs_jetpack_4() -> None:
    # JetPack 4 line: "POM_5V_IN 2167/2167" (mW, no unit), two cores "off", GPU gated.
    ctx = parse_tegrastats(lines(NANO)[0])
    assert ctx.power_mw == {"POM_5V_IN": 2167.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 374.0}
    assert ctx.cpu_online == 2
    assert ctx.cpu_load == pytest.approx(0.115)
    assert ctx.cpu_freqs_hz == (102_000_000, 102_000_000)
    assert (ctx.gpu_freq_hz, ctx.gpu_load) == (None, 0.0)
    assert (ctx.mem_total_mb, ctx.mem_available_mb) == (3956.0, 3956.0 - 1573.0)
    assert ctx.temps_c["PMIC"] == 100.0


def test_parse_tegrastats_reads_the_gpu_clock_when_a_nano_line_has_gr3d_at_mhz() -> None:
    ctx = parse_tegrastats(lines(NANO)[1])
    assert ctx.gpu_freq_hz == 921_000_000
    assert ctx.gpu_load == pytest.approx(0.76)
    assert ctx.cpu_online == 4


def test_parse_tegrastats_reads_mw_rails_when_xavier_nx_runs_jetpack_5() -> None:
    ctx = parse_tegrastats(lines(XAVIER_NX)[0])
    assert ctx.power_mw == {"VDD_IN": 4351.0, "VDD_CPU_GPU_CV": 1491.0, "VDD_SOC": 1416.0}
    assert ctx.power_total_mw == 4351.0
    assert ctx.gpu_freq_hz == 510_000_000
    assert ctx.gpu_load == pytest.approx(0.41)


def test_parse_tegrastats_reads_bracketed_gpc_clock_and_drops_minus_256_on_orin_nano() -> None:
    # JetPack 6 Orin Nano: "GR3D_FREQ 0%@[305]" and cv0-cv2 "@-256C" (no DLA).
    ctx = parse_tegrastats(lines(ORIN_NANO)[0])
    assert ctx.gpu_freq_hz == 305_000_000
    assert not any(name.startswith("cv") for name in ctx.temps_c)
    assert ctx.temps_c["tj"] == pytest.approx(46.281)


def test_parse_tegrastats_reads_twelve_cores_and_two_gpcs_when_agx_orin_reports() -> None:
    ctx = parse_tegrastats(lines(AGX_ORIN)[0])
    assert ctx.cpu_online == 12
    assert ctx.gpu_freq_hz == 816_000_000
    assert set(ctx.power_mw) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert ctx.power_total_mw == pytest.approx(3087 + 494 + 3326 + 503)


def test_parse_tegrastats_raises_monitor_error_when_the_line_is_not_tegrastats() -> None:
    with pytest.raises(MonitorError, match="not a tegrastats line"):
        parse_tegrastats("Error: tegrastats must be run as root\n")


def stand_in(tmp_path: Path, body: str) -> str:
    """An executable that plays tegrastats (records its arguments, then runs `body`)."""
    script = tmp_path / "tegrastats"
    script.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/args"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_tegrastats_source_reports_the_latest_line_when_the_binary_prints(tmp_path: Path) -> None:
    recorded = FIXTURES / ORIN_NANO / "tegrastats.txt"
    binary = stand_in(tmp_path, f'cat "{recorded}"\nexec sleep 30')
    source = TegrastatsSource(binary, interval_ms=200, nvpmodel=EmulatedNvpModel(apply=False))
    try:
        ctx = source.sample()
        assert ctx.source == "tegrastats"
        assert ctx.power_mode == PowerMode(0, "MAXN")
        assert (tmp_path / "args").read_text().split() == ["--interval", "200"]
    finally:
        source.close()
        source.close()


def test_tegrastats_source_raises_monitor_error_when_the_binary_exits(tmp_path: Path) -> None:
    source = TegrastatsSource(stand_in(tmp_path, "exit 3"), first_line_timeout_s=10.0)
    try:
        with pytest.raises(MonitorError, match="exited with 3"):
            source.sample()
    finally:
        source.close()


def test_tegrastats_source_raises_monitor_error_when_the_binary_is_missing() -> None:
    with pytest.raises(MonitorError, match="not found"):
        TegrastatsSource("/nonexistent/tegrastats")
