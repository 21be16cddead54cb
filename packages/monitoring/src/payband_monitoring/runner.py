"""One monitoring run: model and reference from MLflow, records from the audit log,
analysis, results stored, report written."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from nannyml.exceptions import NannyMLException

from payband_audit import AuditConfigError, AuditSettings, AuditUnavailable
from payband_audit.reader import AuditReader
from payband_contracts.errors import first_line
from payband_monitoring.analysis import Analysis, analyse
from payband_monitoring.errors import MonitoringConfigError, MonitoringError, MonitoringUnavailable
from payband_monitoring.reference import WatchedModel, load_reference, resolve_model
from payband_monitoring.report import write_report
from payband_monitoring.settings import MonitoringSettings
from payband_monitoring.store import ResultStore

__all__ = ["Monitor"]

logger = logging.getLogger("payband_monitoring")


class Monitor:
    """Runs analyses; keeps the watched model between runs until the alias moves."""

    def __init__(
        self, settings: MonitoringSettings, audit_settings: AuditSettings | None = None
    ) -> None:
        self.settings = settings
        self.audit_settings = audit_settings or AuditSettings()
        self.store = ResultStore(settings.database_url)
        self._model: WatchedModel | None = None

    def model(self) -> WatchedModel:
        """The model to watch; downloaded again only when another version is named."""
        name, version, run_id = resolve_model(self.settings)
        if self._model is None or (self._model.name, self._model.version) != (name, version):
            self._model = load_reference(self.settings, name, version, run_id)
        return self._model

    def analyse(self) -> Analysis:
        """Analyse every answered prediction of the watched version (nothing is stored)."""
        model = self.model()
        try:
            with AuditReader(
                settings=self.audit_settings, role=self.settings.audit_reader_role
            ) as reader:
                records = reader.dataframe(model_name=model.name, model_version=model.version)
        except AuditUnavailable as error:
            raise MonitoringUnavailable(str(error)) from None
        except AuditConfigError as error:
            raise MonitoringConfigError(str(error)) from None
        try:
            return analyse(model, records, self.settings, str(uuid.uuid4()))
        except NannyMLException as error:
            raise MonitoringError(
                f"NannyML could not analyse the records: {first_line(error)}"
            ) from None
        except (ValueError, KeyError, TypeError) as error:
            # Data that does not fit the reference format or the catalogue.
            reason = first_line(error)
            raise MonitoringConfigError(f"cannot analyse the records: {reason}") from None

    def run(self) -> Analysis:
        """Analyse, store the results and write the report to the state directory."""
        self.store.check()
        started = datetime.now(UTC)
        analysis = self.analyse()
        self.store.save(analysis, started, datetime.now(UTC))
        write_report(analysis, self.settings, self.settings.report_path)
        logger.info(
            "monitoring run done",
            extra={
                "fields": {
                    "run_id": analysis.run_id,
                    "model": analysis.model_name,
                    "version": analysis.model_version,
                    "rows_analysed": analysis.rows_analysed,
                    "rows_with_outcome": analysis.rows_with_outcome,
                    "chunks": analysis.chunks,
                    "alerts": len(analysis.alerts()),
                }
            },
        )
        return analysis
