"""The client of MLServer's V2 REST endpoint: one pooled aiohttp session, timeouts, and
answers turned into ``payband_contracts`` predictions with their explanations in words."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import aiohttp
import orjson

from payband_contracts import (
    FEATURE_CATALOGUE,
    BandProbability,
    Candidate,
    Explanation,
    FeatureContribution,
    ModelRef,
    Prediction,
    SalaryBand,
    SalaryBands,
)
from payband_gateway.metrics import GatewayMetrics

__all__ = [
    "InferenceClient",
    "InferenceError",
    "InferenceFailed",
    "InferenceUnavailable",
    "ModelInfo",
    "summary_sentence",
]

# Served from a model directory rather than the registry, a model has no version.
UNVERSIONED = "unversioned"
# Upstream bodies kept in errors and the audit log.
_UPSTREAM_BODY_CHARS = 4_000


class InferenceError(Exception):
    """Inference did not give an answer; `status`, `code` and `upstream_body` say how."""

    status = 502
    code = "inference_failed"

    def __init__(self, message: str, upstream_body: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.upstream_body = upstream_body


class InferenceUnavailable(InferenceError):
    """MLServer cannot be reached, is not ready, or did not answer in time: retry later."""

    status = 503
    code = "inference_unavailable"


class InferenceFailed(InferenceError):
    """MLServer answered with an error or with something that is not a valid answer."""


@dataclass(frozen=True)
class ModelInfo:
    """What the gateway needs to know about the served model (from V2 metadata)."""

    ref: ModelRef
    inputs: tuple[tuple[str, str], ...]  # (feature, V2 datatype) in the model's order
    bands: tuple[SalaryBand, ...]

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ModelInfo:
        try:
            parameters = metadata.get("parameters") or {}
            labels = tuple(json.loads(parameters["band_labels"]))
            bands = SalaryBands(edges_usd=tuple(json.loads(parameters["band_edges_usd"]))).bands
            inputs = tuple((str(i["name"]), str(i["datatype"])) for i in metadata["inputs"])
            name = str(parameters.get("model_name") or metadata["name"])
            version = parameters.get("model_version") or UNVERSIONED
        except (KeyError, TypeError, ValueError) as error:
            raise InferenceFailed(
                f"the inference server's model metadata is unusable: {error}"
            ) from None
        if tuple(band.label for band in bands) != labels:
            raise InferenceFailed(
                f"the model's band labels {list(labels)} do not match its band edges"
            )
        unknown = [name for name, _ in inputs if name not in FEATURE_CATALOGUE.names]
        if unknown:
            raise InferenceFailed(f"the model takes inputs outside the catalogue: {unknown}")
        return cls(ModelRef(name=name, version=str(version)), inputs, bands)


def _size_word(contribution: float) -> str:
    size = abs(contribution)
    if size >= 1.0:
        return "strongly"
    if size >= 0.25:
        return "moderately"
    return "slightly"


def summary_sentence(contribution: FeatureContribution, band_label: str) -> str:
    """E.g. 'Education is Bachelor's degree: moderately raises the likelihood of >50K (+0.74)'.

    Sizes are log-odds: at least 1 is 'strongly', at least 0.25 'moderately', else 'slightly'.
    """
    direction = "raises" if contribution.contribution >= 0 else "lowers"
    value = contribution.value_label or str(contribution.value)
    return (
        f"{contribution.label} is {value}: {_size_word(contribution.contribution)} {direction} "
        f"the likelihood of {band_label} ({contribution.contribution:+.2f})"
    )


def _rows(output: dict[str, Any], rows: int) -> list[list[Any]]:
    data = output["data"]
    if len(data) % rows:
        raise ValueError(f"output {output['name']} has {len(data)} values for {rows} rows")
    width = len(data) // rows
    return [data[i * width : (i + 1) * width] for i in range(rows)]


class InferenceClient:
    """Predictions from MLServer; use as ``async with InferenceClient(...) as client:``."""

    def __init__(
        self,
        base_url: str,
        model_name: str,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        connections: int,
        summary_features: int,
        metrics: GatewayMetrics,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._model_name = model_name
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._timeout_s = timeout_s
        self._connections = connections
        self._summary_features = summary_features
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._info: ModelInfo | None = None
        self._info_lock = asyncio.Lock()

    async def __aenter__(self) -> InferenceClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=30),
            timeout=self._timeout,
            # MLServer would gzip its answers: CPU on both sides for bytes that stay on the host
            # or in the cluster.
            headers={"Accept-Encoding": "identity"},
            json_serialize=lambda value: orjson.dumps(value).decode(),
            # Proxies from the environment must not capture traffic to the inference server.
            trust_env=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def model_path(self) -> str:
        return f"{self._base}/v2/models/{self._model_name}"

    async def _call(
        self, method: str, url: str, body: bytes | None = None, *, stage: str
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or an InferenceError saying what went wrong."""
        assert self._session is not None, "use the client inside `async with`"
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
            ) as response:
                text = (await response.read()).decode("utf-8", errors="replace")
                if response.status == 200:
                    # MLServer's readiness answers have no body.
                    answer = orjson.loads(text) if text.strip() else {}
                    if not isinstance(answer, dict):
                        raise InferenceFailed(
                            f"the inference server's {stage} answer is not a JSON object",
                            text[:_UPSTREAM_BODY_CHARS],
                        )
                    outcome = "ok"
                    return answer
                upstream = text[:_UPSTREAM_BODY_CHARS]
                if response.status in {502, 503, 504}:
                    outcome = "unavailable"
                    raise InferenceUnavailable(
                        f"the inference server is not ready ({stage}: HTTP {response.status})",
                        upstream,
                    )
                raise InferenceFailed(
                    f"the inference server refused the {stage} (HTTP {response.status})", upstream
                )
        except TimeoutError:
            outcome = "timeout"
            raise InferenceUnavailable(
                f"the inference server did not answer the {stage} within {self._timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as error:
            outcome = "unavailable"
            raise InferenceUnavailable(
                f"cannot reach the inference server at {self._base} ({stage}): "
                f"{type(error).__name__}"
            ) from None
        except orjson.JSONDecodeError:
            outcome = "error"
            raise InferenceFailed(f"the inference server's {stage} answer is not JSON") from None
        finally:
            self._metrics.upstream_duration.labels(stage=stage, outcome=outcome).observe(
                time.perf_counter() - started
            )

    async def model_info(self, *, refresh: bool = False) -> ModelInfo:
        """The served model's metadata, fetched once and again when the model changes."""
        known = self._info
        if known is not None and not refresh:
            return known
        try:
            # Waiting for another request's fetch counts against this request's time too.
            async with asyncio.timeout(self._timeout_s), self._info_lock:
                if self._info is None or self._info is known:
                    self._info = ModelInfo.from_metadata(
                        await self._call("GET", self.model_path, stage="metadata")
                    )
                    self._metrics.set_model(self._info.ref)
                return self._info
        except TimeoutError:
            raise InferenceUnavailable(
                f"the inference server's model metadata did not come within {self._timeout_s:g} s"
            ) from None

    async def ready(self) -> None:
        """InferenceError unless the model is loaded and ready."""
        await self._call("GET", f"{self.model_path}/ready", stage="readiness check")
        await self.model_info()

    async def predict(
        self, candidates: Sequence[Candidate], ids: Sequence[UUID]
    ) -> list[Prediction]:
        """One V2 call for all candidates; their predictions in the same order."""
        info = await self.model_info()
        rows = len(candidates)
        request = {
            "id": str(ids[0]) if rows == 1 else None,
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": [rows, 1],
                    "data": [candidate.value_of(name) for candidate in candidates],
                }
                for name, datatype in info.inputs
            ],
        }
        if request["id"] is None:
            del request["id"]
        answer = await self._call(
            "POST", f"{self.model_path}/infer", orjson.dumps(request), stage="inference"
        )
        answered_by = str(answer.get("model_version") or UNVERSIONED)
        if answered_by != info.ref.version:
            # MLServer loaded another version meanwhile: describe the answer by that one, and
            # never record an answer under a version that did not give it.
            info = await self.model_info(refresh=True)
            if answered_by != info.ref.version:
                raise InferenceFailed(
                    f"the answer comes from model version {answered_by}, but the inference "
                    f"server describes version {info.ref.version}",
                    orjson.dumps(answer).decode()[:_UPSTREAM_BODY_CHARS],
                )
        try:
            return self._predictions(answer, info, candidates, ids)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise InferenceFailed(
                f"the inference server's answer is unusable: {error}",
                orjson.dumps(answer).decode()[:_UPSTREAM_BODY_CHARS],
            ) from None

    def _predictions(
        self,
        answer: dict[str, Any],
        info: ModelInfo,
        candidates: Sequence[Candidate],
        ids: Sequence[UUID],
    ) -> list[Prediction]:
        rows = len(candidates)
        outputs = {output["name"]: output for output in answer["outputs"]}
        features = json.loads(answer["parameters"]["features"])
        n_bands = len(info.bands)
        bands = _rows(outputs["band"], rows)
        probabilities = _rows(outputs["probabilities"], rows)
        contributions = _rows(outputs["contributions"], rows)
        base_values = _rows(outputs["base_value"], rows)
        created_at = datetime.now(UTC)
        labels = {name: FEATURE_CATALOGUE[name].label for name in features}
        predictions = []
        for row, candidate in enumerate(candidates):
            # As served: the model's decision rule, not the most probable band recomputed here.
            band = int(bands[row][0])
            start = band * len(features)
            explained = contributions[row][start : start + len(features)]
            values = {name: candidate.value_of(name) for name in features}
            items = sorted(
                (
                    FeatureContribution(
                        feature=name,
                        label=labels[name],
                        value=values[name],
                        value_label=FEATURE_CATALOGUE[name].display(values[name]),
                        contribution=float(explained[i]),
                    )
                    for i, name in enumerate(features)
                ),
                key=lambda item: -abs(item.contribution),
            )
            band_label = info.bands[band].label
            predictions.append(
                Prediction(
                    id=ids[row],
                    created_at=created_at,
                    model=info.ref,
                    band=info.bands[band],
                    probabilities=[
                        BandProbability(index=i, label=info.bands[i].label, probability=float(p))
                        for i, p in enumerate(probabilities[row][:n_bands])
                    ],
                    explanation=Explanation(
                        band_index=band,
                        base_value=float(base_values[row][band]),
                        contributions=items,
                        summary=[
                            summary_sentence(item, band_label)
                            for item in items[: self._summary_features]
                        ],
                    ),
                )
            )
        return predictions
