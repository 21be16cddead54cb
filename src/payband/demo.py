"""`payband demo`: the whole lifecycle once, on embedded defaults, then everything stopped.

ingest Adult -> dbt features -> train (Optuna) -> register and promote -> MLServer and the
gateway -> a stream of candidates over HTTP (held-out, then drifted), outcomes and reviews ->
monitoring -> the audit chain verified -> a summary.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from payband.home import Home, apply
from payband.lifecycle import (
    DataVersions,
    LifecycleError,
    ModelState,
    guarded,
    migrate_stores,
    prepare_data,
    prepare_model,
    progress_bar,
    quiet_libraries,
)
from payband.localkeys import ensure_keys
from payband.options import CHUNK_SIZE, DemoOptions
from payband.services import Stack, choose_ports, gateway_service, mlserver_service
from payband.stack import local_postgres, lock_home
from payband.stream import StreamError, StreamResult, drifted, held_out, send_stream

__all__ = ["DemoOptions", "run_demo"]

FAIRNESS_ATTRIBUTES = ("sex", "race")


@dataclass(frozen=True)
class AuditCheck:
    records_before: int
    records_after: int
    verified: str
    ok: bool

    @property
    def written(self) -> int:
        return self.records_after - self.records_before


def _verify_chain() -> Any:
    from payband_audit.db import connect, require_migrated
    from payband_audit.settings import AuditSettings
    from payband_audit.verify import verify_chain

    with connect(AuditSettings().database_url) as conn:
        require_migrated(conn)
        return verify_chain(conn)


def _stream(
    console: Console, stack: Stack, model: ModelState, keys: dict[str, Any], options: DemoOptions
) -> Any:
    from payband_data.settings import DataSettings
    from payband_training.features import read_features
    from payband_training.split import TEST_FILE

    test = guarded(
        "reading the held-out split",
        lambda: read_features(model.test_uri, DataSettings(), file_name=TEST_FILE).frame,
    )
    candidates = held_out(test, options.held_out, options.seed) + drifted(
        test, options.drifted, options.seed
    )
    gateway = next(service for service, _ in stack.running if service.name == "gateway")
    with progress_bar(console) as bar:
        task = bar.add_task("candidates sent to the gateway", total=len(candidates))
        try:
            return send_stream(
                gateway.url,
                candidates,
                {"predict": keys["local-hr-tool"].key, "review": keys["local-reviewer"].key},
                tick=lambda: bar.advance(task),
            )
        except StreamError as error:
            raise LifecycleError(f"stream: {error}") from None
        except httpx.HTTPError as error:
            raise LifecycleError(
                f"stream: the gateway at {gateway.url} failed: {type(error).__name__}: {error}"
            ) from None


def _monitor(console: Console) -> Any:
    from payband_audit.settings import AuditSettings
    from payband_monitoring.errors import MonitoringError
    from payband_monitoring.runner import Monitor
    from payband_monitoring.settings import MonitoringSettings

    settings = MonitoringSettings(chunk_size=CHUNK_SIZE)
    with console.status("NannyML: drift, estimated and realized performance, fairness"):
        try:
            analysis = Monitor(settings, AuditSettings()).run()
        except MonitoringError as error:
            raise LifecycleError(f"monitoring: {error}") from None
    return analysis, settings.report_path


def run_demo(options: DemoOptions, out: Console, err: Console) -> int:
    """Run the lifecycle; print the summary to ``out``; 0 when the audit chain verifies."""
    started = time.monotonic()
    home = Home()
    quiet_libraries()
    with lock_home(home, "demo"):
        postgres = local_postgres(home, err, fresh=options.fresh)
        with postgres:
            apply(home.environment(postgres.databases))
            data = prepare_data(err, rebuild=options.fresh)
            model = prepare_model(
                err,
                data.features_uri,
                trials=options.trials,
                timeout_s=options.timeout_s,
                retrain=options.retrain,
                override_gates=options.override_gates,
            )
            guarded("migrations", migrate_stores)
            before = guarded("audit log", _verify_chain)
            keys = ensure_keys(home)
            ports = choose_ports(preferred=False, avoid=frozenset({postgres.port}))
            apply(home.service_environment(ports))
            with Stack(home, dict(os.environ)) as stack:
                model_uri = f"models:/{model.name}/{model.version}"
                for service in (mlserver_service(ports, model_uri), gateway_service(ports)):
                    with err.status(f"starting {service.name} on {service.url}"):
                        stack.start(service)
                    err.print(f"{service.name}: ready on {service.url}")
                home.write_state(
                    {
                        "command": "demo",
                        "pid": os.getpid(),
                        "postgres": {"url": postgres.shown_url},
                        "model": f"{model.name} version {model.version}",
                        "services": stack.describe(),
                    }
                )
                try:
                    sent = _stream(err, stack, model, keys, options)
                finally:
                    home.remove_state()
                    err.print(f"stopped: {', '.join(stack.stop())}")
            analysis, report = _monitor(err)
            after = guarded("audit log", _verify_chain)
            audit = AuditCheck(before.records, after.records, str(after), after.ok)
    _summary(out, data, model, sent, audit, analysis, report, time.monotonic() - started)
    return 0 if audit.ok and audit.written == _expected_records(sent) else 1


def _expected_records(sent: StreamResult) -> int:
    """Chain records the stream must have written: each request and its answer (a prediction
    or an error) are one record each, outcomes and reviews one each."""
    return 2 * (sent.answered + sent.rejected) + sent.outcomes + sent.reviews


def _fairness_table(model: ModelState) -> Table:
    table = Table(title="Fairness on the held-out test set (selection = band >50K)")
    for column in ("attribute", "group", "rows", "selection rate"):
        table.add_column(column, justify="left" if column in ("attribute", "group") else "right")
    for attribute in FAIRNESS_ATTRIBUTES:
        prefix = f"{attribute}_group_"
        groups = sorted(
            {
                name[len(prefix) : -len("_count")]
                for name in model.metrics
                if name.startswith(prefix) and name.endswith("_count")
            }
        )
        for group in groups:
            count = model.metrics.get(f"{prefix}{group}_count", 0)
            rate = model.metrics.get(f"{prefix}{group}_selection_rate", float("nan"))
            table.add_row(attribute, group, f"{count:,.0f}", f"{rate:.3f}")
        impact = model.metrics.get(f"{attribute}_disparate_impact", float("nan"))
        table.add_row(attribute, "disparate impact", "", f"{impact:.3f}", end_section=True)
    return table


def _bias_table(model: ModelState) -> Table:
    """Before (the best trial without mitigation) and after (the champion), on the test set."""
    from payband_training.tracking import UNMITIGATED_PREFIX

    front = model.metrics.get("search_front_size")
    trials = model.metrics.get("search_complete")
    title = "Bias mitigation on the held-out test set"
    if front is not None and trials is not None:
        title += f" ({trials:.0f} trials searched, {front:.0f} on the Pareto front)"
    table = Table(title=title)
    for column in ("measure", "before (no mitigation)", "after (champion)"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    names = [
        ("ROC AUC", "roc_auc"),
        ("accuracy", "accuracy"),
        ("balanced accuracy", "balanced_accuracy"),
        *(
            (f"disparate impact by {attribute}", f"{attribute}_disparate_impact")
            for attribute in FAIRNESS_ATTRIBUTES
        ),
        *(
            (
                f"equal-opportunity difference by {attribute}",
                f"{attribute}_equal_opportunity_difference",
            )
            for attribute in FAIRNESS_ATTRIBUTES
        ),
    ]
    for label, name in names:
        table.add_row(
            label,
            _shown(model.metrics, f"{UNMITIGATED_PREFIX}{name}"),
            _shown(model.metrics, name, interval=name.endswith("_disparate_impact")),
        )
    return table


def _shown(metrics: dict[str, float], name: str, *, interval: bool = False) -> str:
    if name not in metrics:
        return "n/a"
    shown = f"{metrics[name]:.3f}"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if interval and low is not None and high is not None:
        shown += f" [{low:.3f}, {high:.3f}]"
    return shown


def _drift(analysis: Any) -> dict[str, list[int]]:
    """Feature -> the chunks in which univariate drift alerted."""
    found: dict[str, set[int]] = defaultdict(set)
    for row in analysis.results:
        if row.calculator == "univariate_drift" and row.alert:
            found[row.subject].add(row.chunk_index)
    return {feature: sorted(chunks) for feature, chunks in sorted(found.items())}


def _summary(
    out: Console,
    data: DataVersions,
    model: ModelState,
    sent: StreamResult,
    audit: AuditCheck,
    analysis: Any,
    report: Any,
    elapsed_s: float,
) -> None:
    line = out.print
    minutes, seconds = divmod(round(elapsed_s), 60)
    line()
    line(f"[bold]payband demo: done in {minutes} min {seconds:02d} s[/bold]")
    reused = " (reused)" if data.reused else ""
    line(f"data version: {data.features_uri}{reused}", soft_wrap=True)
    line(f"raw version: {data.raw_uri}", soft_wrap=True)
    how = "reused" if model.reused else f"trained, {model.trials} Optuna trials"
    line(f"model: {model.name} version {model.version} ({how}), MLflow run {model.run_id}")
    metrics = ", ".join(
        f"{name} {model.metrics[name]:.3f}"
        for name in ("roc_auc", "accuracy", "balanced_accuracy", "macro_f1")
        if name in model.metrics
    )
    line(f"test metrics: {metrics}")
    if model.gate_passed:
        line("gates: passed; promoted to champion")
    else:
        line(f"gates: rejected ({'; '.join(model.gate_reasons)})", soft_wrap=True)
        if model.overridden:
            line(
                "champion: by recorded override (tags gate.override_*; see the model card); "
                "the gates were not lowered"
            )
    line(_fairness_table(model))
    line(_bias_table(model))
    refused = f", {sent.rejected} refused with 422 as invalid" if sent.rejected else ""
    line(f"requests answered: {sent.answered}{refused}")
    line(f"outcomes recorded: {sent.outcomes}; reviews recorded: {sent.reviews}")
    line(
        f"audit records written: {audit.written} (expected {_expected_records(sent)}: each "
        "request and its answer, each outcome and review); "
        f"audit log total: {audit.records_after}"
    )
    line(f"audit chain: {'verified' if audit.ok else 'BROKEN'} ({audit.verified})")
    waiting = (
        f"; {analysis.rows_pending} more wait for a full chunk" if analysis.rows_pending else ""
    )
    line(
        f"monitoring: {analysis.rows_analysed} predictions in {analysis.chunks} chunks of "
        f"{CHUNK_SIZE}, {analysis.rows_with_outcome} with an outcome{waiting} (every answered "
        f"prediction of version {analysis.model_version} so far, earlier demos included)"
    )
    drift = _drift(analysis)
    if drift:
        shown = "; ".join(
            f"{feature} (chunks {', '.join(map(str, chunks))})" for feature, chunks in drift.items()
        )
        line(f"drift found: {shown}", soft_wrap=True)
    else:
        line("drift found: none")
    fairness_alerts = sorted(
        {row.subject for row in analysis.results if row.calculator == "fairness" and row.alert}
    )
    line(f"fairness alerts: {', '.join(fairness_alerts) or 'none'}")
    line(f"report: {report}", soft_wrap=True)
    line(f"logs: {Home().logs}", soft_wrap=True)
    line(
        "explore: `uv run payband up` keeps the stack running (Dagster UI, MLflow UI, gateway "
        "docs, MLServer, monitoring) and prints its URLs and local API keys",
        soft_wrap=True,
    )
