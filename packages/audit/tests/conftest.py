import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from payband_audit.migrate import upgrade
from payband_audit.writer import PredictionRequestRecord
from payband_contracts import EXAMPLE_CANDIDATE, Candidate, ModelRef, Prediction
from payband_contracts.messages import EXAMPLE_PREDICTION
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.plugin import unique_database_name
from payband_testing.templates import DatabaseTemplates

MakeRecord = Callable[..., tuple[PredictionRequestRecord, Prediction]]


def migrate_audit(info: PostgresConnectionInfo) -> None:
    upgrade(info.url)


@pytest.fixture
def audit_db(
    request: pytest.FixtureRequest, database_templates: DatabaseTemplates
) -> Iterator[PostgresConnectionInfo]:
    """A fresh database with the audit schema migrated to head (a copy of a template migrated
    once per session), dropped after the test."""
    with database_templates.copy("audit", migrate_audit, unique_database_name(request)) as info:
        yield info


@pytest.fixture
def make_record() -> MakeRecord:
    """A request and its prediction: make_record(at=..., version="3", age=...)."""

    def make(
        *, at: datetime | None = None, version: str = "3", age: int = 38
    ) -> tuple[PredictionRequestRecord, Prediction]:
        prediction_id = uuid.uuid4()
        at = at or datetime.now(UTC)
        model = ModelRef(name="salary-band", version=version)
        candidate = Candidate.model_validate({**EXAMPLE_CANDIDATE, "age": age})
        request = PredictionRequestRecord(
            prediction_id=prediction_id,
            received_at=at,
            caller="hr-tool",
            request_id=f"req-{prediction_id.hex[:8]}",
            candidate=candidate,
            model=model,
            raw_request='{"candidate": ' + candidate.model_dump_json() + "}",
        )
        prediction = Prediction.model_validate(
            {**EXAMPLE_PREDICTION, "id": prediction_id, "created_at": at, "model": model}
        )
        return request, prediction

    return make
