"""deploy/k8s/, the serving tier on Kubernetes, checked offline (no cluster, no network):

- every document of every manifest validates strictly (unknown fields refused) against the
  Kubernetes schemas kubernetes-validate ships for the newest version it knows; a copy of
  the gateway Deployment with a misspelt field, a wrong type or a missing one is refused;
- the files are the expected ones, kustomization.yaml lists them all, every object is in the
  namespace payband and carries the app.kubernetes.io labels;
- each Deployment's container has readiness and liveness probes on its documented paths and
  declared ports; every container has cpu and memory requests and limits; every pod runs
  unprivileged (uid 10001, no privilege escalation, no capabilities, read-only root with an
  emptyDir /tmp); each Service selects only its Deployment's pods and targets declared
  ports; each HPA and PodDisruptionBudget targets a Deployment, whose containers request
  cpu; the Job runs `payband-audit migrate`, then `payband-monitoring migrate`;
- images carry their package's version; the model image serves the model the gateway asks for;
- the pods' Prometheus annotations agree with deploy/prometheus/prometheus.yml;
- every PAYBAND_* variable a container gets is a field of a settings class its image reads
  (with that class's prefix) and every literal value is valid for that field; database URLs
  and API keys come from the Secret payband-secrets, whose keys deploy/k8s/README.md's
  `kubectl create secret` names; the gateway reaches MLServer through its Service.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable
from importlib.metadata import version
from ipaddress import ip_address
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from pydantic_settings import BaseSettings

from payband_audit.settings import AuditSettings
from payband_contracts.settings import ContractsSettings
from payband_gateway.settings import GatewaySettings
from payband_monitoring.settings import MonitoringSettings
from payband_serving.settings import ServingSettings
from tests.deploy_config import K8S, field_errors, load_yaml, load_yaml_documents, scrape_jobs

KUBERNETES = kubernetes_validate.latest_version()
NAMESPACE = "payband"
SECRET = "payband-secrets"
UID = 10001
MANIFESTS = (
    "namespace.yaml",
    "config.yaml",
    "migrate.yaml",
    "mlserver.yaml",
    "gateway.yaml",
    "hpa.yaml",
    "pdb.yaml",
)
COMPONENTS = {"serving", "gateway", "migration"}
DEPLOYMENTS = ("mlserver", "gateway")
# Each Deployment's container ports, and the paths of its (readiness, liveness) probes.
PORTS = {"mlserver": {"http": 8080, "grpc": 8081, "metrics": 8082}, "gateway": {"http": 8000}}
PROBES = {"mlserver": ("/v2/health/ready", "/v2/health/live"), "gateway": ("/readyz", "/healthz")}
# The settings classes the commands of each image read, by image repository.
SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "payband-gateway": (GatewaySettings, AuditSettings, ContractsSettings),
    "payband-model": (ServingSettings, ContractsSettings),
    "payband-audit": (AuditSettings,),
    "payband-monitoring": (MonitoringSettings, AuditSettings),
}
# Images built from a package (deploy/images/build): payband-<name>:<the package's version>.
PACKAGE_IMAGES = ("payband-gateway", "payband-audit", "payband-monitoring")


# --- loading ---------------------------------------------------------------------------------


def objects(kind: str | None = None) -> list[dict[str, Any]]:
    """Every object of every manifest, or those of one kind, in file order (fresh copies)."""
    found = [document for name in MANIFESTS for document in load_yaml_documents(K8S / name)]
    return [document for document in found if kind is None or document["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [item for item in objects(kind) if item["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def names(kind: str) -> list[str]:
    return [item["metadata"]["name"] for item in objects(kind)]


def workloads() -> list[dict[str, Any]]:
    return [*objects("Deployment"), *objects("Job")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def container_ports(pod: dict[str, Any]) -> dict[str, int]:
    return {
        port["name"]: port["containerPort"]
        for container in pod["containers"]
        for port in container.get("ports", [])
    }


def declared(pod: dict[str, Any], port: int | str) -> bool:
    """A probe's or a Service's target port: a declared container port's name or number."""
    ports = container_ports(pod)
    return port in ports or port in ports.values()


