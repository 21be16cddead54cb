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
from payband.options import UpOptions
from payband.services import (
    Stack,
    choose_ports,
    dagster_service,
    gateway_service,
    mlflow_service,
    mlserver_service,
    monitoring_service,
    wait_forever,
)
from payband.stack import local_postgres, lock_home
from payband_testing._process import answers_ok

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
    """Start the stack and block until Ctrl-C (0) or a service dies (1)."""
    home = Home()
    quiet_libraries()
    with lock_home(home, "up"):
        postgres = local_postgres(home, err)
        with postgres:
            ports = choose_ports(postgres.port, preferred=True)
            env = home.environment(ports)
            apply(env)
            data = prepare_data(err)
            model = prepare_model(err, data.features_uri, trials=options.trials, timeout_s=None)
            guarded("migrations", migrate_stores)
            keys = ensure_keys(home)
            services = [
                mlserver_service(ports, f"models:/{model.name}@champion"),
                gateway_service(ports),
                monitoring_service(ports, options.monitoring_interval_s),
                mlflow_service(ports, home, env["PAYBAND_TRAINING_MLFLOW_TRACKING_URI"]),
            ]
            if options.dagster:
                services.append(dagster_service(ports, write_workspace(home)))
            with Stack(home, env) as stack:
                for service in services:
                    with err.status(f"starting {service.name} on {service.url}"):
                        stack.start(service)
                    err.print(f"{service.name}: ready on {service.url}")
                home.write_state(
                    {
                        "command": "up",
                        "pid": os.getpid(),
                        "postgres": {
                            "port": postgres.port,
                            "url": env["PAYBAND_AUDIT_DATABASE_URL"],
                        },
                        "model": f"{model.name} version {model.version}",
                        "services": stack.describe(),
                    }
                )
                try:
                    _print_ready(out, stack, keys, env, home)
                    died = wait_forever(stack)
                finally:
                    home.remove_state()
                if died is not None:
                    service, code = died
                    err.print(
                        f"error: {service.name} exited with status {code}; stopping the stack "
                        f"(log: {home.logs / (service.name + '.log')})"
                    )
                    return 1
    return 0


def _print_ready(out: Console, stack: Stack, keys: dict[str, Any], env: dict, home: Home) -> None:
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
    out.print(f"PostgreSQL: {env['PAYBAND_AUDIT_DATABASE_URL']}", soft_wrap=True)
    out.print(f"state and logs: {home.root}", soft_wrap=True)


def run_status(out: Console) -> int:
    """Print what runs from this PAYBAND_HOME; 0 when a stack runs and every part answers."""
    home = Home()
    state = home.read_state()
    if state is None:
        out.print(f"payband: nothing runs from {home.root} (start it with `uv run payband up`)")
        return 1
    if state.get("unreadable"):
        out.print(f"payband: the state file {home.state_file} cannot be read")
        return 1
    table = Table(title=f"payband {state.get('command', '?')} (pid {state.get('pid', '?')})")
    for column in ("service", "pid", "process", "health", "URL"):
        table.add_column(column)
    healthy = True
    for service in state.get("services", []):
        alive = _alive(int(service["pid"]))
        answers = alive and answers_ok(service["health"])
        healthy = healthy and answers
        table.add_row(
            service["name"],
            str(service["pid"]),
            "running" if alive else "gone",
            "ok" if answers else "not answering",
            service["url"],
        )
    out.print(table)
    if "postgres" in state:
        out.print(f"PostgreSQL: {state['postgres']['url']}", soft_wrap=True)
    if "model" in state:
        out.print(f"model: {state['model']}")
    return 0 if healthy else 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
