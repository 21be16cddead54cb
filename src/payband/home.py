"""PAYBAND_HOME: where the local stack keeps its state, and the environment that points every
package at it.

Everything `payband demo` and `payband up` create lives under one directory (default
``~/.payband``): the versioned store, MLflow's artifacts, serving bundles, monitoring's
state, Dagster's home, the local API keys, the services' logs and the state file that
`payband status` reads. The PostgreSQL cluster lives there too, or, when PostgreSQL's
unprivileged user cannot reach that directory (root with a mode-700 home), in
/var/lib/payband with a pointer file here (see `payband_local.cluster`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payband_contracts.settings import payband_home

__all__ = ["LOOPBACK", "Databases", "Home", "Ports", "apply", "telemetry_off"]

LOOPBACK = "127.0.0.1"
STATE_FILE = "stack.json"

# Every switch that keeps a component from phoning home.
_TELEMETRY_OFF = {
    "NML_DISABLE_USAGE_LOGGING": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
}


def telemetry_off() -> dict[str, str]:
    """The environment variables that switch off NannyML's, MLflow's, Dagster's and dbt's
    usage reporting."""
    return dict(_TELEMETRY_OFF)


@dataclass(frozen=True)
class Ports:
    """Where each local service listens (all on 127.0.0.1)."""

    mlserver_http: int
    mlserver_grpc: int
    mlserver_metrics: int
    gateway: int
    monitoring: int
    mlflow: int
    dagster: int


@dataclass(frozen=True)
class Databases:
    """The local cluster's two databases, as URLs (with the cluster's password, if any)."""

    warehouse: str  # postgresql://: raw records, dbt, Optuna, audit log, monitoring results
    mlflow: str  # postgresql+psycopg://: MLflow's tracking and registry store


def _resolved_home() -> Path:
    return payband_home().resolve()


# What payband creates in a home; `--fresh` removes these and nothing else (the PostgreSQL
# cluster is removed by its owner, `LocalPostgres.remove`; the PUMS download cache stays).
_CREATED = (
    "store",
    "mlflow-artifacts",
    "dbt",
    "logs",
    "dagster",
    "monitoring",
    "serving",
    "api-keys.local.json",
    "gateway-keys.json",
    STATE_FILE,
    STATE_FILE.replace(".json", ".tmp"),
)


@dataclass(frozen=True)
class Home:
    """The layout of one PAYBAND_HOME (made absolute: the services may run elsewhere)."""

    root: Path = field(default_factory=_resolved_home)

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow-artifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    @property
    def keys(self) -> Path:
        """The local API keys in clear (mode 600): printed by `payband up`, used by the demo."""
        return self.root / "api-keys.local.json"

    @property
    def key_hashes(self) -> Path:
        """The gateway's key file: names, roles and hashes only."""
        return self.root / "gateway-keys.json"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def prepare(self) -> None:
        for directory in (self.root, self.logs, self.dagster):
            directory.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Remove what payband created here, and nothing else a user may keep in the folder."""
        for name in _CREATED:
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def environment(self, databases: Databases) -> dict[str, str]:
        """The variables that point every package at this home and these databases."""
        return {
            **telemetry_off(),
            "NO_PROXY": _no_proxy(),
            "no_proxy": _no_proxy(),
            "PAYBAND_HOME": str(self.root),
            "DAGSTER_HOME": str(self.dagster),
            # Training, serving and monitoring: one MLflow store.
            "PAYBAND_MLFLOW_TRACKING_URI": databases.mlflow,
            "PAYBAND_DATA_DATABASE_URL": databases.warehouse,
            "PAYBAND_DATA_STORE": "local",
            "PAYBAND_DATA_STORE_DIR": str(self.store),
            "PAYBAND_TRAINING_MLFLOW_ARTIFACT_ROOT": self.mlflow_artifacts.as_uri(),
            "PAYBAND_TRAINING_STUDY_STORAGE_URL": databases.warehouse,
            # No image is built for a local run.
            "PAYBAND_SERVING_CONTAINER_ENGINE": "none",
            "PAYBAND_AUDIT_DATABASE_URL": databases.warehouse,
            "PAYBAND_GATEWAY_API_KEYS_FILE": str(self.key_hashes),
            "PAYBAND_MONITORING_DATABASE_URL": databases.warehouse,
            "PAYBAND_MONITORING_STATE_DIR": str(self.monitoring),
        }

    @staticmethod
    def service_environment(ports: Ports) -> dict[str, str]:
        """The variables that put each service on its port, on loopback only."""
        return {
            "PAYBAND_SERVING_HOST": LOOPBACK,
            "PAYBAND_SERVING_HTTP_PORT": str(ports.mlserver_http),
            "PAYBAND_SERVING_GRPC_PORT": str(ports.mlserver_grpc),
            "PAYBAND_SERVING_METRICS_PORT": str(ports.mlserver_metrics),
            "PAYBAND_GATEWAY_HOST": LOOPBACK,
            "PAYBAND_GATEWAY_PORT": str(ports.gateway),
            "PAYBAND_GATEWAY_INFERENCE_URL": f"http://{LOOPBACK}:{ports.mlserver_http}",
            "PAYBAND_MONITORING_HOST": LOOPBACK,
            "PAYBAND_MONITORING_PORT": str(ports.monitoring),
        }

    def write_state(self, state: dict[str, Any]) -> None:
        """Record what runs (for `payband status`); written atomically."""
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2, default=str) + "\n")
        temporary.replace(self.state_file)

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {"unreadable": True}

    def remove_state(self) -> None:
        self.state_file.unlink(missing_ok=True)


def _no_proxy() -> str:
    """NO_PROXY and no_proxy of the environment, merged, plus loopback: a proxy from the
    environment must not see local traffic, and the user's own exceptions still hold."""
    names: list[str] = []
    for variable in ("NO_PROXY", "no_proxy"):
        for name in os.environ.get(variable, "").split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    return ",".join([*names, *(n for n in (LOOPBACK, "localhost") if n not in names)])


# Settings that would point the local stack at something else than what it started: a
# database role it does not have, keys other than the local ones, another model.
NOT_INHERITED = (
    "PAYBAND_AUDIT_ROLE",
    "PAYBAND_GATEWAY_API_KEYS",
    "PAYBAND_GATEWAY_AUDIT_WRITER_ROLE",
    "PAYBAND_GATEWAY_AUDIT_READER_ROLE",
    "PAYBAND_MONITORING_AUDIT_READER_ROLE",
    "PAYBAND_MONITORING_MODEL_VERSION",
    "PAYBAND_SERVING_MODEL_URI",
)


def apply(environment: dict[str, str]) -> None:
    """Set these variables in this process (the in-process steps read them as settings, the
    services inherit them) and drop the ones the local stack must not inherit."""
    for name in NOT_INHERITED:
        os.environ.pop(name, None)
    os.environ.update(environment)
