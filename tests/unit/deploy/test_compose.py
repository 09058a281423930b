"""deploy/compose*.yaml against the Compose Specification's JSON schema (the copy that
check-jsonschema ships), and what a board needs from them."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from edge_service.config import REPO_ROOT, Settings, read_config_file

DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILES = sorted(DEPLOY.glob("compose*.yaml"))
ENTRYPOINT_VARS = {"EDGE_BUILD_ON_START", "EDGE_BUILD_ARGS"}  # docker/entrypoint.sh's own


def _schema() -> dict:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text(encoding="utf-8"))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _validator():
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid_against_the_compose_spec(path):
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator().iter_errors(_load(path))
    ]
    assert not errors, errors


def test_schema_check_catches_a_misspelt_key():
    doc = _load(DEPLOY / "compose.yaml")
    doc["services"]["edge-service"]["restart_policy"] = "always"
    assert any(_validator().iter_errors(doc))


def test_three_compose_files_exist():
    assert [p.name for p in COMPOSE_FILES] == [
        "compose.jtop.yaml",
        "compose.power-control.yaml",
        "compose.yaml",
    ]


def test_jetson_service_has_the_nvidia_runtime_a_volume_and_a_restart_policy():
    svc = _load(DEPLOY / "compose.yaml")["services"]["edge-service"]
    assert svc["profiles"] == ["jetson"]
    assert svc["runtime"] == "nvidia"
    assert svc["restart"] == "unless-stopped"
    assert "engines:/var/lib/edge-service" in svc["volumes"]
    assert svc["build"]["args"]["BASE"].startswith("nvcr.io/nvidia/l4t-jetpack:r36")
    assert "jetson" in svc["build"]["args"]["EXTRAS"]


def test_cpu_profile_serves_without_the_nvidia_runtime():
    svc = _load(DEPLOY / "compose.yaml")["services"]["edge-service-cpu"]
    assert svc["profiles"] == ["cpu"]
    assert "runtime" not in svc
    assert svc["restart"] == "unless-stopped"
    assert "engines:/var/lib/edge-service" in svc["volumes"]


def test_every_service_gets_its_control_token_from_the_secret():
    doc = _load(DEPLOY / "compose.yaml")
    for svc in doc["services"].values():
        assert "control-token" in svc["secrets"]
        assert svc["environment"]["EDGE_CONTROL_TOKEN_FILE"] == "/run/secrets/control-token"
    assert doc["secrets"]["control-token"]["file"] == "./secrets/control-token"


def test_jtop_socket_is_mounted_only_by_the_override_and_never_created():
    base = _load(DEPLOY / "compose.yaml")["services"]["edge-service"]
    assert not any("jtop" in json.dumps(v) for v in base["volumes"])
    mount = _load(DEPLOY / "compose.jtop.yaml")["services"]["edge-service"]["volumes"][0]
    assert mount["source"] == mount["target"] == "/run/jtop.sock"
    assert mount["bind"]["create_host_path"] is False


def test_power_control_override_runs_as_root_privileged():
    svc = _load(DEPLOY / "compose.power-control.yaml")["services"]["edge-service"]
    assert svc["user"] == "0:0"
    assert svc["privileged"] is True


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_edge_variable_is_a_setting_or_the_entrypoints(path):
    known = {f"EDGE_{name.upper()}" for name in Settings.model_fields} | ENTRYPOINT_VARS
    for svc in _load(path)["services"].values():
        names = {n for n in svc.get("environment", {}) if n.startswith("EDGE_")}
        assert names <= known, names - known


def test_board_config_file_is_accepted_by_the_service():
    values = read_config_file(DEPLOY / "config.toml")
    assert values
    assert Settings(config_file=DEPLOY / "config.toml").family == values["family"]
