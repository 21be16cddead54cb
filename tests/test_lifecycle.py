"""The whole lifecycle through the real `payband` command, in subprocesses, on one home.

`payband demo` runs first (ingest, dbt, training with bias mitigation, promotion by the gates,
MLServer, gateway, the stream, monitoring, the audit chain); its summary is checked, then the
stores themselves: the audit log, MLflow's registry and the versioned store. Then a second
demo reuses data and model, a demo interrupted by SIGINT and one whose gateway cannot start
leave nothing running, and `payband up` / `payband status` run the stack for exploration.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from payband_local.cluster import LocalPostgres
from payband_local.process import answers_ok

# Each test launches the whole local stack.
pytestmark = pytest.mark.e2e

PAYBAND = str(Path(sys.executable).with_name("payband"))
# Two monitoring chunks of held-out candidates, one drifted; a short search.
DEMO = ("demo", "--trials", "2", "--held-out", "2000", "--drifted", "1000")
DEMO_TIMEOUT_S = 900
# Chain records of one demo: 3,001 requests and their answers, 1,000 outcomes, 6 reviews.
EXPECTED_RECORDS = 2 * 3001 + 1000 + 6


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One PAYBAND_HOME for the module; its PostgreSQL cluster is removed at the end."""
    root = tmp_path_factory.mktemp("payband-home")
    try:
        yield root
    finally:
        LocalPostgres(root).remove()


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYBAND_")}
    return {**env, "PAYBAND_HOME": str(home), **extra}


def payband(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PAYBAND, *args],
        capture_output=True,
        text=True,
        check=False,
        env=environment(home, **extra),
        timeout=DEMO_TIMEOUT_S,
    )


def value(output: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)}: (.*)$", output, re.MULTILINE)
    assert found, f"no {label!r} line in:\n{output}"
    return found.group(1)


def count(text: str, label: str) -> int:
    return int(re.search(rf"{label}: (\d+)", text).group(1))


@pytest.fixture(scope="module")
def first_demo(home: Path) -> subprocess.CompletedProcess[str]:
    result = payband(home, *DEMO)
    assert result.returncode == 0, result.stderr[-5000:] + result.stdout
    return result


def test_demo_prints_the_summary(first_demo: subprocess.CompletedProcess[str]) -> None:
    out = first_demo.stdout
    assert value(out, "data version").startswith("local://features/adult@")
    assert re.match(r"salary-band version 1 \(trained, 2 Optuna trials\)", value(out, "model"))
    assert float(re.search(r"roc_auc (\d\.\d+)", value(out, "test metrics")).group(1)) > 0.80
    # Adult's labels fail the fairness gate; the mitigated model passes it on its own.
    assert value(out, "gates") == "passed; promoted to champion"
    assert "champion: by recorded override" not in out
    # The fairness table: selection rates by group, disparate impact by attribute.
    assert re.search(r"sex\s.*female\s.*\d\.\d{3}", out)
    assert re.search(r"race\s.*disparate impact\s.*\d\.\d{3}", out)
    # Before and after mitigation, with the search's size and the intervals.
    assert re.search(r"Bias mitigation on the held-out test set \(2 trials searched, \d+ on", out)
    before, after = re.search(
        r"disparate impact by sex\s+│?\s*(\d\.\d{3})\s+│?\s*(\d\.\d{3}) \[", out
    ).groups()
    assert float(before) < 0.5 < 0.8 <= float(after)
    assert value(out, "requests answered") == "3000, 1 refused with 422 as invalid"
    assert value(out, "outcomes recorded") == "1000; reviews recorded: 6"
    written = value(out, "audit records written")
    assert written.startswith(f"{EXPECTED_RECORDS} (expected {EXPECTED_RECORDS}:")
    assert value(out, "audit chain").startswith("verified (ok ")
    assert value(out, "monitoring").startswith("3000 predictions in 3 chunks of 1000, 1000 with")
    # Exactly the shifted features drift, in the drifted chunk (2) only.
    assert (
        value(out, "drift found")
        == "age (chunks 2); education (chunks 2); hours_per_week (chunks 2)"
    )
    assert Path(value(out, "report")).is_file()
    assert "Traceback" not in first_demo.stderr


