"""deploy/compose.yaml, statically: it is a valid Compose file, every variable comes from
deploy/.env.example and every secret is required there, it agrees with Prometheus, Grafana
and the Dagster code locations, every PAYBAND_* variable it sets is a real setting, and our
images are built from the one image recipe. No container engine, no network."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest
import yaml
from jsonschema.validators import validator_for
from pydantic_settings import BaseSettings

from payband_audit.settings import AuditSettings
from payband_contracts.settings import ContractsSettings
from payband_data.settings import DataSettings
from payband_gateway.settings import GatewaySettings
from payband_monitoring.settings import MonitoringSettings
from payband_orchestration.settings import OrchestrationSettings
from payband_serving.settings import ServingSettings
from payband_training.settings import TrainingSettings
from tests.deploy_config import (
    COMPOSE,
    DEPLOY,
    ENV_EXAMPLE,
    ROOT,
    Interpolation,
    compose_file,
    compose_spec_schema,
    env_file,
    field_errors,
    grafana_dashboard_providers,
    grafana_datasources,
    interpolations,
    scrape_targets,
)

PROFILES = {"base", "pipelines", "serving"}
BASE = ["postgres", "minio", "minio-init", "lakefs", "mlflow", "migrate", "migrate-monitoring"]
PIPELINES = ["dagster-webserver", "dagster-daemon", "dagster-data", "dagster-training"]
PIPELINES += ["dagster-serving", "dagster-monitoring", "dbt-build"]
SERVING = ["mlserver", "gateway", "monitoring", "prometheus", "grafana"]
ONE_SHOTS = {"minio-init", "migrate", "migrate-monitoring", "dbt-build"}
# The container ports each service listens on (fixed: Prometheus, Grafana, k8s rely on them).
PORTS = {
    "postgres": {5432},
    "minio": {9000, 9001},
    "lakefs": {8000},
    "mlflow": {5000},
    "dagster-webserver": {3000},
    "dagster-data": {4000},
    "dagster-training": {4000},
    "dagster-serving": {4000},
    "dagster-monitoring": {4000},
    "mlserver": {8080, 8081, 8082},
    "gateway": {8000},
    "monitoring": {8090},
    "prometheus": {9090},
    "grafana": {3000},
}
# Our images: payband-<package>, built from deploy/images/Dockerfile with PACKAGE=<package>.
PACKAGES = ["contracts", "data", "training", "serving", "gateway", "audit", "monitoring"]
PACKAGES += ["orchestration"]
OUR_IMAGE = re.compile(r"^payband-(?P<package>[a-z]+):\$\{PAYBAND_VERSION:-[0-9][^}]*\}$")
CODE_LOCATIONS = {"data", "training", "serving", "monitoring"}
# Servers listen on every interface of their container; only ports bound to 127.0.0.1 reach
# the host.
ANY_ADDRESS = "0.0.0.0"  # noqa: S104
# Variables that name a secret or a credential: required (${VAR:?message}), never defaulted.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY(_ID)?$|KEYS_FILE$")
# Of those, the ones whose value is the secret itself (key ids and file paths are not).
SECRET_VALUE = re.compile(r"PASSWORD|SECRET")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_file()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (Compose also accepts a NAME=value list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def strings(node: Any) -> Iterator[str]:
    """Every string value of a parsed YAML document (what Compose interpolates)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def used_variables(compose: dict[str, Any]) -> list[Interpolation]:
    return [found for text in strings(compose) for found in interpolations(text)]


def exposed(service: dict[str, Any]) -> set[int]:
    return {int(str(port).split("/")[0]) for port in service.get("expose", [])}


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of every `ports` entry (short syntax)."""
    found = []
    for entry in service.get("ports", []):
        *address, host, container = str(entry).split(":")
        found.append((":".join(address) or "every address", int(host), int(container)))
    return found


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Each dependency and its condition (a list entry means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def url(text: str) -> SplitResult:
    """A URL's parts, with each ${VAR...} (a password) standing in as plain text."""
    return urlsplit(re.sub(r"\$\{[^}]*\}", "from-env", text))


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command") or []
    return value.split() if isinstance(value, str) else [str(part) for part in value]