def image_repository(image: str) -> str:
    return image.rsplit(":", 1)[0].rsplit("/", 1)[-1]


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def config_maps() -> dict[str, dict[str, str]]:
    return {item["metadata"]["name"]: item["data"] for item in objects("ConfigMap")}


def environment(container: dict[str, Any]) -> dict[str, Any]:
    """Every variable a container gets: a value as its string (ConfigMaps resolved), a
    Secret's as its ``secretKeyRef``."""
    maps = config_maps()
    found: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "import only ConfigMaps whole, without prefix"
        found.update(maps[source["configMapRef"]["name"]])
    for variable in container.get("env", []):
        if "value" in variable:
            found[variable["name"]] = variable["value"]
        elif "configMapKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["configMapKeyRef"]
            found[variable["name"]] = maps[ref["name"]][ref["key"]]
        else:
            found[variable["name"]] = variable["valueFrom"]
    return found


def settings_variables(classes: tuple[type[BaseSettings], ...]) -> dict[str, tuple[Any, str]]:
    """The environment variables the settings classes read: name -> (class, field)."""
    return {
        f"{cls.model_config.get('env_prefix', '')}{field}".upper(): (cls, field)
        for cls in classes
        for field in cls.model_fields
    }


def schema_error(document: dict[str, Any]) -> str | None:
    """Why the Kubernetes schema refuses the document (unknown fields too), or None."""
    try:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path) or "(top)"
        return f"{document['kind']}/{document['metadata']['name']} at {where}: {error.message}"
    return None


_UNITS = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2.0**10, "Mi": 2.0**20}
_UNITS |= {"Gi": 2.0**30, "Ti": 2.0**40}


