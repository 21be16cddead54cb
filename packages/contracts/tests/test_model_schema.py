"""The model metadata format (payband_model.json) that training writes and serving reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from payband_contracts import FEATURE_CATALOGUE
from payband_contracts.model import DecisionRule, ModelSchema, ModelSchemaError

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


def test_the_decision_rule_is_a_cut_off_for_two_bands(tmp_path: Path) -> None:
    rule = DecisionRule.with_cut_off(0.2)
    assert rule.cut_off == pytest.approx(0.2)
    probabilities = np.array([[0.85, 0.15], [0.8, 0.2], [0.79, 0.21], [0.4, 0.6]])
    assert rule.bands(probabilities).tolist() == [0, 0, 1, 1]
    # Without offsets: the most probable band, ties to the lower one.
    assert DecisionRule().bands(probabilities).tolist() == [0, 0, 0, 1]
    assert DecisionRule().bands(np.array([[0.5, 0.5]])).tolist() == [0]
    assert "above 0.200" in rule.describe(("<=50K", ">50K"))
    stored = schema(decision=rule)
    path = stored.write(tmp_path / "payband_model.json")
    assert ModelSchema.read(path).decision == rule
    assert ModelSchema.read(path).bands(probabilities).tolist() == [0, 0, 1, 1]
    # A file written before the rule existed takes the most probable band.
    older = stored.model_dump(mode="json")
    del older["decision"]
    assert ModelSchema.model_validate(older).decision == DecisionRule()


def test_band_offsets_shift_log_probabilities_for_more_bands() -> None:
    rule = DecisionRule(band_offsets=(0.0, 0.0, math.log(2.0)))
    probabilities = np.array([[0.5, 0.3, 0.2], [0.45, 0.1, 0.45], [0.2, 0.7, 0.1]])
    # Row 0: 0.2 * 2 = 0.4 < 0.5; row 1: 0.45 * 2 beats 0.45; row 2: band 1 stays.
    assert rule.bands(probabilities).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="no single cut-off"):
        _ = rule.cut_off
    with pytest.raises(ValueError, match="3 band offsets for 2 bands"):
        schema(decision=rule).model_validate(schema(decision=rule).model_dump())
    with pytest.raises(ValueError, match="2 probability columns for a rule over 3 bands"):
        rule.bands(np.array([[0.5, 0.5]]))


@pytest.mark.parametrize("cut_off", [0.0, 1.0, -0.1, 1.5])
def test_a_cut_off_lies_inside_zero_and_one(cut_off: float) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        DecisionRule.with_cut_off(cut_off)


def test_offsets_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        DecisionRule(band_offsets=(0.0, math.inf))
