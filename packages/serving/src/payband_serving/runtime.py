"""The MLServer runtime: salary bands with exact explanations over the V2 inference protocol.

Request: one input per model feature, named as the feature, shape ``[N]`` or ``[N, 1]``;
categorical features as ``BYTES`` (the category names of ``payband_contracts``), integer
features as an integer datatype (whole ``FP32``/``FP64`` values are accepted too).

Response outputs (all with N rows first, so adaptive batching can split them):

- ``band``           INT64 ``[N, 1]``     the band of the model's decision rule (its
  ``payband_model.json``) applied to the probabilities: a cut-off for two bands, offsets for
  more, the most probable band for a model without a rule
- ``probabilities``  FP64  ``[N, B]``     one per band, summing to 1
- ``contributions``  FP64  ``[N, B, F]``  exact TreeSHAP contribution of each feature to each
  band's raw score, features in the order of the ``features`` response parameter
- ``base_value``     FP64  ``[N, B]``     each band's expected raw score

For every row and band, base value plus contributions equals the model's raw score
(log-odds); a binary model's lower band is explained as the negation of the upper band.
Response parameters name the model version, the feature order and the band labels; the
model's metadata also states the decision rule (``decision_rule``, its JSON, and
``decision_rule_description``, in words).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Sequence
from multiprocessing.util import Finalize
from pathlib import Path
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import MLServerError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    Parameters,
    RequestInput,
    ResponseOutput,
)
from mlserver.utils import get_model_uri
from prometheus_client import Histogram

from payband_contracts.errors import first_line
from payband_serving import __version__
from payband_serving.explain import Explained, Explainer, InputError
from payband_serving.settings import ServingSettings
from payband_serving.source import ModelSource, is_mlflow_uri, load_booster, resolve

__all__ = [
    "IMPLEMENTATION",
    "OUTPUTS",
    "PLATFORM",
    "ROWS_METRIC",
    "InvalidRequest",
    "SalaryBandRuntime",
]

PLATFORM = "xgboost-treeshap"
OUTPUTS = ("band", "probabilities", "contributions", "base_value")
# Rows per call of predict: with adaptive batching one call serves several requests.
ROWS_METRIC = "payband_inference_rows"
_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
_rows_histogram: Histogram | None = None
_INTEGER_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_NUMBER_TYPES = _INTEGER_TYPES | {"FP32", "FP64"}
# Requests up to this many rows are explained on the event loop (cheaper than a thread hop).
_IN_LOOP_ROWS = 64


class InvalidRequest(MLServerError):
    """A request the model cannot answer: V2 error 400 (gRPC INVALID_ARGUMENT), one line.

    From a parallel worker MLServer passes on the status and prefixes the message with this
    class's import path.
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg, status_code=400)


def _rows_metric() -> Histogram:
    """Created on first use, not at import: MLServer switches Prometheus to its multiprocess
    mode (parallel workers) before loading models, and only later metrics follow the switch.
    Served by MLServer's metrics endpoint in both modes (its own registry is not)."""
    global _rows_histogram  # one histogram per process
    if _rows_histogram is None:
        _rows_histogram = Histogram(
            ROWS_METRIC,
            "Rows answered per inference call; with adaptive batching, one call serves "
            "several requests",
            ["model", "version"],
            buckets=_ROWS_BUCKETS,
        )
    return _rows_histogram


def _datatype(input_: RequestInput) -> str:
    return getattr(input_.datatype, "value", str(input_.datatype))