def quantity(value: str | float) -> float:
    """A Kubernetes quantity ("500m", "2", "1Gi") as a number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value!r}"
    assert match[2] in _UNITS, f"unknown unit in {value!r}"
    return float(match[1]) * _UNITS[match[2]]


CONTAINERS = [
    pytest.param(workload, container, id=f"{workload['metadata']['name']}/{container['name']}")
    for workload in workloads()
    for container in all_containers(pod_spec(workload))
]


# --- the schema ------------------------------------------------------------------------------


def test_the_manifests_are_the_expected_files_and_kustomize_lists_them() -> None:
    assert {path.name for path in K8S.glob("*.yaml")} == {*MANIFESTS, "kustomization.yaml"}
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["namespace"] == NAMESPACE
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)
    every = Counter((item["kind"], item["metadata"]["name"]) for item in objects())
    assert [key for key, count in every.items() if count > 1] == []


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_every_document_validates_strictly(manifest: str) -> None:
    documents = load_yaml_documents(K8S / manifest)
    assert documents, f"{manifest} holds no object"
    errors = [error for document in documents if (error := schema_error(document))]
    assert errors == [], f"{manifest} against Kubernetes {KUBERNETES}"


def _unknown_field(deployment: dict[str, Any]) -> None:
    deployment["spec"]["replica"] = 2


def _misspelt_probe(deployment: dict[str, Any]) -> None:
    container = pod_spec(deployment)["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")


def _misspelt_security_field(deployment: dict[str, Any]) -> None:
    context = pod_spec(deployment)["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")


def _port_as_string(deployment: dict[str, Any]) -> None:
    port = pod_spec(deployment)["containers"][0]["ports"][0]
    port["containerPort"] = str(port["containerPort"])


def _no_selector(deployment: dict[str, Any]) -> None:
    del deployment["spec"]["selector"]


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown field spec.replica": _unknown_field,
    "livenessProbe misspelt": _misspelt_probe,
    "readOnlyRootFilesystem misspelt": _misspelt_security_field,
    "containerPort a string": _port_as_string,
    "selector missing": _no_selector,
}


@pytest.mark.parametrize("breakage", BROKEN.values(), ids=BROKEN.keys())
def test_the_validator_refuses_a_broken_deployment(
    breakage: Callable[[dict[str, Any]], None],
) -> None:
    deployment = copy.deepcopy(one("Deployment", "gateway"))
    assert schema_error(deployment) is None
    breakage(deployment)
    assert schema_error(deployment) is not None


@pytest.mark.parametrize(
    "item", objects(), ids=[f"{item['kind']}/{item['metadata']['name']}" for item in objects()]
)
def test_every_object_is_labelled_and_in_the_namespace(item: dict[str, Any]) -> None:
    metadata = item["metadata"]
    labels = metadata.get("labels", {})
    assert labels.get("app.kubernetes.io/name") == metadata["name"]
    assert labels.get("app.kubernetes.io/part-of") == "payband"
    if item["kind"] == "Namespace":
        assert metadata["name"] == NAMESPACE
        return
    assert metadata.get("namespace") == NAMESPACE
    assert labels.get("app.kubernetes.io/component") in COMPONENTS
    if item["kind"] in {"Deployment", "Job"}:
        standard = {key: value for key, value in labels.items() if key.startswith("app.kube")}
        assert item["spec"]["template"]["metadata"]["labels"] == standard
    by_name = {"app.kubernetes.io/name": metadata["name"]}
    if item["kind"] == "Service":
        assert item["spec"]["selector"] == by_name
    elif item["kind"] in {"Deployment", "PodDisruptionBudget"}:
        assert item["spec"]["selector"] == {"matchLabels": by_name}


# --- workloads -------------------------------------------------------------------------------


def test_the_serving_tier_is_two_deployments_each_with_service_autoscaler_and_budget() -> None:
    assert sorted(names("Deployment")) == sorted(DEPLOYMENTS)
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert sorted(names(kind)) == sorted(DEPLOYMENTS), kind
    assert names("Job") == ["migrate"]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_probes_its_declared_ports(name: str) -> None:
    pod = pod_spec(one("Deployment", name))
    [container] = pod["containers"]
    assert container_ports(pod) == PORTS[name]
    assert {port.get("protocol", "TCP") for port in container["ports"]} == {"TCP"}
    readiness, liveness = PROBES[name]
    assert container["readinessProbe"]["httpGet"]["path"] == readiness
    assert container["livenessProbe"]["httpGet"]["path"] == liveness
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe := container.get(kind):
            assert declared(pod, probe["httpGet"]["port"]), f"{kind} asks an undeclared port"


@pytest.mark.parametrize(("workload", "container"), CONTAINERS)
def test_every_container_requests_and_limits_cpu_and_memory(
    workload: dict[str, Any], container: dict[str, Any]
) -> None:
    resources = container["resources"]
    for resource in ("cpu", "memory"):
        request = quantity(resources["requests"][resource])
        assert 0 < request <= quantity(resources["limits"][resource]), resource


@pytest.mark.parametrize("workload", workloads(), ids=[w["metadata"]["name"] for w in workloads()])
def test_every_pod_runs_unprivileged(workload: dict[str, Any]) -> None:
    pod = pod_spec(workload)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    scratch = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
    for container in all_containers(pod):
        own = container["securityContext"]
        assert own.get("runAsNonRoot", context["runAsNonRoot"]) is True, container["name"]
        assert own.get("runAsUser", context["runAsUser"]) == UID, container["name"]
        assert own.get("privileged", False) is False
        assert own["allowPrivilegeEscalation"] is False
        assert own["capabilities"] == {"drop": ["ALL"]}
        assert own["readOnlyRootFilesystem"] is True
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert mounts.get("/tmp") in scratch, f"{container['name']}: no emptyDir at /tmp"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_service_selects_only_its_deployment_and_targets_declared_ports(name: str) -> None:
    service = one("Service", name)
    selector = service["spec"]["selector"]
    for deployment in objects("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selects = selector.items() <= labels.items()
        assert selects == (deployment["metadata"]["name"] == name), deployment["metadata"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    pod = pod_spec(one("Deployment", name))
    ports = container_ports(pod)
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert declared(pod, target), f"{port['name']} targets an undeclared port {target}"
        number = ports[target] if isinstance(target, str) else target
        assert port["port"] == number == PORTS[name][port["name"]]
    assert {port["name"] for port in service["spec"]["ports"]} == set(PORTS[name])


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_autoscaler_scales_a_deployment_that_requests_cpu(name: str) -> None:
    spec = one("HorizontalPodAutoscaler", name)["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    deployment = one("Deployment", target["name"])
    for container in all_containers(pod_spec(deployment)):
        assert "cpu" in container["resources"]["requests"], container["name"]
    # The autoscaler owns the replicas: a count in the Deployment would reset them on apply.
    assert "replicas" not in deployment["spec"]
    cpu = [
        metric["resource"]["target"]
        for metric in spec["metrics"]
        if metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    ]
    assert len(cpu) == 1
    assert cpu[0]["type"] == "Utilization"
    assert 0 < cpu[0]["averageUtilization"] <= 100
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_disruption_budget_covers_its_deployment(name: str) -> None:
    spec = one("PodDisruptionBudget", name)["spec"]
    labels = one("Deployment", name)["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    minimum = one("HorizontalPodAutoscaler", name)["spec"]["minReplicas"]
    assert 1 <= spec["minAvailable"] < minimum


def test_the_job_migrates_the_audit_log_then_monitoring() -> None:
    spec = one("Job", "migrate")["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    assert spec["backoffLimit"] >= 1
    assert spec["ttlSecondsAfterFinished"] > 0
    [audit] = pod["initContainers"]
    [monitoring] = pod["containers"]
    for container, package in ((audit, "audit"), (monitoring, "monitoring")):
        assert container["name"] == package
        assert image_repository(container["image"]) == f"payband-{package}"
        assert container["command"] == [f"payband-{package}", "migrate"]
        assert "args" not in container


def test_images_carry_their_versions() -> None:
    model_name = config_maps()["payband-config"]["PAYBAND_GATEWAY_MODEL_NAME"]
    model = ServingSettings.model_fields["image_repository"].default
    images = [
        container["image"]
        for workload in workloads()
        for container in all_containers(pod_spec(workload))
    ]
    assert {image_repository(image) for image in images} == {*PACKAGE_IMAGES, model}
    for image in images:
        repository, tag = image_repository(image), image_tag(image)
        if repository == model:
            # A bundle image: <model name>-<registered version, or local-<booster hash>>.
            assert re.fullmatch(rf"{re.escape(model_name)}-(\d+|local-[0-9a-f]{{12}})", tag)
        else:
            assert tag == version(repository), image


# --- Prometheus ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_prometheus_annotations_agree_with_the_scrape_config(name: str) -> None:
    job = scrape_jobs()[name]
    [target] = [target for config in job["static_configs"] for target in config["targets"]]
    host, port = target.rsplit(":", 1)
    deployment = one("Deployment", name)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == port
    assert annotations["prometheus.io/path"] == job.get("metrics_path", "/metrics")
    assert int(port) in container_ports(pod_spec(deployment)).values()
    # The static target (compose's service name) is this Service in the namespace too.
    assert host == name
    assert int(port) in {item["port"] for item in one("Service", name)["spec"]["ports"]}


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("workload", "container"), CONTAINERS)
def test_every_variable_is_read_by_the_image(
    workload: dict[str, Any], container: dict[str, Any]
) -> None:
    classes = SETTINGS[image_repository(container["image"])]
    known = settings_variables(classes)
    given = [name for name in environment(container) if name.startswith("PAYBAND_")]
    assert given, "no PAYBAND_* variable at all"
    unknown = [name for name in given if name not in known]
    readers = ", ".join(cls.__name__ for cls in classes)
    assert unknown == [], f"not a field of {readers}"


def test_a_misspelt_or_foreign_variable_is_not_read() -> None:
    known = settings_variables(SETTINGS["payband-gateway"])
    assert {"PAYBAND_GATEWAY_INFERENCE_URL", "PAYBAND_AUDIT_DATABASE_URL"} <= known.keys()
    assert "PAYBAND_MAX_BATCH_SIZE" in known
    assert "PAYBAND_GATEWAY_INFERENCE_ULR" not in known
    assert "PAYBAND_MONITORING_DATABASE_URL" not in known


@pytest.mark.parametrize(("workload", "container"), CONTAINERS)
def test_every_literal_value_is_valid_for_its_field(
    workload: dict[str, Any], container: dict[str, Any]
) -> None:
    known = settings_variables(SETTINGS[image_repository(container["image"])])
    by_settings: dict[type, dict[str, str]] = {}
    for name, value in environment(container).items():
        # Unknown names are the test above's; values from the Secret are not in the manifests.
        if name not in known or not isinstance(value, str):
            continue
        cls, field = known[name]
        by_settings.setdefault(cls, {})[field] = value
    # As the settings class reads them, its field validators included.
    problems = [
        problem for cls, values in by_settings.items() for problem in field_errors(cls, values)
    ]
    assert problems == []


def _secret_keys() -> set[str]:
    """The keys of payband-secrets that pods read, checking that only it is read."""
    keys = set()
    for workload in workloads():
        pod = pod_spec(workload)
        for container in all_containers(pod):
            for name, value in environment(container).items():
                if isinstance(value, dict):
                    ref = value["secretKeyRef"]
                    assert ref["name"] == SECRET, name
                    assert ref.get("optional", False) is False, name
                    keys.add(ref["key"])
                elif name.endswith("DATABASE_URL"):
                    pytest.fail(f"{name} is written into the manifest, not taken from {SECRET}")
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == SECRET
                keys.update(item["key"] for item in volume["secret"]["items"])
    return keys


def test_secrets_come_from_the_documented_secret() -> None:
    readme = (K8S / "README.md").read_text()
    [command] = re.findall(rf"kubectl create secret generic {SECRET}[^`]*", readme)
    documented = set(re.findall(r"--from-(?:literal|file)=([\w.-]+)=", command))
    assert _secret_keys() == documented
    assert not list(K8S.glob("*secret*")), "the Secret is never committed"


def test_the_gateway_reads_its_keys_from_a_read_only_secret_mount() -> None:
    pod = pod_spec(one("Deployment", "gateway"))
    [container] = pod["containers"]
    path = PurePosixPath(environment(container)["PAYBAND_GATEWAY_API_KEYS_FILE"])
    [mount] = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent]
    assert mount["readOnly"] is True
    [volume] = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == SECRET
    assert {"key": "api-keys.json", "path": path.name} in volume["secret"]["items"]


def test_the_services_listen_where_their_pods_and_clients_expect() -> None:
    [gateway] = pod_spec(one("Deployment", "gateway"))["containers"]
    [mlserver] = pod_spec(one("Deployment", "mlserver"))["containers"]
    gateway_env, mlserver_env = environment(gateway), environment(mlserver)
    # Every interface of the pod, or the Service's traffic would not reach them.
    for host in (gateway_env["PAYBAND_GATEWAY_HOST"], mlserver_env["PAYBAND_SERVING_HOST"]):
        assert ip_address(host).is_unspecified, host
    assert int(gateway_env["PAYBAND_GATEWAY_PORT"]) == PORTS["gateway"]["http"]
    for name, port in (("HTTP", "http"), ("GRPC", "grpc"), ("METRICS", "metrics")):
        assert int(mlserver_env[f"PAYBAND_SERVING_{name}_PORT"]) == PORTS["mlserver"][port]
    url = urlsplit(gateway_env["PAYBAND_GATEWAY_INFERENCE_URL"])
    service = {item["name"]: item["port"] for item in one("Service", "mlserver")["spec"]["ports"]}
    assert (url.scheme, url.hostname, url.port) == ("http", "mlserver", service["http"])
