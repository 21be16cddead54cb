"""The logged model: its schema, input decoding, predictions equal to XGBoost's own and banded by
the model's decision rule, and an MLflow round trip through a real tracking database."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from payband_contracts import FEATURE_CATALOGUE, SalaryBands
from payband_contracts.model import DecisionRule
from payband_local.postgres import PostgresConnectionInfo
from payband_training.features import PROTECTED, feature_frame, to_model_frame
from payband_training.mitigation import Mitigation
from payband_training.model import (
    BOOSTER_FILE,
    METADATA_FILE,
    PREDICTED_BAND,
    ModelInputError,
    ModelSchema,
    ModelSchemaError,
    SalaryBandModel,
    check_booster,
    encode_inputs,
    load_bundle,
    log_model,
    make_input_example,
    pip_requirements,
    predict_frame,
    write_bundle,
)
from payband_training.search import TrialConfig, fit_final
from payband_training.settings import TrainingSettings
from payband_training.tracking import configure

HEX = "0123456789abcdef" * 4
URIS = {
    "features_uri": f"local://features/adult@{HEX}",
    "train_uri": f"local://splits/adult/train@{HEX}",
    "test_uri": f"local://splits/adult/test@{HEX}",
}
CONFIG = TrialConfig(
    params={"n_estimators": 20, "max_depth": 3},
    mitigation=Mitigation("none"),
    decision=DecisionRule(),
)
TRAIN_ROWS = 480
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class Fitted:
    model: xgb.Booster
    schema: ModelSchema
    test: pd.DataFrame

    @property
    def rows(self) -> pd.DataFrame:
        """Every test row as a caller sends it: strings and integers."""
        return make_input_example(self.test, self.schema, rows=len(self.test))

    def expected(self) -> np.ndarray:
        """XGBoost's own probabilities through a DMatrix, as XGBClassifier.predict_proba."""
        inputs = to_model_frame(self.test, self.schema.use_protected)
        raw = self.model.predict(xgb.DMatrix(inputs, enable_categorical=True))
        if self.schema.n_bands == 2:
            raw = np.vstack((1.0 - raw, raw)).T
        return raw.astype(np.float64)


def fit(raw: pd.DataFrame, edges: tuple[int, ...], *, use_protected: bool = False) -> Fitted:
    labels = SalaryBands(edges_usd=edges).labels
    frame = feature_frame(raw, labels)
    train = frame.iloc[:TRAIN_ROWS].reset_index(drop=True)
    test = frame.iloc[TRAIN_ROWS:].reset_index(drop=True)
    model = fit_final(train, CONFIG, use_protected=use_protected, n_bands=len(labels), seed=3)
    schema = ModelSchema.create(
        use_protected=use_protected,
        band_edges_usd=edges,
        source="adult",
        year="1994",
        **URIS,
    )
    return Fitted(model=model, schema=schema, test=test)


@pytest.fixture
def binary(synthetic_snapshot: Callable[..., pd.DataFrame]) -> Fitted:
    return fit(synthetic_snapshot(600), (50_000,))


@pytest.fixture
def three_bands(synthetic_snapshot: Callable[..., pd.DataFrame]) -> Fitted:
    return fit(synthetic_snapshot(600, edges=(30_000, 60_000)), (30_000, 60_000))


