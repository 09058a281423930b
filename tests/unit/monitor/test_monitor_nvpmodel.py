"""nvpmodel: recorded ``nvpmodel -q`` outputs and nvpmodel.conf files of each board."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from jetson_boards import AGX_ORIN, BOARDS, NANO, ORIN_NANO, XAVIER_NX, copy_board_file
from jetson_boards import fixture_text as text

from edge_service.errors import ConfigError, HostCommandError, MonitorError
from edge_service.monitor import NvpModel, PowerMode
from edge_service.monitor.nvpmodel import (
    CachedPowerMode,
    StatusFilePowerMode,
    parse_conf,
    parse_default,
    parse_query,
)


class RecordedRunner:
    """Stands in for subprocess.run with a recorded command output."""

    def __init__(self, stdout: str = "", returncode: int = 0, stderr: str = "") -> None:
        self.stdout, self.returncode, self.stderr = stdout, returncode, stderr
        self.calls: list[tuple[list[str], dict[str, object]]] = []

    def __call__(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, self.returncode, self.stdout, self.stderr)


class ScriptedQuery:
    """A power mode query that answers from a list (a MonitorError entry is raised)."""

    def __init__(self, answers: list[PowerMode | MonitorError]) -> None:
        self.answers = answers
        self.asked = 0

    def query(self) -> PowerMode:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, MonitorError):
            raise answer
        return answer


@pytest.mark.parametrize(
    ("board", "output", "mode"),
    [
        (NANO, "nvpmodel-q.txt", PowerMode(0, "MAXN")),  # JetPack 4: two plain lines
        (XAVIER_NX, "nvpmodel-q.txt", PowerMode(8, "MODE_20W_6CORE")),
        (ORIN_NANO, "nvpmodel-q.txt", PowerMode(0, "15W")),  # a name that is a wattage
        (ORIN_NANO, "nvpmodel-q-7w.txt", PowerMode(1, "7W")),
        (AGX_ORIN, "nvpmodel-q.txt", PowerMode(0, "MAXN")),  # after an NVPM WARN line
        (AGX_ORIN, "nvpmodel-q-verbose.txt", PowerMode(0, "MAXN")),  # --verbose
    ],
)
def test_parse_query_reads_the_mode_when_given_each_boards_recorded_output(
    board: str, output: str, mode: PowerMode
) -> None:
    assert parse_query(text(board, output)) == mode


def test_parse_query_raises_monitor_error_when_the_output_has_no_mode() -> None:
    with pytest.raises(MonitorError, match="NV Power Mode"):
        parse_query("bash: nvpmodel: command not found\n")
    with pytest.raises(MonitorError, match="mode id"):
        parse_query("NV Power Mode: MAXN\n")


@pytest.mark.parametrize(
    ("board", "modes", "default"),
    [
        (NANO, [(0, "MAXN"), (1, "5W")], 0),
        (XAVIER_NX, [(i, n) for i, n in enumerate(
            ["MODE_15W_2CORE", "MODE_15W_4CORE", "MODE_15W_6CORE", "MODE_10W_2CORE",
             "MODE_10W_4CORE", "MODE_10W_DESKTOP", "MODE_20W_2CORE", "MODE_20W_4CORE",
             "MODE_20W_6CORE"])], 8),
        (ORIN_NANO, [(0, "15W"), (1, "7W")], 0),
        (AGX_ORIN, [(0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W")], 2),
    ],
)  # fmt: skip
def test_parse_conf_lists_power_models_when_given_each_boards_nvpmodel_conf(
    board: str, modes: list[tuple[int, str]], default: int
) -> None:
    conf = text(board, "nvpmodel.conf")
    assert parse_conf(conf) == [PowerMode(i, n) for i, n in modes]
    assert parse_default(conf) == default


def test_nvpmodel_query_runs_q_without_a_shell_when_asked_for_the_mode() -> None:
    runner = RecordedRunner(text(XAVIER_NX, "nvpmodel-q.txt"))
    assert NvpModel(runner=runner).query() == PowerMode(8, "MODE_20W_6CORE")
    args, kwargs = runner.calls[0]
    assert args == ["nvpmodel", "-q"]
    assert not kwargs.get("shell")
    assert kwargs.get("timeout")


@pytest.mark.parametrize("board", BOARDS)
def test_nvpmodel_set_mode_runs_m_with_the_id_when_the_conf_defines_it(
    board: str, tmp_path: Path
) -> None:
    conf = copy_board_file(board, "nvpmodel.conf", tmp_path / "nvpmodel.conf")
    runner = RecordedRunner()
    NvpModel(binary="/usr/sbin/nvpmodel", runner=runner, conf=conf).set_mode(1)
    assert runner.calls[0][0] == ["/usr/sbin/nvpmodel", "-m", "1"]


@pytest.mark.parametrize("bad", [-1, "1", "1; reboot", 1.0, True, None])
def test_nvpmodel_set_mode_refuses_without_running_when_the_id_is_not_a_non_negative_int(
    bad: object,
) -> None:
    runner = RecordedRunner()
    with pytest.raises(ConfigError, match="non-negative integer"):
        NvpModel(runner=runner).set_mode(bad)  # type: ignore[arg-type]
    assert runner.calls == []


def test_nvpmodel_set_mode_refuses_and_lists_modes_when_the_id_is_not_in_the_conf(
    tmp_path: Path,
) -> None:
    conf = copy_board_file(ORIN_NANO, "nvpmodel.conf", tmp_path / "nvpmodel.conf")
    runner = RecordedRunner()
    with pytest.raises(ConfigError, match="0 15W, 1 7W"):
        NvpModel(runner=runner, conf=conf).set_mode(3)
    assert runner.calls == []


def test_nvpmodel_set_mode_raises_monitor_error_naming_root_when_nvpmodel_fails() -> None:
    runner = RecordedRunner(returncode=255, stderr="NVPM ERROR: failed to write\n")
    with pytest.raises(MonitorError, match="needs root"):
        NvpModel(runner=runner, conf=Path("/nonexistent.conf")).set_mode(0)


def test_failing_nvpmodel_is_a_502_host_command_error_when_it_exits_non_zero() -> None:
    runner = RecordedRunner(returncode=255, stderr="NVPM ERROR: failed\nto write\n")
    with pytest.raises(HostCommandError) as failed:
        NvpModel(runner=runner, conf=Path("/nonexistent.conf")).set_mode(1)
    assert failed.value.http_status == 502 and failed.value.code == "host_command_failed"
    assert "nvpmodel -m 1 exited with 255: NVPM ERROR: failed to write" in failed.value.message


def test_nvpmodel_query_raises_monitor_error_when_the_binary_does_not_exist() -> None:
    with pytest.raises(MonitorError, match="not found"):
        NvpModel(binary="/nonexistent/nvpmodel").query()


def test_nvpmodel_modes_raises_monitor_error_when_the_conf_is_missing() -> None:
    with pytest.raises(MonitorError, match="cannot read"):
        NvpModel(conf=Path("/nonexistent/nvpmodel.conf")).modes()


def test_status_file_names_the_mode_from_the_conf_when_nvpmodel_has_set_one(
    tmp_path: Path,
) -> None:
    copy_board_file(XAVIER_NX, "nvpmodel.conf", tmp_path / "etc/nvpmodel.conf")
    status = tmp_path / "var/lib/nvpmodel/status"
    status.parent.mkdir(parents=True)
    status.write_text("pmode:0005 fmode:quiet\n")
    assert StatusFilePowerMode(tmp_path).query() == PowerMode(5, "MODE_10W_DESKTOP")
    status.write_text("pmode:0042\n")
    assert StatusFilePowerMode(tmp_path).query() == PowerMode(42, "mode42")
    status.unlink()
    with pytest.raises(MonitorError, match="pmode"):
        StatusFilePowerMode(tmp_path).query()


def test_cached_power_mode_keeps_the_last_mode_and_logs_once_when_queries_start_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    source = ScriptedQuery([PowerMode(0, "MAXN"), MonitorError("nvpmodel hung")])
    cache = CachedPowerMode(source, refresh_s=5.0, clock=lambda: now[0])
    assert cache.current() == PowerMode(0, "MAXN")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            now[0] += 5.0
            assert cache.current() == PowerMode(0, "MAXN")
    assert source.asked == 4
    assert [r.message for r in caplog.records].count("power mode unavailable: nvpmodel hung") == 1


def test_cached_power_mode_asks_again_when_invalidated_before_the_refresh() -> None:
    source = ScriptedQuery([PowerMode(0, "15W"), PowerMode(1, "7W")])
    cache = CachedPowerMode(source, refresh_s=60.0, clock=lambda: 0.0)
    assert cache.current() == PowerMode(0, "15W")
    assert cache.current() == PowerMode(0, "15W")
    cache.invalidate()
    assert cache.current() == PowerMode(1, "7W")