def option(args: list[str], *names: str) -> str:
    """The value after the first of `names` in an argument list."""
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
    raise AssertionError(f"none of {names} in {args}")


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of every short-syntax volume (the mode suffix dropped)."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        mounts[target] = source
    return mounts


# 1. The compose specification's JSON Schema


def compose_validator() -> Any:
    schema = compose_spec_schema()
    validator = validator_for(schema)
    validator.check_schema(schema)
    return validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{error.json_path}: {error.message}" for error in compose_validator().iter_errors(document)
    ]


def test_the_vendored_schema_is_the_compose_specification() -> None:
    schema = compose_spec_schema()
    assert schema["$id"] == "compose_spec.json"
    assert "services" in schema["properties"]
    assert validator_for(schema).__name__ == "Draft202012Validator"


def test_compose_file_is_valid(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["services"]["gateway"].update(imagee="payband-gateway:0.1.0"), "imagee"),
        (lambda d: d["services"]["gateway"].update(ports=8000), "is not of type 'array'"),
        (
            lambda d: d["services"]["gateway"]["depends_on"]["mlserver"].update(
                condition="service_ready"
            ),
            "service_ready",
        ),
        (lambda d: d.update(servics={}), "servics"),
    ],
    ids=["unknown-key", "wrong-type", "unknown-condition", "unknown-top-level-key"],
)
def test_the_schema_refuses_a_broken_copy(compose: dict[str, Any], change, message: str) -> None:
    broken = copy.deepcopy(compose)
    change(broken)
    errors = schema_errors(broken)
    assert errors
    assert any(message in error for error in errors), errors


