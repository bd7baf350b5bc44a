"""The Kubernetes manifests: every kustomization renders (``kubectl kustomize``), every object
validates against the Kubernetes schemas (kubernetes-validate, strict, offline), and the ELSA
pods are wired as the services expect: settings names, probes, ports, identities, security."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from deploy_checks import (
    COMMAND_PREFIX,
    ROOT,
    SERVING_COMMANDS,
    default_port,
    dockerfile_uid,
    setting_problem,
)

from elsa.runtime.config import RunConfig, load_config, parse_config

K8S = ROOT / "k8s"
#: every kustomization a user applies: the default deployment and each overlay
TARGETS = ("k8s", "k8s/overlays/large", "k8s/overlays/ingress")
#: the oldest Kubernetes the manifests support (Job podFailurePolicy is GA in 1.31, the
#: StatefulSet pod-index label exists since 1.28) and the newest the validator knows
KUBERNETES_VERSIONS = ("1.31", kubernetes_validate.latest_version())
NAMESPACE = "elsa"
POD_INDEX_LABEL = "metadata.labels['apps.kubernetes.io/pod-index']"

Obj = dict[str, Any]


def _kustomize_command() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def _render(target: str) -> list[Obj]:
    command = _kustomize_command()
    if command is None:
        reason = "neither kubectl nor kustomize is on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    result = subprocess.run(
        [*command, str(ROOT / target)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"{target}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Renderer:
    """Renders kustomizations on demand, each once per module."""

    def __init__(self) -> None:
        self._cache: dict[str, list[Obj]] = {}

    def __call__(self, target: str) -> list[Obj]:
        """A fresh copy of the objects ``target`` renders to."""
        if target not in self._cache:
            self._cache[target] = _render(target)
        return copy.deepcopy(self._cache[target])


@pytest.fixture(scope="module")
def render() -> Renderer:
    return Renderer()


@pytest.fixture(params=TARGETS)
def rendered(request: pytest.FixtureRequest, render: Renderer) -> list[Obj]:
    """The objects one kustomization renders to."""
    return render(request.param)


def _one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _named(objects: list[Obj], kind: str, name: str) -> Obj:
    """An object by its name before kustomize appended a content hash (generated ConfigMaps)."""
    found = [
        o
        for o in objects
        if o["kind"] == kind and re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod spec) of every Deployment, StatefulSet and Job."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]


def _containers(objects: list[Obj], *, init: bool = True) -> Iterator[tuple[Obj, Obj, Obj]]:
    """(workload, pod spec, container) of every container (and init container)."""
    for workload, spec in _pod_specs(objects):
        for container in [*spec["containers"], *(spec.get("initContainers", []) if init else [])]:
            yield workload, spec, container


def _elsa_command(container: Obj) -> str | None:
    args = container.get("args") or []
    return str(args[0]) if args and args[0] in COMMAND_PREFIX else None


def _container_port(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p.get("name") == port))


def _raw_manifests() -> Iterator[tuple[Path, Obj]]:
    """Each object of each manifest file a kustomization or component lists as a resource."""
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        listed = yaml.safe_load(kustomization.read_text(encoding="utf-8")).get("resources", [])
        for entry in listed:
            path = (kustomization.parent / entry).resolve()
            if path.is_file():
                for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                    if doc:
                        yield path, doc


def _validation_errors(obj: Obj) -> list[str]:
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}) {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    return errors


def test_every_rendered_object_is_a_valid_kubernetes_object(rendered: list[Obj]) -> None:
    assert rendered
    problems = [e for obj in rendered for e in _validation_errors(obj)]
    assert not problems


def test_every_manifest_file_is_valid_on_its_own() -> None:
    checked = 0
    problems = []
    for path, obj in _raw_manifests():
        checked += 1
        problems += [f"{path.relative_to(ROOT)}: {e}" for e in _validation_errors(obj)]
    assert checked >= 10
    assert not problems


def test_the_validator_rejects_a_misspelt_field() -> None:
    deployment = next(obj for path, obj in _raw_manifests() if obj["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert _validation_errors(deployment)


def test_everything_lives_in_the_elsa_namespace(rendered: list[Obj]) -> None:
    for obj in rendered:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_environment_names_are_settings_of_the_containers_tier(rendered: list[Obj]) -> None:
    problems = []
    seen = set()
    for workload, _, container in _containers(rendered):
        command = _elsa_command(container)
        if command is None:
            continue
        seen.add(command)
        prefix = COMMAND_PREFIX[command]
        names = [e["name"] for e in container.get("env", [])]
        for source in container.get("envFrom", []):
            config_map = _one(rendered, "ConfigMap", source["configMapRef"]["name"])
            names += list(config_map["data"])
        for name in names:
            problem = setting_problem(name, prefix)
            if problem:
                problems.append(f"{workload['metadata']['name']}/{container['name']}: {problem}")
    assert not problems
    assert seen == set(COMMAND_PREFIX)


def test_references_resolve(rendered: list[Obj]) -> None:
    for workload, spec, container in _containers(rendered):
        where = f"{workload['metadata']['name']}/{container['name']}"
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in _one(rendered, "Secret", ref["name"])["data"], where
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                _one(rendered, "ConfigMap", volume["configMap"]["name"])
            if "persistentVolumeClaim" in volume:
                _one(rendered, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_serving_containers_probe_health_and_readiness_on_their_port(rendered: list[Obj]) -> None:
    served = set()
    for workload, _, container in _containers(rendered, init=False):
        command = _elsa_command(container)
        if command not in SERVING_COMMANDS:
            continue
        served.add(command)
        where = f"{workload['metadata']['name']}/{container['name']}"
        port = default_port(command)
        args = container["args"]
        assert "--port" not in args or int(args[args.index("--port") + 1]) == port, where
        for probe, path in (
            ("readinessProbe", "/ready"),
            ("livenessProbe", "/health"),
            ("startupProbe", "/health"),
        ):
            if probe == "startupProbe" and probe not in container:
                continue
            http = container[probe]["httpGet"]
            assert http["path"] == path, f"{where} {probe}"
            assert _container_port(container, http["port"]) == port, f"{where} {probe}"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", where
        assert annotations["prometheus.io/path"] == "/metrics", where
        assert int(annotations["prometheus.io/port"]) == port, where
    assert served == set(SERVING_COMMANDS)


def test_every_container_has_resources_and_a_locked_down_security_context(rendered: list[Obj]) -> None:
    uid = dockerfile_uid()
    for workload, spec, container in _containers(rendered):
        where = f"{workload['metadata']['name']}/{container['name']}"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
            resources["limits"]
        ), where
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        if _elsa_command(container):
            assert spec["securityContext"]["runAsUser"] == uid, f"{where}: the image's user"
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: a writable /tmp"


def test_edges_have_stable_names_behind_a_headless_service(rendered: list[Obj]) -> None:
    edges = _one(rendered, "StatefulSet", "elsa-edge")
    service = _one(rendered, "Service", edges["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    labels = edges["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    container = edges["spec"]["template"]["spec"]["containers"][0]
    env = [e["name"] for e in container["env"]]
    values = {e["name"]: e for e in container["env"]}
    assert values["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert values["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert values["ELSA_EDGE_NAME"]["value"] == "$(POD_NAME)"
    public = values["ELSA_EDGE_PUBLIC_URL"]["value"]
    url = urlsplit(public)
    assert url.hostname == f"$(pod_name).{service['metadata']['name']}.$(pod_namespace).svc.cluster.local"
    assert url.port == default_port("edge")
    for var in re.findall(r"\$\((\w+)\)", public):
        assert env.index(var) < env.index("ELSA_EDGE_PUBLIC_URL"), f"$({var}) is defined before its use"


def test_the_edge_disruption_budget_selects_the_edge_pods(rendered: list[Obj]) -> None:
    budgets = [o for o in rendered if o["kind"] == "PodDisruptionBudget"]
    assert len(budgets) == 1
    selector = budgets[0]["spec"]["selector"]["matchLabels"]
    for obj in rendered:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            selected = selector.items() <= labels.items()
            assert selected == (obj["metadata"]["name"] == "elsa-edge"), obj["metadata"]["name"]


def test_devices_take_their_partition_from_the_pod_index(rendered: list[Obj]) -> None:
    devices = _one(rendered, "StatefulSet", "elsa-device")
    container = devices["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["ELSA_CLIENT_PARTITION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX_LABEL
    assert env["ELSA_CLIENT_NAME"]["value"] == "$(POD_NAME)"
    assert [e["name"] for e in container["env"]].index("POD_NAME") < list(env).index("ELSA_CLIENT_NAME")
    assert _one(rendered, "Service", devices["spec"]["serviceName"])["spec"]["clusterIP"] == "None"


def _run_config(objects: list[Obj]) -> RunConfig:
    data = _named(objects, "ConfigMap", "elsa-run")["data"]
    assert list(data) == ["run.yaml"]
    return parse_config(yaml.safe_load(data["run.yaml"]), source="ConfigMap elsa-run")


def test_the_demo_run_matches_the_deployed_topology(rendered: list[Obj]) -> None:
    config = _run_config(rendered)
    config.check_service_runtime()
    assert _one(rendered, "StatefulSet", "elsa-edge")["spec"]["replicas"] == config.topology.edges
    assert _one(rendered, "StatefulSet", "elsa-device")["spec"]["replicas"] == config.num_devices
    job = _one(rendered, "Job", "elsa-demo-run")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "submit" and {"--wait", "--attach"} <= set(container["args"])
    path = container["args"][container["args"].index("--config") + 1]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == _named(rendered, "ConfigMap", "elsa-run")["metadata"]["name"]
    url = urlsplit(next(e["value"] for e in container["env"] if e["name"] == "ELSA_CLOUD_URL"))
    cloud = _one(rendered, "Service", url.hostname or "")
    assert url.port in [p["port"] for p in cloud["spec"]["ports"]]


def test_the_default_demo_run_is_the_compose_run(render: Renderer) -> None:
    assert _run_config(render("k8s")) == load_config(ROOT / "configs" / "compose.yaml")


def test_the_cloud_migrates_first_and_runs_alone(rendered: list[Obj]) -> None:
    cloud = _one(rendered, "Deployment", "elsa-cloud")
    assert cloud["spec"]["replicas"] == 1
    assert cloud["spec"]["strategy"]["type"] == "Recreate"
    spec = cloud["spec"]["template"]["spec"]
    assert [c["args"][0] for c in spec["initContainers"]] == ["migrate"]
    settings = _one(rendered, "ConfigMap", spec["containers"][0]["envFrom"][0]["configMapRef"]["name"])
    assert settings["data"]["ELSA_CLOUD_MIGRATE_ON_START"] == "false"
    database = {e["name"]: e.get("valueFrom") for e in spec["initContainers"][0]["env"]}
    cloud_env = {e["name"]: e.get("valueFrom") for e in spec["containers"][0]["env"]}
    assert database["ELSA_CLOUD_DATABASE_URL"] == cloud_env["ELSA_CLOUD_DATABASE_URL"]
    for name in ("elsa-redis", "elsa-postgres"):
        stateful = _one(rendered, "StatefulSet", name)
        assert stateful["spec"]["volumeClaimTemplates"], f"{name} keeps its data on a PVC"
        assert _one(rendered, "Service", name)


def test_the_ingress_overlay_routes_to_the_cloud_service(render: Renderer) -> None:
    objects = render("k8s/overlays/ingress")
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    assert len(ingresses) == 1
    backend = ingresses[0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = _one(objects, "Service", backend["name"])
    assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
    assert service["spec"]["ports"][0]["port"] == default_port("cloud")


def test_the_large_overlay_scales_edges_and_devices_up(render: Renderer) -> None:
    base, large = render("k8s"), render("k8s/overlays/large")
    for name in ("elsa-edge", "elsa-device"):
        before, after = _one(base, "StatefulSet", name), _one(large, "StatefulSet", name)
        assert after["spec"]["replicas"] > before["spec"]["replicas"], name
        limits = [
            w["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] for w in (before, after)
        ]
        assert limits[0] != limits[1], f"{name}: bigger pods"


def test_the_deployment_guide_names_real_files_and_settings() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    links = [t for t in re.findall(r"\]\(([^)#]+)\)", guide) if not t.startswith("http")]
    assert links
    for link in links:
        assert (ROOT / "docs" / link).exists(), link
    paths = {p.rstrip("./") for p in re.findall(r"\bk8s/[\w./-]*", guide)}
    assert "k8s/overlays/large" in paths
    for path in paths:
        assert (ROOT / path).exists(), path
    names = set(re.findall(r"\bELSA_[A-Z0-9_]*[A-Z0-9]\b", guide))
    assert names
    assert [p for p in map(setting_problem, sorted(names)) if p] == []