class SalaryBandRuntime(MLModel):
    """Loads one payband model (a folder or an MLflow URI) and answers with explanations."""

    async def load(self) -> bool:
        settings = ServingSettings()
        parameters = self.settings.parameters
        extra: dict[str, Any] = dict((parameters.extra if parameters else None) or {})
        uri = await get_model_uri(self.settings)
        download_dir = None
        if is_mlflow_uri(uri):
            download_dir = Path(tempfile.mkdtemp(prefix="payband-serving-"))
            # MLServer never unloads models at shutdown, and workers end without atexit:
            # multiprocessing's finalizers run in both, so the copy goes with the process.
            Finalize(
                self,
                shutil.rmtree,
                args=(str(download_dir),),
                kwargs={"ignore_errors": True},
                exitpriority=0,
            )
        tracking_uri = str(extra.get("mlflow_tracking_uri") or settings.mlflow_tracking_uri)
        # Resolving and downloading block: keep the server's event loop free meanwhile.
        source: ModelSource = await asyncio.to_thread(
            resolve, uri, tracking_uri=tracking_uri, download_dir=download_dir or Path(uri)
        )
        booster = await asyncio.to_thread(load_booster, source.folder, source.schema)
        # With adaptive batching, one request's error reaches every request merged with it:
        # then errors name the rule but do not quote another client's values.
        self._batching = self.settings.max_batch_size > 1 and self.settings.max_batch_time > 0
        self._explainer = Explainer(
            booster, source.schema, threads=settings.threads, show_values=not self._batching
        )
        # The limit holds per request: a merged call may hold max_batch_size requests.
        self._max_rows = settings.max_rows * (self.settings.max_batch_size if self._batching else 1)
        self._model_version = source.version or (parameters.version if parameters else None)
        self._registered_name = source.registered_name or extra.get("registered_name")
        self._source_uri = str(extra.get("source_uri") or source.uri)
        self._run_id = source.run_id or extra.get("run_id")
        schema = source.schema
        self._response_parameters = {
            "features": json.dumps(list(schema.features)),
            "band_labels": json.dumps(list(schema.band_labels)),
        }
        self.inputs = [
            MetadataTensor(
                name=name,
                datatype="BYTES" if name in schema.category_levels else "INT64",
                shape=[-1, 1],
                parameters=Parameters(
                    content_type="str" if name in schema.category_levels else "np",
                    categories=json.dumps(list(schema.category_levels[name]))
                    if name in schema.category_levels
                    else None,
                ),
            )
            for name in schema.features
        ]
        bands, features = schema.n_bands, len(schema.features)
        self.outputs = [
            MetadataTensor(name="band", datatype="INT64", shape=[-1, 1]),
            MetadataTensor(name="probabilities", datatype="FP64", shape=[-1, bands]),
            MetadataTensor(name="contributions", datatype="FP64", shape=[-1, bands, features]),
            MetadataTensor(name="base_value", datatype="FP64", shape=[-1, bands]),
        ]
        self._rows = _rows_metric().labels(model=self.name, version=self._model_version or "")
        return True

    async def metadata(self) -> MetadataModelResponse:
        schema = self._explainer.schema
        return MetadataModelResponse(
            name=self.name,
            platform=PLATFORM,
            versions=[self._model_version] if self._model_version else [],
            inputs=self.inputs,
            outputs=self.outputs,
            parameters=Parameters(
                model_name=self._registered_name or self.name,
                model_version=self._model_version,
                model_uri=self._source_uri,
                run_id=self._run_id,
                training_data_uri=schema.train_uri,
                features_uri=schema.features_uri,
                test_uri=schema.test_uri,
                data_source=schema.source,
                band_labels=json.dumps(list(schema.band_labels)),
                band_edges_usd=json.dumps(list(schema.band_edges_usd)),
                features=json.dumps(list(schema.features)),
                use_protected_attributes=schema.use_protected,
                decision_rule=schema.decision.model_dump_json(),
                decision_rule_description=schema.decision.describe(schema.band_labels),
                explanation="exact TreeSHAP (XGBoost pred_contribs)",
                payband_serving_version=__version__,
            ),
        )

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        wanted = self._requested_outputs(payload)
        try:
            matrix = self._explainer.encode(self._columns(payload))
        except InputError as exc:
            raise InvalidRequest(str(exc)) from None
        if len(matrix) > _IN_LOOP_ROWS:
            # XGBoost releases the GIL: health checks and other requests go on meanwhile.
            explained = await asyncio.to_thread(self._explainer.explain, matrix)
        else:
            explained = self._explainer.explain(matrix)
        self._rows.observe(len(matrix))
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self._model_version,
            parameters=Parameters(**self._response_parameters),
            outputs=[_output(name, explained) for name in wanted],
        )

    def _requested_outputs(self, payload: InferenceRequest) -> Sequence[str]:
        # Adaptive batching merges the requested outputs of different clients: all of them
        # are returned then, so no client misses one it did not ask to leave out.
        if not payload.outputs or self._batching:
            return OUTPUTS
        names = [output.name for output in payload.outputs]
        if unknown := [name for name in names if name not in OUTPUTS]:
            raise InvalidRequest(
                f"unknown outputs requested: {', '.join(unknown)}; "
                f"the model gives {', '.join(OUTPUTS)}"
            )
        return [name for name in OUTPUTS if name in names]

    def _columns(self, payload: InferenceRequest) -> dict[str, Sequence[Any] | np.ndarray]:
        schema = self._explainer.schema
        if not payload.inputs:
            raise InvalidRequest(
                f"the request has no inputs; send one per feature: {', '.join(schema.features)}"
            )
        columns: dict[str, Sequence[Any] | np.ndarray] = {}
        for item in payload.inputs:
            name = item.name
            if name in columns:
                raise InvalidRequest(f"input {name!r} is given twice")
            if name not in schema.features:
                raise InvalidRequest(
                    f"unexpected input {name!r}; the model takes {', '.join(schema.features)}"
                )
            columns[name] = self._column(item, name in schema.category_levels)
        return columns

    def _column(self, item: RequestInput, categorical: bool) -> Sequence[Any] | np.ndarray:
        name, shape, datatype = item.name, list(item.shape), _datatype(item)
        if not 1 <= len(shape) <= 2 or shape[0] < 0 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidRequest(f"input {name!r} has shape {shape}; expected [N] or [N, 1]")
        rows = shape[0]
        if rows > self._max_rows:
            raise InvalidRequest(
                f"input {name!r} has {rows} rows; a request holds at most {self._max_rows}"
            )
        if categorical and datatype != "BYTES":
            raise InvalidRequest(
                f"input {name!r} is categorical and must be BYTES (category names), not {datatype}"
            )
        if not categorical and datatype not in _NUMBER_TYPES:
            raise InvalidRequest(f"input {name!r} must be INT64 (whole numbers), not {datatype}")
        try:
            values = self._categories(item) if categorical else self._numbers(item)
        except (ValueError, TypeError, OverflowError) as exc:
            reason = first_line(exc)
            raise InvalidRequest(
                f"input {name!r} does not hold {rows} values of {datatype}: {reason}"
            ) from None
        if len(values) != rows:
            raise InvalidRequest(f"input {name!r} has shape {shape} but holds {len(values)} values")
        return values

    @staticmethod
    def _numbers(item: RequestInput) -> np.ndarray:
        data = item.data.root
        if isinstance(data, bytes | bytearray):
            # gRPC raw contents: binary, typed by the declared datatype.
            return np.ravel(NumpyCodec.decode_input(item))
        # JSON and typed gRPC contents: the values as sent, not cast to the declared type,
        # so 38.5, true or "38" declared INT64 are refused rather than read as 38 or 1.
        return np.asarray(_flat(data), dtype=object)

    @staticmethod
    def _categories(item: RequestInput) -> list[Any]:
        data = item.data.root
        if isinstance(data, bytes | bytearray):
            return StringCodec.decode_input(item)
        values = _flat(data)
        if wrong := [value for value in values if not isinstance(value, str | bytes)]:
            raise TypeError(f"category names are text, not {type(wrong[0]).__name__}")
        return values


def _flat(data: Any) -> list[Any]:
    """The values of a (possibly nested) JSON array, in row-major order."""
    if not isinstance(data, list | tuple):
        return [data]
    values: list[Any] = []
    for value in data:
        values.extend(_flat(value) if isinstance(value, list | tuple) else [value])
    return values


def _output(name: str, explained: Explained) -> ResponseOutput:
    array: np.ndarray = getattr(explained, name)
    if name == "band":
        array = array.reshape(-1, 1)
    return ResponseOutput(
        name=name,
        shape=list(array.shape),
        datatype="INT64" if name == "band" else "FP64",
        data=array.ravel().tolist(),
    )


# What model-settings.json names as the implementation.
IMPLEMENTATION = f"{SalaryBandRuntime.__module__}.{SalaryBandRuntime.__qualname__}"
