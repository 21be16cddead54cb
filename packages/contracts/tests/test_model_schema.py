"""The model metadata format (payband_model.json) that training writes and serving reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from payband_contracts import FEATURE_CATALOGUE
from payband_contracts.model import ModelSchema, ModelSchemaError

URIS = {
    "features_uri": "local://features/adult@" + "0" * 64,
    "train_uri": "local://splits/adult/train@" + "1" * 64,
    "test_uri": "local://splits/adult/test@" + "2" * 64,
}


def schema(**changes: object) -> ModelSchema:
    base = ModelSchema.create(
        use_protected=False, band_edges_usd=(50_000,), source="adult", year="1994", **URIS
    )
    return base.model_copy(update=changes) if changes else base


def test_created_from_the_catalogue() -> None:
    created = schema()
    assert "sex" not in created.features
    assert "race" not in created.features
    assert created.integer_features == ("age", "hours_per_week")
    assert created.integer_ranges == {
        "age": (FEATURE_CATALOGUE["age"].minimum, FEATURE_CATALOGUE["age"].maximum),
        "hours_per_week": (
            FEATURE_CATALOGUE["hours_per_week"].minimum,
            FEATURE_CATALOGUE["hours_per_week"].maximum,
        ),
    }
    assert created.booster_feature_types == ("int", "c", "c", "c", "c", "int", "c")
    assert created.objective == "binary:logistic"
    three = ModelSchema.create(
        use_protected=True, band_edges_usd=(40_000, 80_000), source="adult", year="1994", **URIS
    )
    assert three.objective == "multi:softprob"
    assert {"sex", "race"} <= set(three.features)


def test_round_trip_and_older_files_without_ranges(tmp_path: Path) -> None:
    path = schema().write(tmp_path / "payband_model.json")
    assert ModelSchema.read(path) == schema()
    document = path.read_text().replace('"integer_ranges"', '"unused"')
    (tmp_path / "old.json").write_text(document)
    with pytest.raises(ModelSchemaError, match=r"old\.json: unused: Extra inputs"):
        ModelSchema.read(tmp_path / "old.json")
    without = schema().model_dump(mode="json")
    del without["integer_ranges"]
    assert ModelSchema.model_validate(without).integer_ranges == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"integer_ranges": {"education": [0, 1]}}, "not integer inputs: \\['education'\\]"),
        ({"integer_ranges": {"age": [90, 17]}}, "the range of 'age' is empty"),
    ],
)
def test_inconsistent_ranges_are_refused(changes: dict, message: str) -> None:
    document = schema().model_dump(mode="json") | changes
    with pytest.raises(ValueError, match=message):
        ModelSchema.model_validate(document)


def test_a_booster_must_fit_features_types_classes_and_objective() -> None:
    created = schema()
    names, types = created.features, created.booster_feature_types
    created.check_booster_info(names, types, 0, "binary:logistic")
    with pytest.raises(ModelSchemaError, match="the booster's features"):
        created.check_booster_info(tuple(reversed(names)), types, 0)
    with pytest.raises(ModelSchemaError, match="feature types"):
        created.check_booster_info(names, ("int",) * len(names), 0)
    with pytest.raises(ModelSchemaError, match="predicts 3 classes, the schema has 2 bands"):
        created.check_booster_info(names, types, 3)
    with pytest.raises(ModelSchemaError, match="objective is multi:softprob; 2 bands need"):
        created.check_booster_info(names, types, 2, "multi:softprob")
    with pytest.raises(ModelSchemaError, match="objective is binary:hinge"):
        created.check_booster_info(names, types, 0, "binary:hinge")
