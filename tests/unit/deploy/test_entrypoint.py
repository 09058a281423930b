"""docker/entrypoint.sh: serves at once with `serve --build` by default; in the other modes
builds the engines on first start with the documented CLI, reuses them on the next start, and
serves with the same settings.

The script runs for real under /bin/sh. `edge-service serve --print-config` is the real CLI;
`build` and `serve` are recorded by a stub (a real build takes a minute), and every recorded
command line is parsed by the real CLI's own parser, so an option the CLI lacks fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from edge_service.cli import app
from edge_service.config import REPO_ROOT

ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
REAL_CLI = shutil.which("edge-service", path=str(Path(sys.executable).parent))
TOKEN = "t" * 24

pytestmark = pytest.mark.skipif(REAL_CLI is None, reason="edge-service is not installed")

STUB = """#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
if args[:1] == ["serve"] and "--print-config" in args:
    os.execv({real!r}, [{real!r}, *args])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["build"]:
    if os.environ.get("STUB_BUILD_FAILS"):
        sys.exit(3)
    family_dir = Path(args[args.index("--engines-dir") + 1]) / args[args.index("--family") + 1]
    family_dir.mkdir(parents=True, exist_ok=True)
    (family_dir / "catalog.json").write_text("{{}}")
"""


class Container:
    """The entrypoint with a container-like environment around a temp engines volume."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        stub = self.bin / "edge-service"
        stub.write_text(STUB.format(python=sys.executable, real=REAL_CLI))
        stub.chmod(0o755)
        self.engines = root / "volume" / "engines"
        self.log = root / "calls.jsonl"
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(root),
            "STUB_LOG": str(self.log),
            # what the Dockerfile's ENV sets, and a control token as compose/K8s give it
            "EDGE_HOST": "0.0.0.0",
            "EDGE_ALLOW_REMOTE": "true",
            "EDGE_ENGINES_DIR": str(self.engines),
            "EDGE_CONTROL_TOKEN": TOKEN,
        }

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(ENTRYPOINT), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        for argv in calls:
            _parse_with_the_real_cli(argv)
        return calls


def _parse_with_the_real_cli(argv: list[str]) -> None:
    """Raise click's UsageError if the real `edge-service` would refuse these arguments."""
    group = typer.main.get_command(app)
    command = group.commands[argv[0]]
    command.make_context(f"edge-service {argv[0]}", list(argv[1:]))


@pytest.fixture
def container(tmp_path: Path) -> Container:
    return Container(tmp_path)


def test_default_start_serves_at_once_and_builds_in_the_background(container):
    r = container.run()
    assert r.returncode == 0, r.stderr
    assert container.calls() == [["serve", "--build"]]


def test_first_start_builds_the_engines_then_serves_when_missing_mode(container):
    r = container.run(EDGE_BUILD_ON_START="missing")
    assert r.returncode == 0, r.stderr
    build = ["build", "--family", "fashion", "--engines-dir", str(container.engines)]
    assert container.calls() == [build, ["serve"]]
    assert (container.engines / "fashion" / "catalog.json").is_file()


def test_second_start_reuses_the_engines_and_builds_nothing(container):
    assert container.run(EDGE_BUILD_ON_START="missing").returncode == 0
    r = container.run("serve", EDGE_BUILD_ON_START="missing")
    assert r.returncode == 0, r.stderr
    assert [c[0] for c in container.calls()] == ["build", "serve", "serve"]
    assert "reusing them" in r.stderr


def test_serve_options_reach_the_server_and_pick_the_family_to_build(container):
    r = container.run(
        "serve", "--family", "street", "--port", "9000", EDGE_BUILD_ON_START="missing"
    )
    assert r.returncode == 0, r.stderr
    build, serve = container.calls()
    assert build[build.index("--family") + 1] == "street"
    assert serve == ["serve", "--family", "street", "--port", "9000"]


def test_serve_options_reach_the_background_building_server(container):
    r = container.run("serve", "--family", "street", "--port", "9000")
    assert r.returncode == 0, r.stderr
    assert container.calls() == [["serve", "--build", "--family", "street", "--port", "9000"]]


def test_options_alone_are_taken_as_serve_options(container):
    assert container.run("--port", "9001").returncode == 0
    assert container.calls()[-1] == ["serve", "--build", "--port", "9001"]


def test_family_and_engines_dir_come_from_the_config_file(container, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'family = "yard"\nengines_dir = "{tmp_path / "other"}"\n')
    del container.env["EDGE_ENGINES_DIR"]  # else the environment wins over the file
    r = container.run(EDGE_CONFIG_FILE=str(cfg), EDGE_BUILD_ON_START="missing")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "other" / "yard" / "catalog.json").is_file()


def test_build_args_are_passed_to_the_build(container):
    args = "--eval-limit 500 --backend onnxruntime"
    assert container.run(EDGE_BUILD_ARGS=args, EDGE_BUILD_ON_START="missing").returncode == 0
    assert container.calls()[0][-4:] == args.split()


def test_a_failed_build_stops_the_start_and_serves_nothing(container):
    r = container.run(STUB_BUILD_FAILS="1", EDGE_BUILD_ON_START="missing")
    assert r.returncode == 3
    assert [c[0] for c in container.calls()] == ["build"]


@pytest.mark.parametrize("mode", ["background", "missing"])
def test_a_bad_configuration_is_refused_before_any_build(container, mode):
    # off loopback with control on: a token is needed
    r = container.run(EDGE_CONTROL_TOKEN="", EDGE_BUILD_ON_START=mode)
    assert r.returncode == 2
    assert "EDGE_CONTROL_TOKEN" in r.stderr
    assert container.calls() == []


def test_build_always_runs_the_idempotent_build_every_time(container):
    container.run(EDGE_BUILD_ON_START="missing")
    assert container.run(EDGE_BUILD_ON_START="always").returncode == 0
    assert [c[0] for c in container.calls()] == ["build", "serve", "build", "serve"]


def test_build_never_only_serves(container):
    assert container.run(EDGE_BUILD_ON_START="never").returncode == 0
    assert container.calls() == [["serve"]]


def test_unknown_build_mode_is_refused(container):
    r = container.run(EDGE_BUILD_ON_START="sometimes")
    assert r.returncode == 2
    assert "background, missing, always or never" in r.stderr


@pytest.mark.parametrize("mode", ["background", "missing", "always"])
def test_build_engines_builds_and_exits_without_serving(container, mode):
    assert container.run("build-engines", EDGE_BUILD_ON_START=mode).returncode == 0
    assert [c[0] for c in container.calls()] == ["build"]


def test_other_commands_run_as_given(container):
    r = container.run("sh", "-c", "echo hello")
    assert (r.returncode, r.stdout) == (0, "hello\n")
    assert container.calls() == []