def test_every_service_of_the_stack_is_there_in_its_profiles(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == {*BASE, *PIPELINES, *SERVING}
    for name in BASE:
        assert set(services[name]["profiles"]) == PROFILES, name
    for name in PIPELINES:
        assert services[name]["profiles"] == ["pipelines"], name
    for name in SERVING:
        assert services[name]["profiles"] == ["serving"], name


def test_dependencies_exist_and_run_in_every_profile_of_their_dependents(
    services: dict[str, dict[str, Any]],
) -> None:
    conditions = {"service_healthy", "service_completed_successfully", "service_started"}
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition in conditions
            # `--profile X up` fails when a dependency is not in profile X.
            missing = set(service["profiles"]) - set(services[dependency]["profiles"])
            assert not missing, f"{name} needs {dependency} in profiles {missing}"
            if condition == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check.get("test"), f"{dependency} has no health check"
                assert not check.get("disable"), f"{dependency} has no health check"
            if condition == "service_completed_successfully":
                assert dependency in ONE_SHOTS, f"{name} waits for {dependency} to exit"


def test_the_start_order(services: dict[str, dict[str, Any]]) -> None:
    def waits(name: str, dependency: str, condition: str) -> bool:
        return depends_on(services[name]).get(dependency) == condition

    healthy, done = "service_healthy", "service_completed_successfully"
    assert waits("minio-init", "minio", healthy)
    assert waits("lakefs", "postgres", healthy)
    assert waits("lakefs", "minio-init", done)
    assert waits("mlflow", "postgres", healthy)
    assert waits("mlflow", "minio-init", done)
    assert waits("migrate", "postgres", healthy)
    assert waits("migrate-monitoring", "postgres", healthy)
    assert waits("dbt-build", "lakefs", healthy)
    assert waits("dbt-build", "postgres", healthy)
    assert waits("gateway", "migrate", done)
    assert waits("gateway", "mlserver", healthy)
    assert waits("monitoring", "migrate", done)
    assert waits("monitoring", "migrate-monitoring", done)
    for name in ("dagster-webserver", "dagster-daemon"):
        for location in CODE_LOCATIONS:
            assert waits(name, f"dagster-{location}", healthy), (name, location)


def test_long_running_services_have_health_checks_and_one_shots_do_not_restart(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
            assert "ports" not in service, name
        else:
            assert service["restart"] == "unless-stopped", name
            check = service.get("healthcheck", {})
            assert check.get("test"), f"{name} has no health check"
            assert not check.get("disable"), f"{name} has no health check"


def test_ports_are_the_fixed_ones_and_published_only_on_loopback(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert exposed(service) == PORTS.get(name, set()), name
    host_ports = []
    for name, service in services.items():
        for address, host, container in published(service):
            assert address == "127.0.0.1", f"{name} publishes on {address}"
            assert container in exposed(service), name
            host_ports.append(host)
    assert len(host_ports) == len(set(host_ports)), host_ports
    opened = {
        (name, container): host
        for name, service in services.items()
        for _, host, container in published(service)
    }
    # What a person opens, and nothing else (the databases and stores stay inside).
    assert opened == {
        ("gateway", 8000): 8000,
        ("lakefs", 8000): 8001,
        ("dagster-webserver", 3000): 3000,
        ("grafana", 3000): 3001,
        ("mlflow", 5000): 5000,
        ("prometheus", 9090): 9090,
        ("minio", 9001): 9001,
        ("monitoring", 8090): 8090,
    }


def test_third_party_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    pinned = {
        name: service["image"]
        for name, service in services.items()
        if not service["image"].startswith(("payband-", "${PAYBAND_MODEL_IMAGE"))
    }
    assert set(pinned) == {"postgres", "minio", "minio-init", "lakefs", "prometheus", "grafana"}
    for name, image in pinned.items():
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image} is not pinned"
    assert pinned["postgres"].startswith("postgres:17")


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(compose["volumes"]) == {
        "postgres-data",
        "minio-data",
        "grafana-data",
        "prometheus-data",
    }
    assert volume_mounts(services["postgres"])["/var/lib/postgresql/data"] == "postgres-data"
    assert volume_mounts(services["minio"])["/data"] == "minio-data"
    assert option(command(services["minio"]), "server") == "/data"
    assert volume_mounts(services["grafana"])["/var/lib/grafana"] == "grafana-data"
    assert volume_mounts(services["prometheus"])["/prometheus"] == "prometheus-data"
    assert "--storage.tsdb.path=/prometheus" in command(services["prometheus"])


def test_bind_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    mounted = 0
    for name, service in services.items():
        for target, source in volume_mounts(service).items():
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} -> {target}"
                mounted += 1
    assert mounted >= 5


def test_postgres_makes_the_four_databases(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    scripts = DEPLOY / volume_mounts(postgres)["/docker-entrypoint-initdb.d"]
    sql = " ".join(path.read_text() for path in scripts.glob("*.sh"))
    for database in ("payband", "mlflow", "lakefs", "dagster"):
        assert f"CREATE DATABASE {database} OWNER {database};" in sql
    # The script reads the passwords from the container's environment.
    passwords = re.findall(r"\\getenv \w+ (\w+)", sql)
    assert len(passwords) == 5
    for variable in passwords:
        assert variable in environment(postgres), variable
    # Over TCP: the server listens on its socket only while the init scripts run.
    assert option(postgres["healthcheck"]["test"], "-h") == "127.0.0.1"


def test_minio_init_makes_the_buckets(services: dict[str, dict[str, Any]]) -> None:
    init = services["minio-init"]
    script_path = next(
        source for target, source in volume_mounts(init).items() if target in init["entrypoint"]
    )
    script = (DEPLOY / script_path).read_text()
    assert "mc mb --ignore-existing local/payband-lakefs local/mlflow" in script
    variables = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script))
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} <= variables
    for variable in sorted(variables):
        assert variable in environment(init), variable
    assert init["image"].startswith("minio/mc:")