def test_the_database_password_is_never_shown(
    home: Path, first_demo: subprocess.CompletedProcess[str]
) -> None:
    password = (home / "postgres.password").read_text().strip()
    assert len(password) >= 20
    logs = [path.read_text(errors="replace") for path in (home / "logs").glob("*.log")]
    for text in (first_demo.stdout, first_demo.stderr, *logs):
        assert password not in text


@pytest.fixture
def cluster(home: Path, first_demo: subprocess.CompletedProcess[str]) -> Iterator[LocalPostgres]:
    """The demo's cluster, started again to look into the stores (the demo stopped it)."""
    postgres = LocalPostgres(home)
    assert not postgres.running, "the demo left PostgreSQL running"
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.stop()


def test_the_audit_log_holds_every_request_and_its_chain_verifies(
    cluster: LocalPostgres, first_demo: subprocess.CompletedProcess[str]
) -> None:
    from payband_audit.db import connect
    from payband_audit.verify import verify_chain

    with connect(cluster.url("payband", driver=False)) as conn:
        verification = verify_chain(conn)
        counts = {
            table: conn.execute(f"SELECT count(*) FROM audit.{table}").fetchone()[0]  # noqa: S608
            for table in (
                "prediction_requests",
                "prediction_responses",
                "prediction_errors",
                "outcomes",
                "reviews",
            )
        }
    assert counts == {
        "prediction_requests": 3001,
        "prediction_responses": 3000,
        "prediction_errors": 1,
        "outcomes": 1000,
        "reviews": 6,
    }
    assert verification.ok
    assert verification.records == EXPECTED_RECORDS


def test_mlflow_has_the_run_and_the_champion(cluster: LocalPostgres) -> None:
    from mlflow import MlflowClient

    uri = cluster.url("mlflow")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("salary-band", "champion")
    assert str(champion.version) == "1"
    # Promoted by the gates, with no override of any kind.
    assert champion.tags["gate.decision"] == "promoted"
    assert not [tag for tag in champion.tags if tag.startswith("gate.override")]
    run = client.get_run(champion.run_id)
    metrics = run.data.metrics
    assert metrics["roc_auc"] >= 0.80
    assert metrics["sex_disparate_impact"] >= 0.80
    assert metrics["race_disparate_impact"] >= 0.80
    assert metrics["explanation_ms_per_1000"] <= 100
    assert metrics["search_chosen_feasible"] == 1.0
    assert (
        "the search's chosen trial met every gate on its validation folds"
        in (champion.tags["gate.reasons"])
    )
    assert run.data.params["mitigation"] != "none"
    assert run.data.tags["features_uri"].startswith("local://features/adult@")
    # Lineage: the code revision, the raw data and the snapshot as inputs, the card's digest.
    assert run.data.tags["mlflow.source.git.commit"]
    contexts = {
        entry.tags[0].value: entry.dataset.source
        for entry in run.inputs.dataset_inputs
        if entry.tags
    }
    assert {"raw", "features", "training", "testing"} <= set(contexts)
    assert run.data.tags["raw_uri"] in contexts["raw"]
    card = client.download_artifacts(champion.run_id, champion.tags["model_card.path"])
    text = Path(card).read_text(encoding="utf-8")
    assert text.startswith("# Model card: salary-band version 1")
    assert "## Bias examination and mitigation" in text
    assert hashlib.sha256(text.encode()).hexdigest() == champion.tags["model_card.sha256"]
    listed = {item.path for item in client.list_artifacts(champion.run_id, "search")}
    assert listed == {"search/trials.csv", "search/pareto.png"}


def test_the_versioned_store_has_the_commits(home: Path) -> None:
    from payband_data.settings import DataSettings
    from payband_data.store import open_store

    with open_store(DataSettings(store_dir=home / "store")) as store:
        datasets = {version.dataset for version in store.versions()}
    assert {"raw/adult", "features/adult", "splits/adult/train", "splits/adult/test"} <= datasets


def test_a_second_demo_reuses_data_and_model(
    home: Path, first_demo: subprocess.CompletedProcess[str]
) -> None:
    result = payband(home, *DEMO)
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    assert value(out, "data version").endswith("(reused)")
    assert value(out, "model").startswith("salary-band version 1 (reused)")
    assert value(out, "requests answered").startswith("3000,")
    # Monitoring now sees both streams of version 1: six chunks.
    assert value(out, "monitoring").startswith("6000 predictions in 6 chunks")
    assert value(out, "audit chain").startswith("verified")


