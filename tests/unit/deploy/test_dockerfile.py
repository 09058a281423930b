"""The Dockerfile, read as Docker reads it (no Docker engine here): stages, order, user,
healthcheck, entrypoint, and no engines in the image."""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from edge_service.config import REPO_ROOT, Settings
from edge_service.errors import ConfigError

DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: str


def parse(text: str) -> list[Instruction]:
    """Instructions with their stage name; continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    stage, pending = "", ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            words = args.split()
            stage = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else args
        out.append(Instruction(keyword.upper(), " ".join(args.split()), stage))
    return out


INSTRUCTIONS = parse(DOCKERFILE.read_text())
FINAL = INSTRUCTIONS[-1].stage


def _in(stage: str, keyword: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.stage == stage and i.keyword == keyword]


def _index(predicate) -> int:
    return next(n for n, i in enumerate(INSTRUCTIONS) if predicate(i))


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for inst in _in(FINAL, "ENV"):
        for pair in shlex.split(inst.args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_base_is_a_build_arg_with_the_slim_cpu_python_as_default():
    first = INSTRUCTIONS[0]
    assert first.keyword == "ARG"
    assert first.args.startswith("BASE=python:") and "slim" in first.args
    froms = {i.stage: i.args for i in INSTRUCTIONS if i.keyword == "FROM"}
    assert froms[FINAL] == "${BASE} AS runtime"
    assert froms["deps"] == "${BASE} AS deps"  # dependencies built on the same base


def test_dependencies_are_installed_before_the_source_is_copied():
    deps_copies = " ".join(i.args for i in _in("deps", "COPY"))
    assert "pyproject.toml" in deps_copies
    assert "edge_service" not in deps_copies
    venv = _index(lambda i: i.stage == FINAL and i.args.startswith("--from=deps /opt/venv"))
    source = _index(lambda i: i.stage == FINAL and i.args.startswith("edge_service "))
    install = _index(lambda i: i.stage == FINAL and i.keyword == "RUN" and "--no-deps" in i.args)
    assert venv < source < install


def test_the_server_runs_as_a_non_root_user():
    user = _in(FINAL, "USER")[-1].args
    assert user not in ("root", "0", "0:0")
    assert any("useradd" in i.args and f" {user}" in i.args for i in _in(FINAL, "RUN"))


def test_engines_are_not_baked_into_the_image_but_go_to_the_volume():
    copies = [i.args for i in INSTRUCTIONS if i.keyword == "COPY"]
    assert not any("engines" in c for c in copies)
    assert not any("edge-service build" in i.args for i in INSTRUCTIONS if i.keyword == "RUN")
    volume = _in(FINAL, "VOLUME")[-1].args
    assert _env()["EDGE_ENGINES_DIR"].startswith(volume + "/")
    assert _env()["EDGE_CALIBRATION_CACHE"].startswith(volume + "/")


def test_entrypoint_is_the_entrypoint_script_and_serves_by_default():
    assert json.loads(_in(FINAL, "ENTRYPOINT")[-1].args) == ["edge-entrypoint"]
    assert json.loads(_in(FINAL, "CMD")[-1].args) == ["serve"]
    assert any(
        i.args.endswith("docker/entrypoint.sh /usr/local/bin/edge-entrypoint")
        for i in _in(FINAL, "COPY")
    )


def test_image_settings_need_a_control_token_or_control_off(monkeypatch):
    for name, value in _env().items():
        if name.startswith("EDGE_"):
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="EDGE_CONTROL_TOKEN"):
        Settings()
    monkeypatch.setenv("EDGE_CONTROL_ENABLED", "false")
    assert Settings().host == "0.0.0.0"


def test_copied_paths_exist_and_are_not_excluded_by_dockerignore():
    ignored = [
        p.strip()
        for p in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for inst in INSTRUCTIONS:
        if inst.keyword != "COPY" or "--from=" in inst.args:
            continue
        sources = [w for w in shlex.split(inst.args) if not w.startswith("--")][:-1]
        for src in sources:
            assert (REPO_ROOT / src).exists(), src
            assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), src


def test_docker_scripts_are_valid_posix_shell():
    for script in (REPO_ROOT / "docker").glob("*.sh"):
        r = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stderr)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_docker_scripts_pass_shellcheck():
    scripts = sorted(str(p) for p in (REPO_ROOT / "docker").glob("*.sh"))
    r = subprocess.run(["shellcheck", "-s", "sh", *scripts], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/v2/health/ready" else 404
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_passes_only_when_the_server_is_ready(status, healthy, monkeypatch):
    check = _in(FINAL, "HEALTHCHECK")[-1].args
    assert "/v2/health/ready" in check
    argv = json.loads(check[check.index("CMD ") + 4 :])
    assert argv[0] == "python3"
    handler = type("Handler", (_Health,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"EDGE_PORT": str(server.server_address[1]), "PATH": str(Path(sys.executable).parent)}
        r = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
    assert (r.returncode == 0) is healthy, r.stderr
