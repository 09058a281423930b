"""Security, read from the code and the deploy files: no token is compared with ``==``
(hmac.compare_digest is, see test_security.py), the deployments run the server as a
non-root user with a fixed uid, and no module of edge_service/ or bench/ runs a command
through a shell.

Related checks elsewhere, not repeated: tests/unit/deploy/test_dockerfile.py (the image's
USER is not root), tests/unit/deploy/test_kustomize.py (pods: runAsNonRoot, no privilege
escalation) and tests/unit/deploy/test_compose.py (the power-control override runs as
root, privileged, on purpose).
"""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from edge_service.config import REPO_ROOT


def _secret_equality(tree: ast.AST) -> list[int]:
    """Lines comparing something named like a token or secret with == or !=."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            operands = " ".join(ast.unparse(x) for x in (node.left, *node.comparators))
            if re.search(r"token|secret|password", operands, re.IGNORECASE):
                lines.append(node.lineno)
    return lines


def test_no_token_is_compared_with_equality_anywhere_in_the_package() -> None:
    found = {
        str(path.relative_to(REPO_ROOT)): lines
        for path in sorted((REPO_ROOT / "edge_service").rglob("*.py"))
        if (lines := _secret_equality(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert not found, f"use hmac.compare_digest, not ==: {found}"
    assert _secret_equality(ast.parse("ok = given == settings.control_token"))


# ---------------------------------------------------------------- deployment user


def _dockerfile_uid() -> str:
    text = (REPO_ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    user = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)[-1]
    uid = re.search(r"^ARG UID=(\d+)", final, re.MULTILINE)
    assert uid and '--uid "$UID"' in final and re.search(rf"useradd .*\b{user}\b", final, re.S)
    return uid.group(1)


def test_the_image_user_has_a_fixed_non_zero_uid_that_the_pods_run_as() -> None:
    uid = _dockerfile_uid()
    assert int(uid) != 0
    daemonset = yaml.safe_load((REPO_ROOT / "deploy/kustomize/base/daemonset.yaml").read_text())
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == uid
    [server] = [c for c in pod["containers"] if c["name"] == "edge-service"]
    assert server.get("securityContext", {}).get("runAsUser", uid) != 0


def test_only_the_power_control_override_runs_the_container_as_root() -> None:
    as_root = set()
    for path in sorted((REPO_ROOT / "deploy").glob("compose*.yaml")):
        for name, svc in yaml.safe_load(path.read_text())["services"].items():
            user = str(svc.get("user", "")).split(":")[0]
            if user in ("0", "root"):
                as_root.add((path.name, name))
    assert as_root == {("compose.power-control.yaml", "edge-service")}


def test_the_systemd_unit_runs_the_server_as_its_own_user() -> None:
    unit = (REPO_ROOT / "deploy/systemd/edge-service.service").read_text()
    users = re.findall(r"^User=(\S+)", unit, re.MULTILINE)
    assert users and all(u not in ("root", "0") for u in users)
    assert "NoNewPrivileges=true" in unit


# ---------------------------------------------------------------- no shell


SHELL_CALLS = frozenset(
    {
        "os.system",
        "os.popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "asyncio.create_subprocess_shell",
    }
)


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound by imports: ``import os as o`` -> o: os, ``from os import
    system`` -> system: os.system."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.asname or a.name: a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
    return out


def shell_uses(source: str) -> list[str]:
    """Every way ``source`` could run a command through a shell, as 'line: what'."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name in SHELL_CALLS or name.endswith(".subprocess_shell"):
            found.append(f"{node.lineno}: {name}()")
        for kw in node.keywords:
            if kw.arg == "shell" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{node.lineno}: shell={ast.unparse(kw.value)}")
    return found


def test_the_shell_check_catches_each_form() -> None:
    planted = (
        "import os as o\nimport subprocess\nfrom subprocess import getoutput as g\n"
        "o.system('x')\nos.popen('x')\nsubprocess.run('x', shell=True)\n"
        "subprocess.Popen(['x'], shell=flag)\ng('x')\nsubprocess.getstatusoutput('x')\n"
        "loop.subprocess_shell(p, 'x')\nsubprocess.run(['x'], shell=False)\n"
    )
    assert [f.split(":")[0] for f in shell_uses(planted)] == [str(n) for n in range(4, 11)]


@pytest.mark.parametrize("package", ["edge_service", "bench"])
def test_no_module_runs_a_command_through_a_shell(package: str) -> None:
    found = {
        str(path.relative_to(REPO_ROOT)): uses
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if (uses := shell_uses(path.read_text(encoding="utf-8")))
    }
    assert not found, f"run commands as argument lists, never through a shell: {found}"