@pytest.fixture(scope="module")
def experiment_id(
    postgres_module_database: PostgresConnectionInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An MLflow experiment in a fresh database; MLflow's global URIs are reset afterwards."""
    saved = {name: os.environ.pop(name, None) for name in MLFLOW_URI_VARIABLES}
    settings = TrainingSettings(
        mlflow_tracking_uri=postgres_module_database.url,
        mlflow_artifact_root=tmp_path_factory.mktemp("mlflow").as_uri(),
        mlflow_experiment="model-tests",
    )
    try:
        yield configure(settings)
    finally:
        # configure() sets both URIs and their variables (for subprocesses); undo all four.
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def test_schema_holds_the_features_levels_and_bands_of_the_model(binary: Fitted) -> None:
    schema = binary.schema
    assert list(schema.features) == binary.model.feature_names
    assert not set(PROTECTED) & set(schema.features)
    assert schema.integer_features == ("age", "hours_per_week")
    assert set(schema.category_levels) == set(schema.features) - {"age", "hours_per_week"}
    for name, levels in schema.category_levels.items():
        assert levels == tuple(FEATURE_CATALOGUE[name].values)
    assert schema.band_labels == ("<=50K", ">50K")
    assert schema.n_bands == 2
    with_protected = ModelSchema.create(
        use_protected=True, band_edges_usd=(50_000,), source="adult", year="1994", **URIS
    )
    assert {"sex", "race"} <= set(with_protected.features)
    assert with_protected.category_levels["sex"] == tuple(FEATURE_CATALOGUE["sex"].values)


def test_schema_round_trips_through_its_json_file(binary: Fitted, tmp_path: Path) -> None:
    path = binary.schema.write(tmp_path / METADATA_FILE)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "payband-model/1"
    assert document["features"][0] == "age"
    assert document["train_uri"] == URIS["train_uri"]
    assert document["band_edges_usd"] == [50_000.0]
    assert ModelSchema.read(path) == binary.schema


def test_a_bad_schema_file_is_named_with_its_problem(binary: Fitted, tmp_path: Path) -> None:
    with pytest.raises(ModelSchemaError, match="does not exist: not a payband model"):
        ModelSchema.read(tmp_path / "missing.json")
    document = json.loads(binary.schema.model_dump_json())
    document["band_labels"] = ["low", "high"]
    (tmp_path / "labels.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ModelSchemaError, match=r"labels\.json: .*do not match the band edges"):
        ModelSchema.read(tmp_path / "labels.json")
    del document["train_uri"]
    (tmp_path / "uri.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ModelSchemaError, match=r"uri\.json: train_uri: Field required"):
        ModelSchema.read(tmp_path / "uri.json")
    stray_levels = binary.schema.model_dump() | {"category_levels": {"sex": ["female"]}}
    with pytest.raises(ValidationError, match="category levels for features the model lacks"):
        ModelSchema.model_validate(stray_levels)


def test_a_schema_of_another_model_is_refused(binary: Fitted, three_bands: Fitted) -> None:
    booster = binary.model
    with_protected = ModelSchema.create(
        use_protected=True, band_edges_usd=(50_000,), source="adult", year="1994", **URIS
    )
    with pytest.raises(ModelSchemaError, match=r"booster's features .* differ"):
        check_booster(with_protected, booster)
    with pytest.raises(ModelSchemaError, match="predicts 2 classes, the schema has 3 bands"):
        check_booster(three_bands.schema, booster)
    with pytest.raises(ModelSchemaError, match="predicts 3 classes, the schema has 2 bands"):
        write_bundle(three_bands.model, binary.schema, Path("unused"))


@pytest.mark.parametrize("fitted", ["binary", "three_bands"])
def test_predictions_equal_xgboosts_own(fitted: str, request: pytest.FixtureRequest) -> None:
    case: Fitted = request.getfixturevalue(fitted)
    prediction = predict_frame(case.model, case.schema, case.rows)
    assert list(prediction.columns) == [PREDICTED_BAND, *case.schema.band_labels]
    probabilities = prediction[list(case.schema.band_labels)].to_numpy()
    np.testing.assert_array_equal(probabilities, case.expected())
    np.testing.assert_array_equal(
        prediction[PREDICTED_BAND].to_numpy(), case.expected().argmax(axis=1)
    )
    assert prediction[PREDICTED_BAND].dtype == np.int64
    # The rows are not all one band: the comparison above means something.
    assert prediction[PREDICTED_BAND].nunique() == case.schema.n_bands


def test_the_band_follows_the_models_decision_rule(binary: Fitted, tmp_path: Path) -> None:
    cut_off = 0.3
    schema = binary.schema.model_copy(update={"decision": DecisionRule.with_cut_off(cut_off)})
    prediction = predict_frame(binary.model, schema, binary.rows)
    high = binary.expected()[:, 1]
    np.testing.assert_array_equal(prediction[PREDICTED_BAND].to_numpy(), high > cut_off)
    # Rows between the cut-off and 0.5 get band 1 here and band 0 by the plain argmax.
    assert ((high > cut_off) & (high <= 0.5)).any()
    # The rule travels with the bundle the serving runtime loads.
    write_bundle(binary.model, schema, tmp_path)
    loaded, read = load_bundle(tmp_path)
    assert read.decision.cut_off == pytest.approx(cut_off)
    np.testing.assert_array_equal(
        predict_frame(loaded, read, binary.rows).to_numpy(), prediction.to_numpy()
    )


def test_category_codes_come_from_the_schema_not_the_input(binary: Fitted) -> None:
    rows = binary.rows
    reordered = rows.copy()
    for name, levels in binary.schema.category_levels.items():
        reordered[name] = pd.Categorical(rows[name], categories=list(reversed(levels)))
    # Extra columns (record_id, sex, ...) are ignored; the index is kept.
    reordered["record_id"] = "x"
    reordered.index = reordered.index + 1000
    booster = binary.model
    expected = predict_frame(booster, binary.schema, rows)
    got = predict_frame(booster, binary.schema, reordered)
    assert list(got.index) == list(reordered.index)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


def test_bad_inputs_get_one_clear_message(binary: Fitted) -> None:
    rows = binary.rows.head(3)
    unknown = rows.assign(education=["doctorate", "phd", "phd"])
    with pytest.raises(
        ModelInputError, match=r"column 'education' has unknown category 'phd'; expected one of"
    ):
        encode_inputs(unknown, binary.schema)
    with pytest.raises(ModelInputError, match="missing input columns: age, occupation"):
        encode_inputs(rows.drop(columns=["age", "occupation"]), binary.schema)
    with pytest.raises(ModelInputError, match="column 'birthplace' has 1 missing values"):
        encode_inputs(rows.assign(birthplace=["abroad", None, "abroad"]), binary.schema)
    with pytest.raises(ModelInputError, match=r"column 'age' must hold integers; found 30\.5"):
        encode_inputs(rows.assign(age=[30.5, 40.0, 50.0]), binary.schema)
    with pytest.raises(ModelInputError, match="column 'age' must hold integers, not str"):
        encode_inputs(rows.assign(age=["30", "40", "50"]), binary.schema)
    with pytest.raises(ModelInputError, match="takes a pandas DataFrame, not list"):
        encode_inputs([{"age": 30}], binary.schema)  # type: ignore[arg-type]
    with pytest.raises(ModelInputError, match="column 'age' must hold integers; found inf"):
        encode_inputs(rows.assign(age=[np.inf, 40.0, 50.0]), binary.schema)
    whole_floats = encode_inputs(rows.assign(age=[30.0, 40.0, 50.0]), binary.schema)
    assert whole_floats["age"].tolist() == [30, 40, 50]
    nullable = encode_inputs(rows.assign(age=pd.array([30, 40, 50], dtype="Int64")), binary.schema)
    assert nullable["age"].dtype == np.int64


def test_a_bundle_round_trips_without_mlflow(three_bands: Fitted, tmp_path: Path) -> None:
    booster = three_bands.model
    artifacts = write_bundle(booster, three_bands.schema, tmp_path / "artifacts")
    assert {Path(path).name for path in artifacts.values()} == {BOOSTER_FILE, METADATA_FILE}
    for directory in (tmp_path, tmp_path / "artifacts"):
        loaded, schema = load_bundle(directory)
        assert schema == three_bands.schema
        got = predict_frame(loaded, schema, three_bands.rows)
        np.testing.assert_array_equal(
            got[list(schema.band_labels)].to_numpy(), three_bands.expected()
        )
    (tmp_path / "artifacts" / BOOSTER_FILE).unlink()
    with pytest.raises(ModelSchemaError, match="the model has no booster"):
        load_bundle(tmp_path)


def test_an_unloaded_pyfunc_model_says_so(binary: Fitted) -> None:
    with pytest.raises(ModelSchemaError, match="not loaded"):
        SalaryBandModel().predict(None, binary.rows)


def test_the_logged_model_predicts_like_the_booster(binary: Fitted, experiment_id: str) -> None:
    example = make_input_example(binary.test, binary.schema)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = log_model(binary.model, binary.schema, example)

    assert info.run_id == run.info.run_id
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    prediction = loaded.predict(binary.rows)
    np.testing.assert_array_equal(
        prediction[list(binary.schema.band_labels)].to_numpy(), binary.expected()
    )

    signature = loaded.metadata.get_input_schema()
    assert signature.input_names() == list(binary.schema.features)
    assert {spec.name: spec.type.name for spec in signature.inputs} == {
        name: "string" if name in binary.schema.category_levels else "long"
        for name in binary.schema.features
    }
    outputs = loaded.metadata.get_output_schema()
    assert outputs.input_names() == [PREDICTED_BAND, *binary.schema.band_labels]

    directory = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    saved_example = json.loads((directory / "input_example.json").read_text(encoding="utf-8"))
    assert saved_example["columns"] == list(binary.schema.features)
    assert saved_example["data"][0] == example.iloc[0].tolist()
    requirements = (directory / "requirements.txt").read_text(encoding="utf-8").split()
    assert requirements == pip_requirements()
    assert all("==" in line for line in requirements)
    # Nothing copied from the working directory's uv project.
    assert not (directory / "uv.lock").exists()
    # What the serving runtime reads: the booster and the schema, without pyfunc.
    booster, schema = load_bundle(directory)
    assert schema == binary.schema
    assert booster.feature_names == list(binary.schema.features)


def test_the_logged_model_names_bad_inputs(binary: Fitted, experiment_id: str) -> None:
    example = make_input_example(binary.test, binary.schema)
    with mlflow.start_run(experiment_id=experiment_id):
        info = log_model(binary.model, binary.schema, example)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    with pytest.raises(ModelInputError, match="column 'occupation' has unknown category 'pilot'"):
        loaded.predict(example.assign(occupation="pilot"))
    with pytest.raises(MlflowException, match=r"missing inputs \['hours_per_week'\]"):
        loaded.predict(example.drop(columns="hours_per_week"))
