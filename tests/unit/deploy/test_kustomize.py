"""The kustomize overlays as `kubectl kustomize` renders them (offline), checked against the
Kubernetes schemas that kubernetes-validate ships, and for what a fleet needs."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edge_service.config import REPO_ROOT, Settings

KUSTOMIZE = REPO_ROOT / "deploy" / "kustomize"
K8S_VERSION = "1.30"  # the oldest Kubernetes / k3s minor the manifests are checked against
COMPONENTS = ("jtop", "power-control", "servicemonitor")
ENTRYPOINT_VARS = {"EDGE_BUILD_ON_START", "EDGE_BUILD_ARGS"}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not found")

Docs = list[dict[str, Any]]


def _kustomize(path: Path) -> Docs:
    r = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Docs]:
    """jetson, cpu, and jetson with every component added to it as docs/fleet.md says."""
    out = {name: _kustomize(KUSTOMIZE / "overlays" / name) for name in ("jetson", "cpu")}
    tree = tmp_path_factory.mktemp("full") / "kustomize"
    shutil.copytree(KUSTOMIZE, tree)
    overlay = tree / "overlays" / "jetson" / "kustomization.yaml"
    kustomization = yaml.safe_load(overlay.read_text())
    kustomization["components"] += [f"../../components/{c}" for c in COMPONENTS]
    overlay.write_text(yaml.safe_dump(kustomization))
    out["full"] = _kustomize(overlay.parent)
    return out


def _one(docs: Docs, kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def _pod(docs: Docs) -> dict[str, Any]:
    return _one(docs, "DaemonSet")["spec"]["template"]["spec"]


def _container(docs: Docs, name: str = "edge-service", init: bool = False) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    [c] = [c for c in _pod(docs)[key] if c["name"] == name]
    return c


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


OVERLAYS = pytest.mark.parametrize("overlay", ["jetson", "cpu", "full"])


@OVERLAYS
def test_rendered_manifests_validate_against_the_kubernetes_schema(rendered, overlay):
    checked = 0
    for doc in rendered[overlay]:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema ships for it (checked below)
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked == 4  # ServiceAccount, ConfigMap, Service, DaemonSet


def test_jetson_and_cpu_overlays_can_be_applied_side_by_side(rendered):
    def ids(docs: Docs) -> set[tuple[str, str, str]]:
        return {
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs
        }

    assert not ids(rendered["jetson"]) & ids(rendered["cpu"])
    for one, other in (("jetson", "cpu"), ("cpu", "jetson")):
        selector = _one(rendered[one], "DaemonSet")["spec"]["selector"]["matchLabels"]
        pods = _one(rendered[other], "DaemonSet")["spec"]["template"]["metadata"]["labels"]
        assert not selector.items() <= pods.items()
        service = _one(rendered[one], "Service")["spec"]["selector"]
        assert not service.items() <= pods.items()


def test_schema_validation_catches_a_misspelt_field(rendered):
    ds = copy.deepcopy(_one(rendered["jetson"], "DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_jetson_pods_run_on_labelled_arm64_nodes_with_the_nvidia_runtime(rendered):
    pod = _pod(rendered["jetson"])
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"]["edge-service/accelerator"] == "jetson"
    assert pod["nodeSelector"]["edge-service/jetpack"] == "6"
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]} in term[
        "matchExpressions"
    ]
    assert 44 in pod["securityContext"]["supplementalGroups"]  # video: the GPU nodes
    assert _container(rendered["jetson"])["image"].endswith("-jp6")


def test_jetson_pods_read_nvpmodel_read_only_and_cpu_pods_do_not_mount_it(rendered):
    mounts = {m["mountPath"]: m for m in _container(rendered["jetson"])["volumeMounts"]}
    for path in ("/usr/sbin/nvpmodel", "/etc/nvpmodel.conf", "/var/lib/nvpmodel"):
        assert mounts[path]["readOnly"] is True
    cpu = {m["mountPath"] for m in _container(rendered["cpu"])["volumeMounts"]}
    assert not {p for p in cpu if "nvpmodel" in p}


def test_cpu_pods_run_on_cpu_nodes_without_the_nvidia_runtime(rendered):
    pod = _pod(rendered["cpu"])
    assert "runtimeClassName" not in pod
    assert pod["nodeSelector"] == {"edge-service/accelerator": "cpu"}
    server = _container(rendered["cpu"])
    assert server["resources"]["limits"]["cpu"]
    assert server["image"].endswith("-cpu")


@OVERLAYS
def test_probes_use_the_kserve_health_endpoints_on_the_served_port(rendered, overlay):
    c = _container(rendered[overlay])
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    [port] = c["ports"]
    assert port["name"] == c["readinessProbe"]["httpGet"]["port"] == "http"


@OVERLAYS
def test_rolling_updates_take_down_a_bounded_share_of_the_fleet(rendered, overlay):
    strategy = _one(rendered[overlay], "DaemonSet")["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"]
    assert strategy["rollingUpdate"]["maxSurge"] == 0  # one pod per node (hostPort)


@OVERLAYS
def test_engines_are_built_by_an_init_container_into_the_node_cache(rendered, overlay):
    docs = rendered[overlay]
    [cache] = [v for v in _pod(docs)["volumes"] if v["name"] == "state"]
    assert cache["hostPath"] == {"path": "/var/lib/edge-service", "type": "DirectoryOrCreate"}
    init = _container(docs, "engines", init=True)
    server = _container(docs)
    assert init["args"] == ["build-engines"]
    assert init["image"] == server["image"]
    assert _env(init)["EDGE_BUILD_ON_START"]["value"] == "always"
    assert _env(server)["EDGE_BUILD_ON_START"]["value"] == "never"
    assert server["args"] == ["serve"]
    for c in (init, server):
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["state"] == "/var/lib/edge-service"  # the image's VOLUME


@OVERLAYS
def test_config_comes_from_the_configmap_and_is_accepted_by_the_service(
    rendered, overlay, tmp_path
):
    docs = rendered[overlay]
    cm = _one(docs, "ConfigMap")
    [vol] = [v for v in _pod(docs)["volumes"] if v["name"] == "config"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]  # the hashed name
    server = _container(docs)
    path = Path(_env(server)["EDGE_CONFIG_FILE"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert Path(mounts["config"]) / path.name == path
    config = tmp_path / path.name
    config.write_text(cm["data"][path.name])
    assert Settings(config_file=config).family == "fashion"


@OVERLAYS
def test_tokens_come_from_the_secret_and_none_is_committed(rendered, overlay):
    docs = rendered[overlay]
    assert not [d for d in docs if d["kind"] == "Secret"]
    for c in (_container(docs), _container(docs, "engines", init=True)):
        ref = _env(c)["EDGE_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "edge-service-tokens"
        assert not ref.get("optional", False)
    inference = _env(_container(docs))["EDGE_INFERENCE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert inference["optional"] is True


@OVERLAYS
def test_every_edge_variable_is_a_setting_or_the_entrypoints(rendered, overlay):
    known = {f"EDGE_{name.upper()}" for name in Settings.model_fields} | ENTRYPOINT_VARS
    pod = _pod(rendered[overlay])
    for c in pod["containers"] + pod["initContainers"]:
        names = {n for n in _env(c) if n.startswith("EDGE_")}
        assert names <= known, names - known


@OVERLAYS
def test_pods_are_annotated_for_prometheus_on_the_metrics_port(rendered, overlay):
    ds = _one(rendered[overlay], "DaemonSet")
    notes = ds["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/path"] == "/metrics"
    assert (
        int(notes["prometheus.io/port"])
        == _container(rendered[overlay])["ports"][0]["containerPort"]
    )


@OVERLAYS
def test_service_selects_the_daemonset_pods(rendered, overlay):
    docs = rendered[overlay]
    selector = _one(docs, "Service")["spec"]["selector"]
    labels = _one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


@pytest.mark.parametrize("overlay", ["jetson", "cpu"])
def test_server_runs_unprivileged_with_a_read_only_root(rendered, overlay):
    pod = _pod(rendered[overlay])
    assert pod["securityContext"]["runAsNonRoot"] is True
    ctx = _container(rendered[overlay])["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]


def test_power_control_component_runs_nvpmodel_as_root_privileged(rendered):
    c = _container(rendered["full"])
    ctx = c["securityContext"]
    assert ctx["privileged"] is True and ctx["runAsUser"] == 0
    # the API server refuses privileged with allowPrivilegeEscalation false
    assert ctx["allowPrivilegeEscalation"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/var/lib/nvpmodel"]["readOnly"] is False
    assert mounts["/usr/sbin/nvpmodel"]["readOnly"] is True


def test_jtop_component_mounts_the_socket_only_as_a_socket(rendered):
    pod = _pod(rendered["full"])
    [vol] = [v for v in pod["volumes"] if v["name"] == "jtop-socket"]
    assert vol["hostPath"] == {"path": "/run/jtop.sock", "type": "Socket"}
    assert 44 in pod["securityContext"]["supplementalGroups"]
    assert not [v for v in _pod(rendered["jetson"])["volumes"] if v["name"] == "jtop-socket"]


def test_servicemonitor_component_scrapes_the_service_port(rendered):
    docs = rendered["full"]
    monitor = _one(docs, "ServiceMonitor")
    service = _one(docs, "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
