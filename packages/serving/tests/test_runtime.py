"""The runtime in process, driven as MLServer drives it (``await runtime.load()``, ``await
runtime.predict(payload)``, ``await runtime.metadata()``): the served band is the model's
decision rule applied to the served probabilities, which for a cut-off or offsets is not
always the most probable band."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse

from payband_contracts.model import DecisionRule
from payband_serving.runtime import SalaryBandRuntime
from payband_testing.model import TinyModel, train_tiny_model

# A three-band rule that favours the middle band and disfavours the top one.
OFFSETS = (0.0, 0.7, -0.7)
# Rows closer than this to the rule's boundary may fall either way in float32 vs float64.
BOUNDARY = 1e-6


@pytest.fixture(scope="module")
def tiny_model_offsets(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A three-band model (``tiny_model_three_bands``' data and seed) with band offsets."""
    return train_tiny_model(
        tmp_path_factory.mktemp("tiny-model-offsets"),
        band_edges_usd=(40_000, 80_000),
        seed=1,
        decision=DecisionRule(band_offsets=OFFSETS),
    )


def v2_request(model: TinyModel, frame: pd.DataFrame) -> InferenceRequest:
    return InferenceRequest.model_validate(model.v2_request(frame))


async def loaded(directory: Path) -> SalaryBandRuntime:
    runtime = SalaryBandRuntime(
        ModelSettings(
            name="salary-band",
            implementation=SalaryBandRuntime,
            parameters=ModelParameters(uri=str(directory)),
        )
    )
    assert await runtime.load()
    return runtime


def served(model: TinyModel, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The runtime's outputs for raw candidate rows, by name, in their shapes."""

    async def predict() -> InferenceResponse:
        runtime = await loaded(model.directory)
        return await runtime.predict(v2_request(model, frame))

    response = asyncio.run(predict())
    return {
        output.name: np.asarray(output.data.root).reshape(output.shape)
        for output in response.outputs
    }


def described(model: TinyModel) -> MetadataModelResponse:
    async def metadata() -> MetadataModelResponse:
        return await (await loaded(model.directory)).metadata()

    return asyncio.run(metadata())


def margins(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Each band's raw score [N, B] as the explanation states it."""
    return outputs["base_value"] + outputs["contributions"].sum(axis=2)


def test_a_cut_off_model_serves_the_band_of_its_cut_off(tiny_model_cut_off: TinyModel) -> None:
    model = tiny_model_cut_off
    cut_off = model.schema.decision.cut_off
    assert cut_off == pytest.approx(0.2)
    outputs = served(model, model.holdout)
    band, probabilities = outputs["band"][:, 0], outputs["probabilities"]

    # The rule on the served probabilities, and the rule stated by hand on the explained
    # log-odds: band 1 exactly when sigmoid(margin) > cut-off.
    np.testing.assert_array_equal(band, model.schema.bands(probabilities))
    upper = 1.0 / (1.0 + np.exp(-margins(outputs)[:, 1]))
    clear = np.abs(upper - cut_off) > BOUNDARY
    assert clear.sum() >= len(band) - 2
    np.testing.assert_array_equal(band[clear], (upper[clear] > cut_off).astype(np.int64))
    # And on the booster's own probabilities, computed apart from the runtime.
    np.testing.assert_array_equal(band, model.bands(model.holdout))

    # Not the most probable band: about one row in ten goes up with p(>50K) in (0.2, 0.5].
    moved = band != probabilities.argmax(axis=1)
    assert moved.sum() >= 25
    assert (band[moved] == 1).all()
    assert ((probabilities[moved, 1] > cut_off) & (probabilities[moved, 1] <= 0.5)).all()


def test_a_three_band_model_serves_the_band_of_its_offsets(tiny_model_offsets: TinyModel) -> None:
    model = tiny_model_offsets
    outputs = served(model, model.holdout)
    band, probabilities = outputs["band"][:, 0], outputs["probabilities"]

    np.testing.assert_array_equal(band, model.schema.bands(probabilities))
    # log softmax(margin) differs from the margin by one constant per row: the rule by hand
    # is the highest margin plus offset.
    scores = margins(outputs) + np.asarray(OFFSETS)
    ordered = np.sort(scores, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > BOUNDARY
    assert clear.sum() >= len(band) - 2
    np.testing.assert_array_equal(band[clear], scores[clear].argmax(axis=1))
    np.testing.assert_array_equal(band, model.bands(model.holdout))

    moved = band != probabilities.argmax(axis=1)
    assert moved.sum() >= 50
    assert set(band.tolist()) == {0, 1, 2}


def test_a_model_without_a_rule_serves_the_most_probable_band(tiny_model: TinyModel) -> None:
    outputs = served(tiny_model, tiny_model.holdout)
    assert tiny_model.schema.decision == DecisionRule()
    np.testing.assert_array_equal(outputs["band"][:, 0], outputs["probabilities"].argmax(axis=1))


@pytest.mark.parametrize(
    ("fixture", "description"),
    [
        ("tiny_model_cut_off", "band >50K when its probability is above 0.200, otherwise <=50K"),
        ("tiny_model", "band >50K when its probability is above 0.500, otherwise <=50K"),
        (
            "tiny_model_offsets",
            "the band with the highest log-probability plus its offset "
            "(<=40K +0.000, 40K-80K +0.700, >80K -0.700)",
        ),
    ],
)
def test_metadata_states_the_decision_rule(
    request: pytest.FixtureRequest, fixture: str, description: str
) -> None:
    model: TinyModel = request.getfixturevalue(fixture)
    parameters = described(model).parameters
    assert parameters is not None
    extra = parameters.model_extra or {}
    assert DecisionRule.model_validate_json(extra["decision_rule"]) == model.schema.decision
    assert json.loads(extra["decision_rule"])["band_offsets"] == list(
        model.schema.decision.band_offsets
    )
    assert extra["decision_rule_description"] == description