def test_lakefs_is_on_postgres_and_minio_with_its_admin_set_up(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment(services["lakefs"])
    assert env["LAKEFS_DATABASE_TYPE"] == "postgres"
    database = url(env["LAKEFS_DATABASE_POSTGRES_CONNECTION_STRING"])
    assert (database.hostname, database.port, database.path) == ("postgres", 5432, "/lakefs")
    assert env["LAKEFS_BLOCKSTORE_TYPE"] == "s3"
    assert env["LAKEFS_BLOCKSTORE_S3_ENDPOINT"] == "http://minio:9000"
    assert env["LAKEFS_BLOCKSTORE_S3_FORCE_PATH_STYLE"] == "true"
    for key in ("USER_NAME", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"):
        assert env[f"LAKEFS_INSTALLATION_{key}"], key
    # payband-data logs in with the installation's (admin) keys and creates its repository in
    # the bucket minio-init makes.
    data = environment(services["dbt-build"])
    assert data["PAYBAND_DATA_LAKEFS_ACCESS_KEY_ID"] == env["LAKEFS_INSTALLATION_ACCESS_KEY_ID"]
    assert (
        data["PAYBAND_DATA_LAKEFS_SECRET_ACCESS_KEY"]
        == env["LAKEFS_INSTALLATION_SECRET_ACCESS_KEY"]
    )
    assert data["PAYBAND_DATA_LAKEFS_ENDPOINT"] == "http://lakefs:8000"
    assert data["PAYBAND_DATA_LAKEFS_STORAGE_NAMESPACE"].startswith("s3://payband-lakefs/")
    assert data["PAYBAND_DATA_STORE"] == "lakefs"


def test_mlflow_serves_from_postgres_with_artifacts_in_minio(
    services: dict[str, dict[str, Any]],
) -> None:
    mlflow = services["mlflow"]
    args = command(mlflow)
    assert args[:2] == ["mlflow", "server"]
    assert option(args, "--artifacts-destination") == "s3://mlflow"
    assert "--serve-artifacts" in args
    # Inside its container, reachable by the other services.
    assert option(args, "--host", "-h") == ANY_ADDRESS
    assert option(args, "--port", "-p") == "5000"
    assert "mlflow:*" in option(args, "--allowed-hosts").split(",")
    env = environment(mlflow)
    store = url(env["MLFLOW_BACKEND_STORE_URI"])
    assert (store.scheme, store.hostname, store.path) == (
        "postgresql+psycopg",
        "postgres",
        "/mlflow",
    )
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # Everything that writes or reads artifacts reaches the same MinIO with the same user, and
    # the server's store through the one variable every package reads.
    for name in ("dagster-training", "dagster-serving", "dagster-monitoring", "monitoring"):
        other = environment(services[name])
        for key in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert other[key] == env[key], (name, key)
        assert other["PAYBAND_MLFLOW_TRACKING_URI"] == env["MLFLOW_BACKEND_STORE_URI"], name
        named = {key for key in other if key.endswith("MLFLOW_TRACKING_URI")}
        assert named == {"PAYBAND_MLFLOW_TRACKING_URI"}, name
    training = environment(services["dagster-training"])
    assert training["PAYBAND_TRAINING_MLFLOW_ARTIFACT_ROOT"].startswith("s3://mlflow/")


def test_dbt_build_ingests_then_builds_adult(services: dict[str, dict[str, Any]]) -> None:
    dbt = services["dbt-build"]
    assert dbt["image"].startswith("payband-data:")
    shell, flags, script = command(dbt)
    assert (shell, flags) == ("/bin/sh", "-ec")
    steps = [step.strip() for step in script.split("&&")]
    assert steps[:2] == [
        "payband-data ingest --source adult",
        "payband-data build --source adult",
    ]


def test_migrations_run_in_their_images(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["image"].startswith("payband-audit:")
    assert command(services["migrate"]) == ["payband-audit", "migrate"]
    assert services["migrate-monitoring"]["image"].startswith("payband-monitoring:")
    assert command(services["migrate-monitoring"]) == ["payband-monitoring", "migrate"]
    # They migrate the databases the services then use.
    audit_url = environment(services["migrate"])["PAYBAND_AUDIT_DATABASE_URL"]
    results_url = environment(services["migrate-monitoring"])["PAYBAND_MONITORING_DATABASE_URL"]
    assert environment(services["monitoring"])["PAYBAND_MONITORING_DATABASE_URL"] == results_url
    gateway = url(environment(services["gateway"])["PAYBAND_AUDIT_DATABASE_URL"])
    assert (gateway.hostname, gateway.path) == (url(audit_url).hostname, "/payband")


def test_telemetry_is_off_everywhere(services: dict[str, dict[str, Any]]) -> None:
    ours = {"DO_NOT_TRACK": "1", "NML_DISABLE_USAGE_LOGGING": "1"}
    ours |= {"MLFLOW_DISABLE_TELEMETRY": "true", "DAGSTER_DISABLE_TELEMETRY": "true"}
    for name, service in services.items():
        if service["image"].startswith(("payband-", "${PAYBAND_MODEL_IMAGE")):
            env = environment(service)
            assert {key: env.get(key) for key in ours} == ours, name
    grafana = environment(services["grafana"])
    assert grafana["GF_ANALYTICS_REPORTING_ENABLED"] == "false"
    assert grafana["GF_ANALYTICS_CHECK_FOR_UPDATES"] == "false"
    assert grafana["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"
    lakefs = services["lakefs"]
    assert environment(lakefs)["LAKEFS_STATS_ENABLED"] == "false"
    assert environment(lakefs)["LAKEFS_SECURITY_CHECK_LATEST_VERSION"] == "false"
    # lakeFS ignores an empty variable: the advisory check's URL is emptied in its config file.
    assert lakefs["command"] == ["run", "--config", "/etc/lakefs/config.yaml"]
    assert "./lakefs/config.yaml:/etc/lakefs/config.yaml:ro" in lakefs["volumes"]
    config = yaml.safe_load((DEPLOY / "lakefs" / "config.yaml").read_text())
    assert config == {"security": {"audit_check_url": ""}}


# 2. Interpolation: deploy/.env.example holds every variable; secrets are required


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", []),
        ("$${NOT} and $$HOME", []),
        ("${A}", [Interpolation("A", "", "", True)]),
        ("x${A:-0.1.0}y", [Interpolation("A", ":-", "0.1.0", True)]),
        ("${A:?set A in deploy/.env}", [Interpolation("A", ":?", "set A in deploy/.env", True)]),
        ("u:${B?}@h $C", [Interpolation("B", "?", "", True), Interpolation("C", "", "", False)]),
    ],
)
def test_interpolations_follow_compose(text: str, expected: list[Interpolation]) -> None:
    assert interpolations(text) == expected


@pytest.mark.parametrize("text", ["${}", "${A", "cost: $5", "${A:x}"])
def test_an_invalid_interpolation_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid interpolation"):
        interpolations(text)


def test_every_variable_comes_from_the_env_example(compose: dict[str, Any]) -> None:
    used = used_variables(compose)
    example = env_file(ENV_EXAMPLE)
    assert all(found.braced for found in used), [f.name for f in used if not f.braced]
    required = {found.name for found in used if found.op != ":-"}
    assert required <= set(example), required - set(example)
    # And nothing in the example is left unused.
    assert set(example) <= {found.name for found in used}, set(example) - {f.name for f in used}


def test_each_variable_is_required_or_defaulted_the_same_way_everywhere(
    compose: dict[str, Any],
) -> None:
    forms: dict[str, set[str]] = {}
    for found in used_variables(compose):
        forms.setdefault(found.name, set()).add(found.op)
    for name, ops in forms.items():
        assert ops in ({":?"}, {":-"}), f"{name} is used as {ops}"
        if SECRET_NAME.search(name):
            assert ops == {":?"}, f"the secret {name} must be required, not defaulted"
    for found in used_variables(compose):
        if found.op == ":?":
            assert found.arg == f"set {found.name} in deploy/.env", found


def test_the_env_example_explains_every_variable_with_placeholders() -> None:
    example = env_file(ENV_EXAMPLE)
    assert example
    for variable in example.values():
        assert len(variable.comment) >= 20, f"{variable.name} has no comment"
        assert variable.value, variable.name
        if SECRET_VALUE.search(variable.name):
            assert re.search(r"change-?me", variable.value, re.IGNORECASE), variable.name
        # They go into URLs unquoted and unescaped.
        assert re.fullmatch(r"[A-Za-z0-9_./:+-]+", variable.value), variable.name
    # The values a person runs with stay out of git.
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/.env" in ignored


def test_no_literal_secret_in_the_compose_file(compose: dict[str, Any]) -> None:
    required = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}")
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert required.fullmatch(value), f"{name}: {key} is not from deploy/.env"
    # A URL's password is always a required variable.
    credentials = re.compile(r"://[^/:@\s]+:(?P<password>\$\{[^}]*\}|[^@\s]+)@")
    urls = 0
    for text in strings(compose):
        for match in credentials.finditer(text):
            assert required.fullmatch(match["password"]), text
            urls += 1
    assert urls >= 3
    # And no example value appears in the file itself.
    raw = COMPOSE.read_text()
    for variable in env_file(ENV_EXAMPLE).values():
        if SECRET_VALUE.search(variable.name):
            assert variable.value not in raw, variable.name


def test_the_gateway_keys_are_a_compose_secret(compose: dict[str, Any]) -> None:
    [(secret, spec)] = compose["secrets"].items()
    assert spec["file"] == "${GATEWAY_API_KEYS_FILE:?set GATEWAY_API_KEYS_FILE in deploy/.env}"
    gateway = compose["services"]["gateway"]
    assert gateway["secrets"] == [secret]
    assert environment(gateway)["PAYBAND_GATEWAY_API_KEYS_FILE"] == f"/run/secrets/{secret}"
    assert "PAYBAND_GATEWAY_API_KEYS" not in environment(gateway)


# 3. Consistency with Prometheus, Grafana, the Dagster code locations and the gateway


def test_every_scrape_target_is_a_service_exposing_that_port(
    services: dict[str, dict[str, Any]],
) -> None:
    targets = scrape_targets()
    assert {job for job, _, _ in targets} == {"prometheus", "gateway", "mlserver", "monitoring"}
    for job, host, port in targets:
        # Prometheus scrapes itself as localhost.
        name = "prometheus" if host == "localhost" else host
        assert name in services, f"job {job}: no service {host}"
        assert port in exposed(services[name]), f"job {job}: {name} does not expose {port}"
        # The target runs whenever Prometheus does.
        assert set(services["prometheus"]["profiles"]) <= set(services[name]["profiles"])


def test_mlserver_metrics_port_is_the_scraped_one(services: dict[str, dict[str, Any]]) -> None:
    [(_, host, port)] = [target for target in scrape_targets() if target[0] == "mlserver"]
    assert host == "mlserver"
    assert environment(services["mlserver"])["PAYBAND_SERVING_METRICS_PORT"] == str(port)


def test_grafana_reads_the_prometheus_service(services: dict[str, dict[str, Any]]) -> None:
    [source] = grafana_datasources()
    address = url(source["url"])
    assert address.hostname in services
    assert address.hostname == "prometheus"
    assert address.port in exposed(services["prometheus"])


def test_grafana_mounts_what_its_provisioning_reads(services: dict[str, dict[str, Any]]) -> None:
    mounts = volume_mounts(services["grafana"])
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    [provider] = grafana_dashboard_providers()
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert all(entry.endswith(":ro") for entry in services["grafana"]["volumes"][:2])
    env = environment(services["grafana"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_prometheus_mounts_its_configuration(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert volume_mounts(prometheus)["/etc/prometheus"] == "./prometheus"
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command(prometheus)


def code_locations(services: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int]]:
    value = environment(services["dagster-webserver"])["PAYBAND_ORCHESTRATION_CODE_LOCATIONS"]
    found = {}
    for entry in value.split(","):
        name, _, address = entry.partition("=")
        host, _, port = address.rpartition(":")
        assert name not in found, f"code location {name} twice"
        found[name] = (host, int(port))
    return found


def test_code_locations_are_the_code_servers(services: dict[str, dict[str, Any]]) -> None:
    locations = code_locations(services)
    assert set(locations) == CODE_LOCATIONS
    for name, (host, port) in locations.items():
        server = services[host]
        args = command(server)
        assert args[:3] == ["dagster", "code-server", "start"], host
        assert option(args, "-p", "--port") == str(port), host
        assert option(args, "-h", "--host") == ANY_ADDRESS, host
        assert option(args, "-m", "--module-name") == f"payband_{name}.definitions", host
        assert server["image"].startswith(f"payband-{name}:"), host
        assert port in exposed(server), host
        assert server["healthcheck"]["test"][-2:] == ["-p", str(port)], host
    # The webserver and the daemon see the same locations.
    daemon = environment(services["dagster-daemon"])["PAYBAND_ORCHESTRATION_CODE_LOCATIONS"]
    webserver = environment(services["dagster-webserver"])["PAYBAND_ORCHESTRATION_CODE_LOCATIONS"]
    assert daemon == webserver


def test_dagster_instance_is_the_same_everywhere(services: dict[str, dict[str, Any]]) -> None:
    keys = [f"PAYBAND_ORCHESTRATION_POSTGRES_{key}" for key in ("HOST", "PORT", "USER", "DB")]
    keys.append("PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD")
    names = ["dagster-webserver", "dagster-daemon"]
    names += [f"dagster-{location}" for location in sorted(CODE_LOCATIONS)]
    instances = {name: {key: environment(services[name])[key] for key in keys} for name in names}
    first = instances["dagster-webserver"]
    assert all(instance == first for instance in instances.values())
    assert (first[keys[0]], first[keys[1]], first[keys[3]]) == ("postgres", "5432", "dagster")
    assert [command(services[name]) for name in names[:2]] == [
        ["payband-orchestration", "webserver"],
        ["payband-orchestration", "daemon"],
    ]


def test_the_gateway_calls_mlserver_rest_port(services: dict[str, dict[str, Any]]) -> None:
    inference = url(environment(services["gateway"])["PAYBAND_GATEWAY_INFERENCE_URL"])
    assert (inference.scheme, inference.hostname) == ("http", "mlserver")
    assert inference.port in exposed(services["mlserver"])
    assert str(inference.port) == environment(services["mlserver"])["PAYBAND_SERVING_HTTP_PORT"]
    assert services["mlserver"]["image"] == "${PAYBAND_MODEL_IMAGE:-payband-model:salary-band-1}"


def test_the_gateway_acts_only_as_the_audit_roles(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["gateway"])
    assert url(env["PAYBAND_AUDIT_DATABASE_URL"]).username == "payband_gateway"
    assert env["PAYBAND_GATEWAY_AUDIT_WRITER_ROLE"] == "payband_audit_writer"
    assert env["PAYBAND_GATEWAY_AUDIT_READER_ROLE"] == "payband_audit_reader"
    script = (DEPLOY / "postgres" / "initdb" / "10-payband.sh").read_text()
    assert "CREATE ROLE payband_gateway LOGIN NOINHERIT" in script
    assert "IN ROLE payband_audit_writer, payband_audit_reader;" in script


# 4. Every PAYBAND_* variable is a field of its package's settings

# Longest prefix first: PAYBAND_MAX_BATCH_SIZE is payband_contracts'.
SETTINGS: dict[str, type[BaseSettings]] = {
    "PAYBAND_ORCHESTRATION_": OrchestrationSettings,
    "PAYBAND_MONITORING_": MonitoringSettings,
    "PAYBAND_TRAINING_": TrainingSettings,
    "PAYBAND_GATEWAY_": GatewaySettings,
    "PAYBAND_SERVING_": ServingSettings,
    "PAYBAND_AUDIT_": AuditSettings,
    "PAYBAND_DATA_": DataSettings,
    "PAYBAND_": ContractsSettings,
}


def test_every_payband_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        by_settings: dict[type[BaseSettings], dict[str, str]] = {}
        for key, value in environment(service).items():
            if not key.startswith("PAYBAND_") or key == "PAYBAND_HOME":  # read by payband_home()
                continue
            # A variable read under a field's alias (PAYBAND_MLFLOW_TRACKING_URI), by every
            # settings class that has that field.
            readers = [
                settings
                for settings in SETTINGS.values()
                if any(field.validation_alias == key for field in settings.model_fields.values())
            ]
            for settings in readers:
                by_settings.setdefault(settings, {})[key] = re.sub(r"\$\{[^}]*\}", "x", value)
            if readers:
                checked += 1
                continue
            prefix = next(prefix for prefix in SETTINGS if key.startswith(prefix))
            settings = SETTINGS[prefix]
            field = key[len(prefix) :].lower()
            assert field in settings.model_fields, f"{name}: {key} is not a setting"
            # A variable from deploy/.env stands in as text.
            by_settings.setdefault(settings, {})[field] = re.sub(r"\$\{[^}]*\}", "x", value)
            checked += 1
        for settings, values in by_settings.items():
            assert field_errors(settings, values) == [], f"{name}: {settings.__name__}"
    assert checked > 50


def test_a_misspelt_or_wrong_variable_would_be_caught() -> None:
    assert "inference_url" in GatewaySettings.model_fields
    assert "inference_uri" not in GatewaySettings.model_fields
    assert field_errors(DataSettings, {"store": "lakeFS"})
    assert field_errors(GatewaySettings, {"port": "0"})
    assert field_errors(OrchestrationSettings, {"code_locations": "data=dagster-data"})
    assert not field_errors(OrchestrationSettings, {"code_locations": "data=dagster-data:4000"})


# 5. Our images are built from the one recipe


def test_our_images_are_built_from_the_one_recipe(services: dict[str, dict[str, Any]]) -> None:
    built = set()
    for name, service in services.items():
        image = service["image"]
        if not image.startswith("payband-"):
            continue
        match = OUR_IMAGE.match(image)
        assert match, f"{name}: {image} is not payband-<package>:${{PAYBAND_VERSION:-...}}"
        package = match["package"]
        assert package in PACKAGES, f"{name}: payband-{package} is not one of our images"
        build = service.get("build")
        assert build, f"{name} uses {image} without a build"
        assert (DEPLOY / build["context"]).resolve() == ROOT, name
        assert build["dockerfile"] == "deploy/images/Dockerfile", name
        assert build["args"]["PACKAGE"] == package, f"{name}: builds another package's image"
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {build['dockerfile']} does not exist yet"
        assert f"FROM runtime AS payband-{package}\n" in dockerfile.read_text(), name
        built.add(package)
    # Everything but contracts (a CLI of schemas) runs here.
    assert built == set(PACKAGES) - {"contracts"}


# The README documents how to run it


def test_readme_documents_the_stack(services: dict[str, dict[str, Any]]) -> None:
    readme = (DEPLOY / "README.md").read_text()
    for profile in sorted(PROFILES):
        assert f"docker compose -f deploy/compose.yaml --profile {profile} up -d" in readme
    assert "deploy/.env.example" in readme
    for service in services.values():
        for _, host, _ in published(service):
            assert f"http://127.0.0.1:{host}" in readme, host