@contextmanager
def launched(home: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``payband *args`` running in the background; killed at the end if still running."""
    process = subprocess.Popen(
        [PAYBAND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(home),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        assert process.poll() is None, process.communicate()
        time.sleep(0.5)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def leftovers(home: Path) -> list[str]:
    """Processes started for this home (they inherit PAYBAND_HOME=<home>): command lines."""
    marker = f"PAYBAND_HOME={home}".encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            stat = (proc / "stat").read_text()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
        if marker in environ and not zombie:
            found.append(f"{proc.name}: {command}")
    return found


def wait_until_gone(home: Path, timeout: float = 30.0) -> list[str]:
    """What still runs for ``home`` after ``timeout`` (PDEATHSIG and shutdowns take a moment)."""
    deadline = time.monotonic() + timeout
    while (found := leftovers(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: it only waits for its parent to read its status.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_ctrl_c_stops_every_process_the_demo_started(
    home: Path, first_demo: subprocess.CompletedProcess[str]
) -> None:
    with launched(home, *DEMO) as process:
        state = _wait_for(home / "stack.json", process, timeout=300)
        pids = [service["pid"] for service in state["services"]]
        assert {service["name"] for service in state["services"]} == {"mlserver", "gateway"}
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    assert all(_gone(pid) for pid in pids)
    assert leftovers(home) == []  # the services' children and PostgreSQL too
    assert not LocalPostgres(home).running
    assert not (home / "stack.json").exists()


def test_status_after_a_killed_launcher_and_the_next_one_adopts_postgres(
    home: Path, first_demo: subprocess.CompletedProcess[str]
) -> None:
    with launched(home, *DEMO) as process:
        _wait_for(home / "stack.json", process, timeout=300)
        process.kill()  # SIGKILL: no cleanup runs in the launcher
        process.communicate(timeout=30)
    # The services die with their parent; the cluster is meant to outlive it.
    assert [line for line in wait_until_gone(home) if "postgres" not in line] == []
    status = payband(home, "status")
    assert status.returncode == 1
    text = " ".join(status.stdout.split())
    assert "nothing runs" in text
    assert "PostgreSQL is still running" in text
    assert not (home / "stack.json").exists()  # the stale state is cleared
    # The next launcher adopts the cluster and stops it when done. Without mitigation one
    # trial cannot pass the fairness gate on Adult, and no override was allowed.
    refused = payband(
        home,
        *DEMO,
        "--retrain",
        "--trials",
        "1",
        "--no-override-gates",
        PAYBAND_TRAINING_MITIGATION="none",
    )
    assert refused.returncode == 2
    assert "adopted the running cluster" in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "disparate impact" in errors[0]
    assert "--no-override-gates" in errors[0]
    assert wait_until_gone(home) == []
    assert not LocalPostgres(home).running


def test_a_service_that_cannot_start_is_one_error_and_stops_the_rest(
    home: Path, first_demo: subprocess.CompletedProcess[str]
) -> None:
    # The gateway refuses this setting at start; MLServer is already up by then.
    result = payband(home, *DEMO, PAYBAND_GATEWAY_MAX_BODY_BYTES="1")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "gateway" in errors[0]
    assert "mlserver: ready" in result.stderr  # it was up, and was stopped:
    assert wait_until_gone(home) == []
    assert not LocalPostgres(home).running
    assert "Traceback" not in result.stderr


def test_up_runs_the_stack_and_status_reports_it(
    home: Path, first_demo: subprocess.CompletedProcess[str]
) -> None:
    with launched(home, "up", "--monitoring-interval-s", "5") as process:
        state = _wait_for(home / "stack.json", process, timeout=400)
        services = {service["name"]: service for service in state["services"]}
        assert set(services) == {"mlserver", "gateway", "monitoring", "mlflow", "dagster"}
        status = payband(home, "status")
        assert status.returncode == 0, status.stdout
        password = (home / "postgres.password").read_text().strip()
        assert password not in status.stdout
        assert password not in (home / "stack.json").read_text()
        assert all(password not in line for line in leftovers(home))
        for name in services:
            assert re.search(rf"{name}\s.*running\s.*ok", status.stdout), status.stdout
        keys = json.loads((home / "api-keys.local.json").read_text())
        key = next(entry["key"] for entry in keys if entry["role"] == "predict")
        gateway = services["gateway"]["url"]
        answer = httpx.post(
            f"{gateway}/v1/predictions",
            json={"candidate": _candidate()},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == {"name": "salary-band", "version": "1"}
        _served_fairness_lies_in_the_registered_interval(home, gateway, key)
        assert answers_ok(f"{services['mlflow']['url']}/health")
        dagster = httpx.post(
            f"{services['dagster']['url']}/graphql",
            json={"query": LOCATIONS_QUERY},
            timeout=30,
        ).json()
        locations = {
            entry["name"] for entry in dagster["data"]["workspaceOrError"]["locationEntries"]
        }
        assert locations == {"data", "training", "serving"}
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert key in stdout  # the local keys are printed for use
    assert all(_gone(service["pid"]) for service in services.values())
    assert wait_until_gone(home) == []  # Dagster's code servers, MLflow's workers, PostgreSQL
    after = payband(home, "status")
    assert after.returncode == 1
    assert "nothing runs" in after.stdout


def _served_fairness_lies_in_the_registered_interval(home: Path, gateway: str, key: str) -> None:
    """The whole held-out split through the gateway: the disparate impact of its answers is
    the registered one, inside the registered bootstrap interval."""
    from mlflow import MlflowClient

    from payband_data.settings import DataSettings
    from payband_training.features import read_features
    from payband_training.split import TEST_FILE

    uri = LocalPostgres(home).url("mlflow")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(client.get_model_version_by_alias("salary-band", "champion").run_id)
    test = read_features(
        run.data.tags["test_uri"], DataSettings(store_dir=home / "store"), file_name=TEST_FILE
    ).frame
    features = list(_candidate())
    rows = test[features].astype(object).to_dict("records")
    bands: list[int] = []
    for start in range(0, len(rows), 1000):
        batch = [
            {k: (v if isinstance(v, str) else int(v)) for k, v in row.items()}
            for row in rows[start : start + 1000]
        ]
        answer = httpx.post(
            f"{gateway}/v1/predictions/batch",
            json={"candidates": batch},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text[:500]
        bands += [p["band"]["index"] for p in answer.json()["predictions"]]
    metrics = run.data.metrics
    minimum = int(run.data.params["min_group_rows"])
    for attribute in ("sex", "race"):
        served = (
            test.assign(selected=[band >= 1 for band in bands])
            .groupby(test[attribute].astype(str), observed=True)["selected"]
            .agg(["mean", "size"])
        )
        rates = served.loc[served["size"] >= minimum, "mean"]
        impact = rates.min() / rates.max()
        assert impact == pytest.approx(metrics[f"{attribute}_disparate_impact"], abs=1e-9)
        low = metrics[f"{attribute}_disparate_impact_ci_low"]
        high = metrics[f"{attribute}_disparate_impact_ci_high"]
        assert low <= impact <= high


LOCATIONS_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"


def _candidate() -> dict[str, object]:
    from payband_contracts.candidate import EXAMPLE_CANDIDATE

    return dict(EXAMPLE_CANDIDATE)


def test_fresh_removes_only_what_payband_made(tmp_path: Path) -> None:
    from payband.home import Home

    home = Home(tmp_path)
    home.prepare()
    (home.store / "raw").mkdir(parents=True)
    home.keys.write_text("[]")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "projects").mkdir()
    home.clear()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "projects"]


def test_one_launcher_per_home(tmp_path: Path) -> None:
    from payband.home import Home
    from payband.lifecycle import LifecycleError
    from payband.stack import launcher, lock_home

    home = Home(tmp_path)
    assert launcher(home) is None
    with lock_home(home, "up"):
        holder = launcher(home)
        assert holder == f"payband up (pid {os.getpid()})"
        refused = pytest.raises(LifecycleError, match=re.escape(f"{holder} is using {tmp_path}"))
        with refused, lock_home(home, "demo"):
            pass
    assert launcher(home) is None
    with lock_home(home, "demo"):  # free again
        assert launcher(home) == f"payband demo (pid {os.getpid()})"
