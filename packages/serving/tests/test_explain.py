"""The explainer in process: input encoding, exact contributions, probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from payband_serving.explain import Explainer, InputError
from payband_testing.model import TinyModel


def columns(frame: pd.DataFrame, model: TinyModel) -> dict[str, list]:
    return {name: frame[name].tolist() for name in model.schema.features}


def booster_outputs(model: TinyModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Margins and probabilities straight from XGBoost on the training-time encoding."""
    data = xgb.DMatrix(model.encoded(frame), enable_categorical=True)
    return model.booster.predict(data, output_margin=True), model.booster.predict(data)


def test_binary_contributions_add_up_to_the_margin_of_both_bands(tiny_model: TinyModel) -> None:
    explainer = Explainer(tiny_model.booster, tiny_model.schema)
    frame = tiny_model.holdout
    explained = explainer.explain(explainer.encode(columns(frame, tiny_model)))
    margin, probability = booster_outputs(tiny_model, frame)

    assert explained.contributions.shape == (len(frame), 2, len(tiny_model.schema.features))
    np.testing.assert_allclose(explained.margin[:, 1], margin, atol=1e-4)
    # The lower band's score is the negated log-odds, explained exactly too.
    np.testing.assert_allclose(explained.margin[:, 0], -margin, atol=1e-4)
    np.testing.assert_allclose(explained.contributions[:, 0], -explained.contributions[:, 1])
    np.testing.assert_allclose(explained.probabilities[:, 1], probability, atol=1e-6)
    np.testing.assert_allclose(explained.probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert (explained.band == (probability > 0.5)).all()
    # Not a constant model: both bands are predicted and features matter.
    assert set(explained.band.tolist()) == {0, 1}
    assert np.abs(explained.contributions).max() > 0.5


def test_multiclass_contributions_per_band(tiny_model_three_bands: TinyModel) -> None:
    model = tiny_model_three_bands
    explainer = Explainer(model.booster, model.schema)
    explained = explainer.explain(explainer.encode(columns(model.holdout, model)))
    margin, probabilities = booster_outputs(model, model.holdout)

    assert explained.contributions.shape == (len(model.holdout), 3, len(model.schema.features))
    np.testing.assert_allclose(explained.margin, margin, atol=1e-4)
    np.testing.assert_allclose(explained.probabilities, probabilities, atol=1e-6)
    assert (explained.band == probabilities.argmax(axis=1)).all()
    assert set(explained.band.tolist()) == {0, 1, 2}


def test_levels_come_from_the_model_not_from_the_request_order(tiny_model: TinyModel) -> None:
    explainer = Explainer(tiny_model.booster, tiny_model.schema)
    frame = tiny_model.holdout.iloc[:50]
    forward = explainer.explain(explainer.encode(columns(frame, tiny_model)))
    # The same rows with the columns given in reverse order and as numpy arrays.
    reordered = {
        name: np.asarray(frame[name].tolist(), dtype=object)
        for name in reversed(tiny_model.schema.features)
    }
    again = explainer.explain(explainer.encode(reordered))
    np.testing.assert_array_equal(forward.contributions, again.contributions)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("education"), "missing inputs: education"),
        (lambda c: c.update(salary=[1]), "unexpected inputs: salary"),
        (lambda c: c.update(education=["phd"]), "input 'education' has unknown category 'phd'"),
        (lambda c: c.update(education=[b"\xff"]), "input 'education' has unknown category"),
        (lambda c: c.update(age=[38.5]), "input 'age' must hold whole numbers; found 38.5"),
        (lambda c: c.update(age=["38"]), "input 'age' must hold integers; found '38'"),
        (lambda c: c.update(age=[float("nan")]), "input 'age' must hold whole numbers"),
        (
            lambda c: c.update(age=[38, 39]),
            "inputs differ in length: most have 1 rows, but age has 2",
        ),
    ],
)
def test_bad_inputs_are_named(tiny_model: TinyModel, change, message: str) -> None:
    explainer = Explainer(tiny_model.booster, tiny_model.schema)
    given = columns(tiny_model.holdout.iloc[:1], tiny_model)
    change(given)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        explainer.encode(given)


def test_whole_floats_and_bytes_are_accepted(tiny_model: TinyModel) -> None:
    explainer = Explainer(tiny_model.booster, tiny_model.schema)
    frame = tiny_model.holdout.iloc[:5]
    given = columns(frame, tiny_model)
    converted = dict(given)
    converted["age"] = [float(value) for value in given["age"]]
    converted["education"] = [value.encode() for value in given["education"]]
    np.testing.assert_array_equal(explainer.encode(given), explainer.encode(converted))


def test_an_empty_request_is_refused(tiny_model: TinyModel) -> None:
    explainer = Explainer(tiny_model.booster, tiny_model.schema)
    with pytest.raises(InputError, match="the request has no rows"):
        explainer.encode({name: [] for name in tiny_model.schema.features})
