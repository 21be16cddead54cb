"""The logged model: an XGBoost booster plus the metadata needed to feed it, as MLflow pyfunc.

A logged model directory holds, besides MLflow's own files:

- ``artifacts/booster.json``: the booster in XGBoost's JSON format (never a pickle);
- ``artifacts/payband_model.json``: ``payband_contracts.model.ModelSchema`` (feature order,
  category levels, bands, training data URIs).

The serving runtime reads these two files directly (``load_bundle``); ``SalaryBandModel`` is
the same decoding and prediction behind MLflow's pyfunc interface.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from payband_contracts.model import (
    BOOSTER_FILE,
    METADATA_FILE,
    REFERENCE_PREDICTION,
    ModelSchema,
    ModelSchemaError,
)

__all__ = [
    "ARTIFACTS_DIR",
    "BOOSTER_FILE",
    "METADATA_FILE",
    "MODEL_NAME",
    "PREDICTED_BAND",
    "ModelInputError",
    "ModelSchema",
    "ModelSchemaError",
    "SalaryBandModel",
    "check_booster",
    "encode_inputs",
    "load_bundle",
    "log_model",
    "make_input_example",
    "model_signature",
    "pip_requirements",
    "predict_frame",
    "predict_probabilities",
    "write_bundle",
]

# Where MLflow puts pyfunc artifacts inside a model directory.
ARTIFACTS_DIR = "artifacts"
# The name the model is logged under in its run: runs:/<run id>/model.
MODEL_NAME = "model"
# The output column with the predicted band index; the other columns are the band labels.
PREDICTED_BAND = REFERENCE_PREDICTION  # monitoring reads it from the reference data
# The third-party packages predict needs, pinned to the installed versions, so MLflow infers
# nothing; loading through pyfunc also needs payband-training itself installed.
_REQUIREMENTS = ("mlflow", "xgboost", "pandas", "numpy", "cloudpickle", "pydantic")
_SHOWN_VALUES = 5
_UV_AUTO_DETECT = "MLFLOW_UV_AUTO_DETECT"


def _import_pyfunc() -> None:
    with warnings.catch_warnings():
        # Importing mlflow.pyfunc infers schemas of MLflow's own agent types, which warns
        # about `Any` hints; MLflow mutes it by patching showwarning, which "error" filters ignore.
        warnings.filterwarnings(
            "ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning
        )
        importlib.import_module("mlflow.pyfunc")


_import_pyfunc()


class ModelInputError(ValueError):
    """Rows handed to the model do not fit its schema; one readable line naming the problem."""


def check_booster(schema: ModelSchema, booster: xgb.Booster) -> None:
    """ModelSchemaError unless the booster takes the schema's features, typed so, and bands."""
    learner = json.loads(booster.save_config())["learner"]
    schema.check_booster_info(
        booster.feature_names or (),
        booster.feature_types or (),
        int(learner["learner_model_param"]["num_class"]),
        learner["objective"]["name"],
    )


def _shown(values: Sequence[Any]) -> str:
    unique = sorted({repr(value) for value in values})
    more = f" and {len(unique) - _SHOWN_VALUES} more" if len(unique) > _SHOWN_VALUES else ""
    return ", ".join(unique[:_SHOWN_VALUES]) + more


def _integer_input(column: pd.Series, name: str) -> pd.Series:
    if bool(column.isna().any()):
        raise ModelInputError(f"column {name!r} has {int(column.isna().sum())} missing values")
    if pd.api.types.is_bool_dtype(column.dtype) or not pd.api.types.is_numeric_dtype(column.dtype):
        raise ModelInputError(f"column {name!r} must hold integers, not {column.dtype}")
    if pd.api.types.is_integer_dtype(column.dtype):
        values = column.to_numpy(dtype=np.int64)
    else:
        # Whole floats are accepted: JSON and some clients send 42.0 for 42.
        floats = column.to_numpy(dtype=np.float64)
        broken = floats[~np.isfinite(floats) | (floats != np.round(floats))]
        if len(broken):
            raise ModelInputError(
                f"column {name!r} must hold integers; found {_shown(broken.tolist())}"
            )
        values = floats.astype(np.int64)
    return pd.Series(values, index=column.index, name=name)


def _categorical_input(column: pd.Series, name: str, levels: Sequence[str]) -> pd.Series:
    values = column.astype(object)
    missing = values.isna()
    if bool(missing.any()):
        raise ModelInputError(f"column {name!r} has {int(missing.sum())} missing values")
    unknown = values[~values.isin(levels)]
    if len(unknown):
        raise ModelInputError(
            f"column {name!r} has unknown category {_shown(unknown.tolist())}; "
            f"expected one of: {', '.join(levels)}"
        )
    # The catalogue's level order fixes the codes XGBoost saw in training.
    return pd.Series(pd.Categorical(values, categories=list(levels)), index=column.index, name=name)


