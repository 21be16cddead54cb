"""The canonical candidate: the one shape every source is mapped into and every service accepts."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from payband_contracts.base import ContractModel
from payband_contracts.catalogue import (
    AGE_RANGE,
    FEATURE_CATALOGUE,
    HOURS_PER_WEEK_RANGE,
    Birthplace,
    ClassOfWorker,
    Education,
    FeatureName,
    MaritalStatus,
    Occupation,
    Race,
    Sex,
)

FEATURE_ENUMS: dict[FeatureName, type[StrEnum]] = {
    FeatureName.SEX: Sex,
    FeatureName.RACE: Race,
    FeatureName.EDUCATION: Education,
    FeatureName.MARITAL_STATUS: MaritalStatus,
    FeatureName.CLASS_OF_WORKER: ClassOfWorker,
    FeatureName.OCCUPATION: Occupation,
    FeatureName.BIRTHPLACE: Birthplace,
}


def _described(name: FeatureName) -> dict[str, Any]:
    spec = FEATURE_CATALOGUE[name]
    return {"title": spec.label, "description": spec.description}


EXAMPLE_CANDIDATE: dict[str, Any] = {
    "age": 38,
    "sex": "female",
    "race": "white",
    "education": "bachelors_degree",
    "marital_status": "married",
    "class_of_worker": "private",
    "occupation": "professional_technical",
    "hours_per_week": 40,
    "birthplace": "united_states",
}


class Candidate(ContractModel):
    """A job candidate in the canonical, human-readable features of the feature catalogue.

    `sex` and `race` are protected attributes: they are recorded so that fairness can be
    measured; whether a model may use them as inputs is a training setting.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CANDIDATE]})

    age: Annotated[
        int, Field(ge=AGE_RANGE[0], le=AGE_RANGE[1], strict=True, **_described(FeatureName.AGE))
    ]
    sex: Annotated[Sex, Field(**_described(FeatureName.SEX))]
    race: Annotated[Race, Field(**_described(FeatureName.RACE))]
    education: Annotated[Education, Field(**_described(FeatureName.EDUCATION))]
    marital_status: Annotated[MaritalStatus, Field(**_described(FeatureName.MARITAL_STATUS))]
    class_of_worker: Annotated[ClassOfWorker, Field(**_described(FeatureName.CLASS_OF_WORKER))]
    occupation: Annotated[Occupation, Field(**_described(FeatureName.OCCUPATION))]
    hours_per_week: Annotated[
        int,
        Field(
            ge=HOURS_PER_WEEK_RANGE[0],
            le=HOURS_PER_WEEK_RANGE[1],
            strict=True,
            **_described(FeatureName.HOURS_PER_WEEK),
        ),
    ]
    birthplace: Annotated[Birthplace, Field(**_described(FeatureName.BIRTHPLACE))]

    def value_of(self, feature: FeatureName | str) -> str | int:
        """The plain value of one feature: the enum's value or the number."""
        value = getattr(self, FeatureName(feature).value)
        return value.value if isinstance(value, StrEnum) else value
