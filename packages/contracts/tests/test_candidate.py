from enum import StrEnum

import pytest
from pydantic import ValidationError

from payband_contracts import (
    EXAMPLE_CANDIDATE,
    FEATURE_CATALOGUE,
    FEATURE_ENUMS,
    Candidate,
    Education,
    FeatureName,
    PredictionRequest,
    validation_error_body,
)


def errors_of(model, data, **kwargs):
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, **kwargs)
    return validation_error_body(caught.value, model).errors


def test_example_candidate_is_valid_and_round_trips():
    candidate = Candidate.model_validate(EXAMPLE_CANDIDATE)
    assert candidate.model_dump(mode="json") == EXAMPLE_CANDIDATE
    assert Candidate.model_validate_json(candidate.model_dump_json()) == candidate
    assert candidate.value_of("education") == "bachelors_degree"
    assert candidate.value_of(FeatureName.AGE) == 38


def test_candidate_has_exactly_the_catalogue_features():
    assert list(Candidate.model_fields) == [name.value for name in FEATURE_CATALOGUE.names]
    assert set(FEATURE_CATALOGUE.protected) == {FeatureName.SEX, FeatureName.RACE}


@pytest.mark.parametrize(("feature", "enum"), list(FEATURE_ENUMS.items()))
def test_catalogue_documents_every_enum_value_in_order(feature: FeatureName, enum: type[StrEnum]):
    spec = FEATURE_CATALOGUE[feature]
    assert spec.values == tuple(member.value for member in enum)
    for category in spec.categories or ():
        assert category.label
        assert category.description
        assert category.value == category.value.lower()
        assert " " not in category.value


def test_education_is_ordered():
    assert Education.BELOW_GRADE_5.rank == 0
    assert Education.HIGH_SCHOOL_GRADUATE.rank < Education.BACHELORS_DEGREE.rank
    assert Education.DOCTORATE.rank == len(Education) - 1
    assert FEATURE_CATALOGUE[FeatureName.EDUCATION].kind == "ordinal"


def test_unknown_field_is_rejected_and_named():
    errors = errors_of(Candidate, {**EXAMPLE_CANDIDATE, "salary_expectation": 90000})
    assert [(e.field, e.rule) for e in errors] == [
        ("salary_expectation", "unknown field: not allowed")
    ]


def test_unknown_field_in_request_envelope_is_rejected():
    errors = errors_of(PredictionRequest, {"candidate": EXAMPLE_CANDIDATE, "debug": True})
    assert [e.field for e in errors] == ["debug"]


@pytest.mark.parametrize("age", [16, 100, -1])
def test_age_out_of_range_names_the_field_and_range(age: int):
    errors = errors_of(PredictionRequest, {"candidate": {**EXAMPLE_CANDIDATE, "age": age}})
    assert len(errors) == 1
    assert errors[0].field == "candidate.age"
    assert errors[0].loc == ["candidate", "age"]
    assert errors[0].rule == "integer from 17 to 99"


@pytest.mark.parametrize("age", ["38", 38.5, True, None])
def test_age_must_be_an_integer(age: object):
    errors = errors_of(Candidate, {**EXAMPLE_CANDIDATE, "age": age})
    assert [(e.field, e.rule) for e in errors] == [("age", "integer")]


def test_hours_per_week_range():
    errors = errors_of(Candidate, {**EXAMPLE_CANDIDATE, "hours_per_week": 0})
    assert [(e.field, e.rule) for e in errors] == [("hours_per_week", "integer from 1 to 99")]


def test_unknown_enum_value_names_the_allowed_values():
    errors = errors_of(Candidate, {**EXAMPLE_CANDIDATE, "sex": "unknown"})
    assert [(e.field, e.rule) for e in errors] == [("sex", "one of: female, male")]
    errors = errors_of(Candidate, {**EXAMPLE_CANDIDATE, "education": "Bachelors"})
    assert errors[0].field == "education"
    assert errors[0].rule == FEATURE_CATALOGUE[FeatureName.EDUCATION].rule
    assert "bachelors_degree" in errors[0].rule


def test_missing_field_is_required():
    data = {k: v for k, v in EXAMPLE_CANDIDATE.items() if k != "occupation"}
    errors = errors_of(Candidate, data)
    assert [(e.field, e.rule) for e in errors] == [("occupation", "required")]


def test_every_error_is_reported_at_once():
    errors = errors_of(Candidate, {**EXAMPLE_CANDIDATE, "age": 5, "race": "x", "extra": 1})
    assert {e.field for e in errors} == {"age", "race", "extra"}


def test_candidate_is_immutable():
    candidate = Candidate.model_validate(EXAMPLE_CANDIDATE)
    with pytest.raises(ValidationError):
        candidate.age = 50  # type: ignore[misc]


def test_display_in_words():
    assert FEATURE_CATALOGUE["education"].display("bachelors_degree") == "Bachelor's degree"
    assert FEATURE_CATALOGUE["hours_per_week"].display(40) == "40 hours per week"
    with pytest.raises(ValueError, match="one of: female, male"):
        FEATURE_CATALOGUE["sex"].display("other")


def test_invalid_json_is_a_clear_error():
    with pytest.raises(ValidationError) as caught:
        Candidate.model_validate_json('{"age": 38,')
    [error] = validation_error_body(caught.value, Candidate).errors
    assert error.rule == "valid JSON"
    assert error.field == "(body)"


def test_json_numbers_must_be_integers():
    payload = '{"candidate": ' + Candidate.model_validate(EXAMPLE_CANDIDATE).model_dump_json()
    with pytest.raises(ValidationError) as caught:
        PredictionRequest.model_validate_json(payload.replace('"age":38', '"age":38.5') + "}")
    [error] = validation_error_body(caught.value, PredictionRequest).errors
    assert (error.field, error.rule) == ("candidate.age", "integer")