def encode_inputs(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame:
    """The model's columns in order, integers as int64 and categories with the stored levels.

    Other columns are ignored; ModelInputError names a missing column or an unknown value.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ModelInputError(f"the model takes a pandas DataFrame, not {type(frame).__name__}")
    if missing := [name for name in schema.features if name not in frame.columns]:
        raise ModelInputError(f"missing input columns: {', '.join(missing)}")
    columns = {}
    for name in schema.features:
        levels = schema.category_levels.get(name)
        columns[name] = (
            _integer_input(frame[name], name)
            if levels is None
            else _categorical_input(frame[name], name, levels)
        )
    return pd.DataFrame(columns, index=frame.index)


def predict_probabilities(booster: xgb.Booster, inputs: pd.DataFrame, n_bands: int) -> np.ndarray:
    """Probabilities (rows x bands, float64) of encoded inputs, as XGBClassifier.predict_proba."""
    if inputs.empty:
        return np.empty((0, n_bands))
    raw = booster.inplace_predict(inputs, validate_features=True)
    if n_bands == 2:
        # binary:logistic gives P(band 1); the classifier derives P(band 0) in float32 too.
        raw = np.vstack((1.0 - raw, raw)).T
    return np.asarray(raw, dtype=np.float64).reshape(len(inputs), n_bands)


def predict_frame(booster: xgb.Booster, schema: ModelSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """The prediction for raw rows: the band the model's decision rule gives, then one
    probability column per band label; the frame's index is kept."""
    inputs = encode_inputs(frame, schema)
    probabilities = predict_probabilities(booster, inputs, schema.n_bands)
    result = pd.DataFrame(probabilities, columns=list(schema.band_labels), index=frame.index)
    result.insert(0, PREDICTED_BAND, schema.bands(probabilities))
    return result


def write_bundle(booster: xgb.Booster, schema: ModelSchema, directory: Path) -> dict[str, str]:
    """Write the booster and its metadata into ``directory``; the pyfunc artifacts mapping."""
    check_booster(schema, booster)
    directory.mkdir(parents=True, exist_ok=True)
    booster_path = directory / schema.booster_file
    booster.save_model(booster_path)
    metadata_path = schema.write(directory / METADATA_FILE)
    return {"booster": str(booster_path), "metadata": str(metadata_path)}


def load_bundle(directory: Path) -> tuple[xgb.Booster, ModelSchema]:
    """The booster and schema from a logged model directory or its ``artifacts`` folder."""
    folder = directory / ARTIFACTS_DIR if (directory / ARTIFACTS_DIR).is_dir() else directory
    schema = ModelSchema.read(folder / METADATA_FILE)
    booster_path = folder / schema.booster_file
    if not booster_path.is_file():
        raise ModelSchemaError(f"{booster_path} does not exist: the model has no booster")
    booster = xgb.Booster(model_file=str(booster_path))
    check_booster(schema, booster)
    return booster, schema


class SalaryBandModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: raw candidate rows in, predicted band and band probabilities out.

    Holds nothing when pickled; the booster and schema are read from the model's artifacts.
    """

    def __init__(self) -> None:
        self._booster: xgb.Booster | None = None
        self._schema: ModelSchema | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self._booster, self._schema = load_bundle(Path(context.artifacts["metadata"]).parent)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        if self._booster is None or self._schema is None:
            raise ModelSchemaError("the model is not loaded: load it with mlflow.pyfunc")
        return predict_frame(self._booster, self._schema, model_input)


def model_signature(schema: ModelSchema) -> ModelSignature:
    """Inputs: integers as long, categories as strings; outputs: band index and probabilities.

    Built from the schema rather than inferred from an example: inference warns about integer
    columns and depends on the example's pandas dtypes.
    """
    inputs = [
        ColSpec("string" if name in schema.category_levels else "long", name)
        for name in schema.features
    ]
    outputs = [ColSpec("long", PREDICTED_BAND)]
    outputs += [ColSpec("double", label) for label in schema.band_labels]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def make_input_example(frame: pd.DataFrame, schema: ModelSchema, rows: int = 5) -> pd.DataFrame:
    """The first rows of the model's columns as a caller sends them: strings and integers."""
    head = frame.loc[:, list(schema.features)].head(rows).reset_index(drop=True)
    return pd.DataFrame(
        {
            name: (
                head[name].astype(object).astype(str)
                if name in schema.category_levels
                else head[name].astype(np.int64)
            )
            for name in schema.features
        }
    )


def pip_requirements() -> list[str]:
    """The third-party packages predict needs, pinned to the installed versions."""
    return [f"{name}=={version(name)}" for name in _REQUIREMENTS]


def log_model(booster: xgb.Booster, schema: ModelSchema, input_example: pd.DataFrame) -> ModelInfo:
    """Log the model as ``model`` in the active run; the example is ``make_input_example``'s.

    The example is predicted first, so a model that cannot decode it is never logged.
    """
    predict_frame(booster, schema, input_example)
    with tempfile.TemporaryDirectory(prefix="payband-model-") as tmp:
        artifacts = write_bundle(booster, schema, Path(tmp))
        with _without_uv_files(), warnings.catch_warnings():
            # MLflow compares a DataFrame's columns with a range when it saves the example.
            # (pandas 3's Pandas4Warning; matched by text, as pandas 2 lacks the class).
            warnings.filterwarnings(
                "ignore",
                message="Operation with range is deprecated",
                module=r"mlflow\.models\.utils",
            )
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=SalaryBandModel(),
                artifacts=artifacts,
                signature=model_signature(schema),
                input_example=input_example,
                pip_requirements=pip_requirements(),
                metadata={"payband_model": _metadata_summary(schema)},
            )


@contextmanager
def _without_uv_files() -> Iterator[None]:
    """Keep MLflow from copying uv.lock and pyproject.toml from the working directory.

    Those would be the whole workspace's, and differ with where the command runs; the pinned
    requirements say what the model needs. An explicit MLFLOW_UV_AUTO_DETECT wins.
    """
    if _UV_AUTO_DETECT in os.environ:
        yield
        return
    os.environ[_UV_AUTO_DETECT] = "false"
    try:
        yield
    finally:
        os.environ.pop(_UV_AUTO_DETECT, None)


def _metadata_summary(schema: ModelSchema) -> dict[str, Any]:
    # Shown in the MLmodel file: enough to tell models apart without opening the artifacts.
    return {
        "format": schema.format,
        "features": list(schema.features),
        "band_labels": list(schema.band_labels),
        "use_protected": schema.use_protected,
        "train_uri": schema.train_uri,
    }
