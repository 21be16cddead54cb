"""Prometheus metrics of the latest run: drift, performance, fairness, rows and run times.

Model-health gauges hold the latest chunk of each calculator and are labelled with the
model name and version; they appear after the first successful run and are replaced by
every later one (a feature that is no longer measured disappears with its series).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from payband_monitoring.analysis import (
    DISPARATE_IMPACT,
    ESTIMATED,
    FAIRNESS,
    MULTIVARIATE,
    REALIZED,
    SELECTION_RATE,
    UNIVARIATE,
    Analysis,
    ResultRow,
)

__all__ = ["MonitoringMetrics"]

PREFIX = "payband_monitoring_"
MODEL = ["model", "version"]


def _family(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=MODEL + labels)


class _LatestRun(Collector):
    """Gauges built from the latest analysis at each scrape."""

    def __init__(self) -> None:
        self._analysis: Analysis | None = None
        self._lock = threading.Lock()

    def update(self, analysis: Analysis) -> None:
        with self._lock:
            self._analysis = analysis

    def describe(self) -> Iterable[Metric]:
        # Declared so that every family is exported (with HELP and TYPE) before the first run.
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            analysis = self._analysis
        return list(self._families(analysis))

    def _families(self, analysis: Analysis | None) -> Iterator[Metric]:
        info = _family("model_info", "The model version the latest run analysed (1).", [])
        rows = _family("rows_analysed", "Records in the analysed chunks of the latest run.", [])
        pending = _family(
            "rows_pending",
            "Records not analysed: an incomplete last chunk, or periods with too few records.",
            [],
        )
        outcomes = _family("rows_with_outcome", "Records with a recorded outcome (true band).", [])
        drift = _family(
            "univariate_drift", "Drift of a feature in the latest chunk.", ["feature", "method"]
        )
        drift_alert = _family(
            "univariate_drift_alert",
            "1 when the feature's drift exceeds its threshold.",
            ["feature", "method"],
        )
        multivariate = _family(
            "multivariate_drift_reconstruction_error",
            "Data reconstruction error (PCA) of the latest chunk.",
            [],
        )
        multivariate_alert = _family(
            "multivariate_drift_alert", "1 when the reconstruction error exceeds its threshold.", []
        )
        estimated = _family(
            "estimated_performance", "CBPE estimate of the latest chunk.", ["metric"]
        )
        estimated_alert = _family(
            "estimated_performance_alert", "1 when the estimate is below its threshold.", ["metric"]
        )
        realized = _family(
            "realized_performance",
            "Performance on the recorded outcomes of the latest chunk that has any.",
            ["metric"],
        )
        realized_alert = _family(
            "realized_performance_alert", "1 when it is below its threshold.", ["metric"]
        )
        selection = _family(
            "selection_rate",
            "Share of a group's records predicted in the favourable band (latest chunk).",
            ["attribute", "group"],
        )
        impact = _family(
            "disparate_impact",
            "Lowest over highest selection rate among the groups (latest chunk).",
            ["attribute"],
        )
        fairness_alert = _family(
            "fairness_alert", "1 when disparate impact is below the minimum.", ["attribute"]
        )
        if analysis is not None:
            model = [analysis.model_name, analysis.model_version]
            info.add_metric(model, 1)
            rows.add_metric(model, analysis.rows_analysed)
            pending.add_metric(model, analysis.rows_pending)
            outcomes.add_metric(model, analysis.rows_with_outcome)
            for row in analysis.latest(UNIVARIATE):
                _add(drift, drift_alert, [*model, row.subject, row.method], row)
            for row in analysis.latest(MULTIVARIATE):
                _add(multivariate, multivariate_alert, model, row)
            for row in analysis.latest(ESTIMATED):
                _add(estimated, estimated_alert, [*model, row.subject], row)
            for row in analysis.latest(REALIZED):
                _add(realized, realized_alert, [*model, row.subject], row)
            for row in analysis.latest(FAIRNESS):
                if row.method == SELECTION_RATE:
                    attribute, group = row.subject.split("=", 1)
                    selection.add_metric([*model, attribute, group], row.value)
                elif row.method == DISPARATE_IMPACT:
                    _add(impact, fairness_alert, [*model, row.subject], row)
        yield from (info, rows, pending, outcomes, drift, drift_alert, multivariate)
        yield from (multivariate_alert, estimated, estimated_alert, realized, realized_alert)
        yield from (selection, impact, fairness_alert)


def _add(value: GaugeMetricFamily, alert: GaugeMetricFamily, labels: list[str], row: ResultRow):
    value.add_metric(labels, row.value)
    alert.add_metric(labels, 1.0 if row.alert else 0.0)


class MonitoringMetrics:
    """The service's registry: run bookkeeping plus the latest run's results."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            PREFIX + "runs", "Monitoring runs by outcome.", ["outcome"], registry=self.registry
        )
        for outcome in ("success", "failure"):
            self.runs.labels(outcome)
        self.last_run = Gauge(
            PREFIX + "last_run_timestamp_seconds",
            "When the latest run ended, successful or not (Unix time).",
            registry=self.registry,
        )
        self.last_success = Gauge(
            PREFIX + "last_success_timestamp_seconds",
            "When the latest successful run ended (Unix time; 0 before the first).",
            registry=self.registry,
        )
        self.duration = Gauge(
            PREFIX + "run_duration_seconds",
            "How long the latest run took.",
            registry=self.registry,
        )
        self._latest = _LatestRun()
        self.registry.register(self._latest)

    def succeeded(self, analysis: Analysis, ended_at: float, seconds: float) -> None:
        self._latest.update(analysis)
        self.runs.labels("success").inc()
        self.last_run.set(ended_at)
        self.last_success.set(ended_at)
        self.duration.set(seconds)

    def failed(self, ended_at: float, seconds: float) -> None:
        self.runs.labels("failure").inc()
        self.last_run.set(ended_at)
        self.duration.set(seconds)
