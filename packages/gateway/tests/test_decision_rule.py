"""The band the gateway answers and records is the model's decision rule, as MLServer serves it.

A real gateway in front of a real MLServer serving ``tiny_model_cut_off`` (band >50K when its
probability is above 0.2): for some candidates the answer is not the most probable band.
"""

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import xgboost as xgb

from payband_contracts import AuditRecord, BatchPrediction, Prediction
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.gateway import TestKey, gateway_server
from payband_testing.model import TinyModel
from payband_testing.serving import InferenceServer

ROWS = 200


@pytest.fixture(scope="module")
def cut_off_client(
    serving_server_cut_off: InferenceServer,
    audit_database: PostgresConnectionInfo,
    keys: dict[str, TestKey],
) -> Iterator[httpx.Client]:
    with (
        gateway_server(
            inference_url=serving_server_cut_off.url,
            database_url=audit_database.dsn,
            keys=keys.values(),
        ) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=30) as http,
    ):
        yield http


def probabilities_of(prediction: Prediction) -> np.ndarray:
    return np.asarray([[p.probability for p in prediction.probabilities]])


def test_the_answered_and_recorded_band_is_the_models_cut_off(
    cut_off_client: httpx.Client, keys: dict[str, TestKey], tiny_model_cut_off: TinyModel
) -> None:
    model = tiny_model_cut_off
    frame = model.holdout.iloc[:ROWS]
    response = cut_off_client.post(
        "/v1/predictions/batch",
        json={"candidates": frame.to_dict("records")},
        headers=keys["predict"].headers,
    )
    assert response.status_code == 200, response.text
    predictions = BatchPrediction.model_validate_json(response.text).predictions
    bands = np.asarray([prediction.band.index for prediction in predictions])

    # The rule on the answered probabilities, and on the booster's own.
    answered = np.vstack([probabilities_of(prediction) for prediction in predictions])
    np.testing.assert_array_equal(bands, model.schema.bands(answered))
    np.testing.assert_array_equal(bands, model.bands(frame))
    moved = np.flatnonzero(bands != answered.argmax(axis=1))
    assert len(moved) >= 10

    margins = model.booster.predict(
        xgb.DMatrix(model.encoded(frame), enable_categorical=True), output_margin=True
    )
    for row in moved:
        prediction = predictions[row]
        assert prediction.band.label == ">50K"
        assert 0.2 < prediction.probabilities[1].probability <= 0.5
        # The served band is the explained one, explained exactly, and stated in words.
        explanation = prediction.explanation
        assert explanation.band_index == 1
        score = explanation.base_value + sum(c.contribution for c in explanation.contributions)
        assert score == pytest.approx(margins[row], abs=1e-4)
        assert all(" the likelihood of >50K " in sentence for sentence in explanation.summary)

    # The audit log holds the band that was answered.
    first = predictions[moved[0]]
    stored = cut_off_client.get(f"/v1/predictions/{first.id}", headers=keys["audit"].headers)
    assert stored.status_code == 200, stored.text
    record = AuditRecord.model_validate_json(stored.text)
    assert record.prediction == first
    assert record.prediction.band.index == 1
