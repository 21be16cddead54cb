"""The monitoring run as a Dagster code location (module `payband_monitoring.definitions`).

  salary_band_monitoring   one monitoring run, exactly as `payband-monitoring run` does it: the
                           watched version's audit records analysed (NannyML drift and
                           performance, fairness), the results stored in the `monitoring`
                           schema, the HTML report written to the state directory

The job `monitor_salary_band` materialises it; the schedule `monitor_salary_band_hourly` runs
the job every hour once an operator starts it (it is created stopped). Settings are
PAYBAND_MONITORING_* and PAYBAND_AUDIT_*, read at each run as the command reads them; the
`monitoring` resource can name a model version per run (the command's --model-version).
"""

# No `from __future__ import annotations`: Dagster reads the annotations of asset functions.

import logging
import os
from typing import Any

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DefaultScheduleStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    asset,
    define_asset_job,
    definitions,
)
from pydantic import Field

from payband_audit import AuditSettings
from payband_contracts.errors import first_line
from payband_monitoring.analysis import Analysis
from payband_monitoring.errors import MonitoringError
from payband_monitoring.report import pending, summary_lines
from payband_monitoring.runner import Monitor
from payband_monitoring.settings import MonitoringSettings, load_audit_settings, load_settings

# Nothing phones home: dagster reads this before uploading usage statistics.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

logger = logging.getLogger("payband_monitoring")

GROUP = "monitoring"
ASSET = "salary_band_monitoring"
JOB = "monitor_salary_band"
SCHEDULE = "monitor_salary_band_hourly"
HOURLY = "0 * * * *"


class MonitoringRun(ConfigurableResource):
    """What one run overrides, as the command's option does (empty: PAYBAND_MONITORING_*)."""

    model_version: str = Field(
        default="",
        description="Analyse this registry version, not the champion's; "
        "empty: PAYBAND_MONITORING_MODEL_VERSION, else the champion alias's version",
    )

    def settings(self, base: MonitoringSettings | None = None) -> MonitoringSettings:
        """``base`` (None: read from the environment now) with this run's override."""
        override = self.model_version.strip() or None
        if base is None:
            return load_settings(model_version=override)
        return base.model_copy(update={"model_version": override}) if override else base


def _readable(error: OSError) -> str:
    """An OSError in one line, as the command prints it."""
    if error.filename:
        return f"{error.strerror or error}: {error.filename}"
    return str(error)


def _metadata(analysis: Analysis, settings: MonitoringSettings) -> dict[str, Any]:
    alerts = analysis.alerts()
    listed = "\n".join(
        f"- {row.calculator}: {row.subject}{f' {row.method}' if row.method else ''} "
        f"= {row.value:.4g}"
        for row in alerts
    )
    return {
        "model": analysis.model_name,
        "model_version": analysis.model_version,
        "monitoring_run_id": MetadataValue.text(analysis.run_id),
        "reference_run_id": MetadataValue.text(analysis.reference_run_id),
        "chunking": analysis.chunking,
        "rows_analysed": analysis.rows_analysed,
        "rows_pending": analysis.rows_pending,
        "rows_with_outcome": analysis.rows_with_outcome,
        "not_analysed": pending(analysis, settings),
        "chunks": analysis.chunks,
        # Alerts in the latest chunk of each calculator, as the report and the summary count.
        "alerts": len(alerts),
        **{f"{kind}_alerts": count for kind, count in analysis.alert_counts().items()},
        "alerts_latest_chunk": MetadataValue.md(listed or "none"),
        "report_path": MetadataValue.path(str(settings.report_path)),
    }


def build_definitions(
    settings: MonitoringSettings | None = None, audit_settings: AuditSettings | None = None
) -> Definitions:
    """The code location. Without ``settings`` (a deployment), every run reads
    PAYBAND_MONITORING_* and PAYBAND_AUDIT_* afresh, as `payband-monitoring run` does; tests
    pass their own."""

    @asset(
        name=ASSET,
        group_name=GROUP,
        description="One monitoring run as `payband-monitoring run` does it: drift, estimated "
        "and realized performance and fairness of the watched model version on the audit "
        "log's records, stored in the monitoring schema, with the HTML report.",
    )
    def salary_band_monitoring(
        context: AssetExecutionContext, monitoring: MonitoringRun
    ) -> MaterializeResult:
        try:
            run_settings = monitoring.settings(settings)
            run_audit_settings = audit_settings or load_audit_settings()
            analysis = Monitor(run_settings, run_audit_settings).run()
        except MonitoringError as error:
            # A Failure shows its description as the step's error, without a traceback.
            raise Failure(description=first_line(error)) from None
        except OSError as error:
            raise Failure(description=_readable(error)) from None
        except Exception as error:
            # As in the service: its message may quote SQL or data, so the step's error (kept
            # in the event log, shown in every view of the run) names its type only; the
            # traceback goes to the process's stderr, the step's captured log.
            logger.exception("monitoring run failed unexpectedly")
            raise Failure(
                description=f"the monitoring run failed unexpectedly ({type(error).__name__}); "
                "the traceback is in the step's stderr"
            ) from None
        for line in summary_lines(analysis, run_settings):
            context.log.info(line)
        context.log.info(f"report: {run_settings.report_path}")
        return MaterializeResult(metadata=_metadata(analysis, run_settings))

    job = define_asset_job(
        JOB,
        selection=[salary_band_monitoring],
        description="One monitoring run: analyse the audit log, store the results, "
        "write the report",
    )
    return Definitions(
        assets=[salary_band_monitoring],
        jobs=[job],
        schedules=[
            ScheduleDefinition(
                name=SCHEDULE,
                job=job,
                cron_schedule=HOURLY,
                execution_timezone="UTC",
                # Running it is an operator's decision: turned on in the UI or with
                # `dagster schedule start monitor_salary_band_hourly`.
                default_status=DefaultScheduleStatus.STOPPED,
                description="A monitoring run every hour, on the hour (UTC); created stopped",
            )
        ],
        resources={"monitoring": MonitoringRun()},
    )


@definitions
def defs() -> Definitions:
    """Loaded by Dagster when the code location starts, not when this module is imported."""
    return build_definitions()
