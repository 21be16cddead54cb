"""`payband up` keeps the local stack running for exploration; `payband status` says what runs.

`up` reuses (or first makes) the data and the champion exactly as the demo does, then starts
MLServer with the champion, the gateway, the monitoring service, the MLflow UI and the
Dagster UI with every code location, checks each over HTTP, prints where they are and the
local API keys, and stops everything on Ctrl-C (or SIGTERM), or when one of them dies.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table

from payband.home import Home, apply
from payband.lifecycle import guarded, migrate_stores, prepare_data, prepare_model, quiet_libraries
from payband.localkeys import ensure_keys
from payband.options import CHUNK_SIZE, UpOptions
from payband.services import (
    ServiceError,
    Stack,
    choose_ports,
    dagster_service,
    gateway_service,
    mlflow_service,
    mlserver_service,
    monitoring_service,
    wait_forever,
)
from payband.stack import launcher, local_postgres, lock_home
from payband_local.cluster import LocalPostgres, LocalPostgresError
from payband_local.process import answers_ok

__all__ = ["UpOptions", "run_status", "run_up"]

# Dagster code locations: every package that has one.
CODE_LOCATIONS = {
    "data": "payband_data.definitions",
    "training": "payband_training.definitions",
    "serving": "payband_serving.definitions",
}


def write_workspace(home: Home) -> Any:
    """Dagster's workspace file naming every code location, and its instance settings with
    telemetry off (DAGSTER_DISABLE_TELEMETRY only stops the upload, not the collection)."""
    (home.dagster / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    path = home.dagster / "workspace.yaml"
    lines = ["load_from:"]
    for name, module in CODE_LOCATIONS.items():
        lines += [
            "  - python_module:",
            f"      module_name: {module}",
            f"      location_name: {name}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_up(options: UpOptions, out: Console, err: Console) -> int:
    """Start the stack and block until Ctrl-C (0) or a service dies (2)."""
    home = Home()
    quiet_libraries()
    with lock_home(home, "up"):
        postgres = local_postgres(home, err)
        with postgres:
            apply(home.environment(postgres.databases))
            data = prepare_data(err)
            model = prepare_model(err, data.features_uri, trials=options.trials, timeout_s=None)
            guarded("migrations", migrate_stores)
            keys = ensure_keys(home)
            ports = choose_ports(preferred=True, avoid=frozenset({postgres.port}))
            apply(home.service_environment(ports))
            services = [
                mlserver_service(ports, f"models:/{model.name}@champion"),
                gateway_service(ports),
                monitoring_service(ports, options.monitoring_interval_s, CHUNK_SIZE),
                mlflow_service(ports, home, postgres.databases.mlflow),
            ]
            if options.dagster:
                services.append(dagster_service(ports, write_workspace(home)))
            with Stack(home, dict(os.environ)) as stack:
                for service in services:
                    with err.status(f"starting {service.name} on {service.url}"):
                        stack.start(service)
                    err.print(f"{service.name}: ready on {service.url}")
                home.write_state(
                    {
                        "command": "up",
                        "pid": os.getpid(),
                        "postgres": {"port": postgres.port, "url": postgres.shown_url},
                        "model": f"{model.name} version {model.version}",
                        "services": stack.describe(),
                    }
                )
                try:
                    _print_ready(out, stack, keys, postgres.shown_url, home)
                    died = wait_forever(stack)
                finally:
                    home.remove_state()
                if died is not None:
                    service, code = died
                    raise ServiceError(
                        f"{service.name} exited with status {code}; the stack was stopped "
                        f"(log: {home.logs / (service.name + '.log')})"
                    )
    return 0


def _print_ready(
    out: Console, stack: Stack, keys: dict[str, Any], postgres_url: str, home: Home
) -> None:
    table = Table(title="payband is up (Ctrl-C stops everything)")
    for column in ("service", "URL", "also"):
        table.add_column(column)
    for service, _ in stack.running:
        also = "  ".join(f"{label}: {url}" for label, url in service.links.items())
        table.add_row(service.name, service.url, also)
    out.print(table)
    out.print("local API keys (for this machine only; send as `Authorization: Bearer <key>`):")
    for key in keys.values():
        out.print(f"  {key.name} ({key.role}): {key.key}", soft_wrap=True)
    out.print(
        f"PostgreSQL: {postgres_url} (password in {home.root / 'postgres.password'})",
        soft_wrap=True,
    )
    out.print(f"state and logs: {home.root}", soft_wrap=True)


def run_status(out: Console) -> int:
    """Print what runs from this PAYBAND_HOME; 0 when a stack runs and every part answers."""
    home = Home()
    holder = launcher(home)
    state = home.read_state()
    if holder is None:
        if state is not None:
            home.remove_state()  # left by a launcher that was killed
        out.print(f"payband: nothing runs from {home.root} (start it with `uv run payband up`)")
        _report_cluster(out, home)
        return 1
    if state is None or not isinstance(state.get("services"), list):
        out.print(f"{holder} is starting (or stopping) from {home.root}; nothing to show yet")
        return 1
    return _report_services(out, holder, state)


def _report_services(out: Console, holder: str, state: dict[str, Any]) -> int:
    table = Table(title=holder)
    for column in ("service", "pid", "process", "health", "URL"):
        table.add_column(column)
    healthy = True
    for service in state["services"]:
        try:
            pid, name, url, health = (service[k] for k in ("pid", "name", "url", "health"))
        except (KeyError, TypeError):
            out.print(f"the state file lists a service it does not describe: {service!r}")
            return 1
        alive = _alive(int(pid))
        answers = alive and answers_ok(health)
        healthy = healthy and answers
        status = "ok" if answers else "not ready" if alive else "down"
        table.add_row(name, str(pid), "running" if alive else "gone", status, url)
    out.print(table)
    if isinstance(state.get("postgres"), dict):
        out.print(f"PostgreSQL: {state['postgres'].get('url', '?')}", soft_wrap=True)
    if "model" in state:
        out.print(f"model: {state['model']}")
    return 0 if healthy else 1


def _report_cluster(out: Console, home: Home) -> None:
    """Say so when a launcher that died left the PostgreSQL cluster running."""
    try:
        cluster = LocalPostgres(home.root)
        port = cluster.port if cluster.running else None
    except (LocalPostgresError, OSError):
        return  # not running (any more), or not set up
    if port is not None:
        out.print(
            f"PostgreSQL is still running from {cluster.data_dir} (port {port}), left "
            "by a launcher that was killed; the next `payband demo` or `payband up` adopts "
            "and stops it"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
