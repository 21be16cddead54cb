"""The gateway's Prometheus metrics, in a registry of its own (one per application)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from payband_contracts import ModelRef

__all__ = ["AUDIT_FAILURE_REASONS", "AUDIT_KINDS", "GatewayMetrics"]

# Latency buckets from 1 ms to 10 s: predictions take milliseconds, batches up to seconds.
# The kinds of audit record the gateway writes, and why a write can fail: the log is down
# (unavailable), it refused the record (rejected), or the record exists already (conflict: a
# caller's second outcome, answered 409).
AUDIT_KINDS = ("prediction", "error", "outcome", "review")
AUDIT_FAILURE_REASONS = ("unavailable", "rejected", "conflict")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Every metric ``/metrics`` exports; the names are what dashboards and alerts use."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "payband_gateway_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "payband_gateway_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status code.",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "payband_gateway_predictions",
            "Predictions answered (each candidate of a batch counts), by model and band.",
            ["model", "version", "band"],
            registry=r,
        )
        self.audit_write_duration = Histogram(
            "payband_gateway_audit_write_duration_seconds",
            "Time until an audit record was committed, by kind of record.",
            ["kind"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.audit_write_failures = Counter(
            "payband_gateway_audit_write_failures",
            "Audit records that could not be committed, by kind and reason.",
            ["kind", "reason"],
            registry=r,
        )
        # Exported at 0 from the start, so that Prometheus' increase() sees the first failure
        # (a series that appears with it has no earlier sample to increase from).
        for kind in AUDIT_KINDS:
            for reason in AUDIT_FAILURE_REASONS:
                self.audit_write_failures.labels(kind=kind, reason=reason)
        self.audit_available = Gauge(
            "payband_gateway_audit_available",
            "1 while the audit log accepts writes, else 0.",
            registry=r,
        )
        self.upstream_duration = Histogram(
            "payband_gateway_upstream_duration_seconds",
            "Time of calls to the inference server, by stage and outcome.",
            ["stage", "outcome"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.model = Gauge(
            "payband_gateway_model_info",
            "1 for the model version the inference server last reported.",
            ["model", "version"],
            registry=r,
        )

    def set_model(self, ref: ModelRef) -> None:
        self.model.clear()
        self.model.labels(model=ref.name, version=ref.version).set(1)
