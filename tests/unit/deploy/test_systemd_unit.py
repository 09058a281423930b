"""deploy/systemd: the unit runs the documented CLI unprivileged; systemd accepts it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_service.config import REPO_ROOT, Settings

SYSTEMD = REPO_ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "edge-service.service"
CHECKOUT = "/opt/edge-service"


def _entries(path: Path) -> dict[str, list[str]]:
    """key -> values of a unit file (keys repeat, e.g. Environment=)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_builds_the_engines_on_first_start_then_serves():
    unit = _entries(UNIT)
    cli = f"{CHECKOUT}/.venv/bin/edge-service"
    assert unit["ExecStartPre"] == [f"{cli} build"]
    assert unit["ExecStart"] == [f"{cli} serve"]
    assert unit["Restart"] == ["on-failure"]


def test_unit_runs_unprivileged_with_a_state_directory_for_the_engines():
    unit = _entries(UNIT)
    assert unit["User"] != ["root"]
    assert unit["NoNewPrivileges"] == ["true"]
    env = dict(e.partition("=")[::2] for e in unit["Environment"])
    assert env["EDGE_ENGINES_DIR"].startswith(f"/var/lib/{unit['StateDirectory'][0]}/")
    known = {f"EDGE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    assert unit["EnvironmentFile"][0].startswith("-")  # optional: tokens only when needed


def test_power_control_drop_in_runs_as_root():
    assert _entries(SYSTEMD / "power-control.conf")["User"] == ["root"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit_and_its_drop_in(tmp_path):
    cli = Path(sys.executable).parent / "edge-service"
    if not cli.exists():
        pytest.skip("edge-service is not installed next to this Python")
    # verify checks that the binaries exist: point them at this checkout's
    text = UNIT.read_text().replace(f"{CHECKOUT}/.venv/bin/edge-service", str(cli))
    text = text.replace(f"WorkingDirectory={CHECKOUT}", f"WorkingDirectory={REPO_ROOT}")
    (tmp_path / UNIT.name).write_text(text)
    drop_in = tmp_path / f"{UNIT.name}.d"
    drop_in.mkdir()
    shutil.copy(SYSTEMD / "power-control.conf", drop_in)
    r = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / UNIT.name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    problems = [line for line in (r.stdout + r.stderr).splitlines() if str(tmp_path) in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
