"""Serving latency over REST, and exact explanations against shap's permutation explainer.

    uv run python benchmarks/serving.py [--model-dir DIR | --model-uri URI | --home DIR]
                                        [--tracking-uri URI] [--trees 200] [--depth 6]
                                        [--workers N] [--threads N] [--single-requests 2000]
                                        [--batch-repeats 20] [--permutation-rows 1000] [--no-fail]

The model: by default the Adult features snapshot with one band edge at 50,000 USD, built as
benchmarks/training.py builds it (embedded PostgreSQL, temporary PAYBAND_HOME,
payband_data.steps ingest -> load -> dbt build -> snapshot), split and committed by
payband_training, then one final XGBoost fit (payband_training.search.fit_final) with FIXED
parameters from the middle of the search space (--trees / --depth change two of them), written
as a model folder (booster.json + payband_model.json) by payband_training.model.write_bundle.
Candidates are the held-out (test) rows; shap's background is 100 training rows.
With --model-dir, that folder is served instead and the candidates are synthetic (catalogue
ranges, payband_testing.model.synthetic_candidates).
With --model-uri (models:/NAME@ALIAS, models:/NAME/VERSION or runs:/...), what is actually
served: a registered version, resolved by payband_serving.source against the MLflow store of
--tracking-uri (default PAYBAND_MLFLOW_TRACKING_URI) and served from that URI as a
deployment serves it; the server must report the version resolved and its decision rule.
--home DIR takes the tracking URI of the local stack in that PAYBAND_HOME (`payband demo` /
`up`) the way `payband up` does (payband.stack.local_postgres): its PostgreSQL is started and
stopped once the server has loaded the model, unless a `payband up` runs from the home, whose
cluster is used as it is. --tracking-uri or --home without --model-uri serve
models:/salary-band@champion. Candidates are synthetic, except with --home when the home's
versioned store holds the version's held-out (test) and training splits: then its own
held-out rows, and 100 training rows as shap's background.
The model's version, decision rule and size are printed: TreeSHAP's cost grows with trees x
leaves x depth^2.

Measured against a real ``payband-serving serve`` (MLServer) on loopback, with default
settings (in-process inference, adaptive batching off; --workers N passes --workers N), over
V2 REST with one keep-alive httpx client, after a warm-up:
(1) one candidate with its explanation (band, probabilities, contributions, base_value),
    --single-requests sequential requests, each a different candidate: p50, p95, p99.
    Target: p50 < 5 ms.
(2) a batch of 1,000 candidates with explanations, --batch-repeats requests: p50, p95.
    Target: p50 < 100 ms. The same rows in process (Explainer.encode + .explain, no HTTP) show
    how much of it is TreeSHAP and how much transport, JSON and MLServer.
    A request is timed from sending its (pre-encoded) JSON body to having the whole response
    body; the client's own JSON encoding and decoding are reported apart.
    Every response is checked afterwards: base_value + sum(contributions) must equal
    booster.predict(output_margin=True) on independently encoded rows to 1e-4, and the band
    must be the model's decision rule on the served probabilities (ModelSchema.bands); how
    many rows that puts in another band than the most probable one is printed.
(3) explanation cost: exact contributions (Explainer.explain, XGBoost pred_contribs) against
    shap.PermutationExplainer on the same rows and the same output (the upper band's raw
    margin, computed from the encoded matrix through an XGBoost DMatrix), background 100
    training rows, both timed warm. The checked ratio uses the permutation explainer as shap
    ships it (max_evals 500); expected 100x or more. For a lower bound, also its cheapest
    setting, max_evals = 2 * features + 1 (one antithetic permutation). With
    --permutation-rows below 1,000 the permutation times are extrapolated linearly. The
    permutation estimates are compared with shap.ExactExplainer on the same game (its
    approximation error) and with the served TreeSHAP values (which use XGBoost's
    cover-weighted expectation as reference, not the 100 background rows).
Wall times are what the targets check; CPU times (all threads) are shown next to in-process
wall times because other work on a shared machine stretches the wall clock.
Prints a table; exits 1 if a target is missed (0 with --no-fail) and always if a response
is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pandas as pd
import shap
import xgboost as xgb
from _common import (
    BACKGROUND_ROWS,
    MIDDLE_PARAMS,
    Candidates,
    adult_model,
    model_size,
    raw_rows,
)
from _report import Row, print_table, timed  # benchmarks/ is the script's directory

from payband.home import Home
from payband_contracts.database import redact
from payband_contracts.errors import first_line
from payband_contracts.model import DecisionRule, ModelSchema
from payband_serving.explain import Explainer
from payband_serving.settings import ServingSettings
from payband_serving.source import ModelSourceError, resolve
from payband_testing.model import synthetic_candidates
from payband_testing.serving import InferenceServer, inference_server
from payband_training.model import encode_inputs, load_bundle

SINGLE_TARGET_MS = 5.0
BATCH_TARGET_MS = 100.0
RATIO_EXPECTED = 100.0
MARGIN_TOLERANCE = 1e-4
BATCH_ROWS = 1_000
WARMUP_SINGLE = 100
WARMUP_BATCHES = 3
IN_PROCESS_SINGLE = 200
SHAP_WARMUP_ROWS = 5
SHAP_EXACT_ROWS = 100
SYNTHETIC_ROWS = 10_000
CHAMPION_URI = "models:/salary-band@champion"

T = TypeVar("T")


class WrongAnswer(RuntimeError):
    """A response that does not hold what the model computes."""


def synthetic(schema: ModelSchema, why: str = "") -> Candidates:
    columns = list(schema.features)
    return Candidates(
        held_out=synthetic_candidates(SYNTHETIC_ROWS, seed=1).loc[:, columns],
        background=synthetic_candidates(BACKGROUND_ROWS, seed=2).loc[:, columns],
        origin="synthetic (catalogue ranges)" + (f"; {why}" if why else ""),
        background_origin="synthetic",
    )


def stored(schema: ModelSchema, store_dir: Path) -> Candidates:
    """The version's own held-out rows (and training rows as background) from a local versioned
    store; synthetic ones, saying why, when the store does not hold its splits."""
    # Imported here: they take seconds to import, and only --home needs them.
    from payband_data.errors import DataError
    from payband_data.settings import DataSettings
    from payband_training.features import FeaturesError, read_features
    from payband_training.split import TEST_FILE, TRAIN_FILE

    settings = DataSettings(store="local", store_dir=store_dir)
    try:
        test = read_features(schema.test_uri, settings, file_name=TEST_FILE).frame
        train = read_features(schema.train_uri, settings, file_name=TRAIN_FILE).frame
    except (DataError, FeaturesError) as error:
        return synthetic(schema, f"the held-out split is not readable: {first_line(error)}")
    background = train.sample(n=min(BACKGROUND_ROWS, len(train)), random_state=0)
    return Candidates(
        held_out=raw_rows(test, schema),
        background=raw_rows(background, schema),
        origin=f"the version's held-out split ({len(test):,} rows, {schema.test_uri})",
        background_origin="training",
    )


@dataclass(frozen=True)
class Served:
    """What the server is given, and what the registry says of it."""

    uri: str  # --model-uri, or a model folder
    folder: Path  # the model's files, for the checks and the in-process runs
    registered_name: str | None = None
    version: str | None = None
    run_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # the server's settings

    def describe(self) -> str:
        if self.registered_name and self.version:
            return f"{self.registered_name} version {self.version} ({self.uri}, run {self.run_id})"
        if self.run_id:
            return f"run {self.run_id} ({self.uri}), not registered"
        return f"not registered: the folder {self.uri}"


def registered(uri: str, tracking_uri: str, download_dir: Path) -> Served:
    """The version behind ``uri`` (an alias resolved now), downloaded as the server does."""
    try:
        source = resolve(uri, tracking_uri=tracking_uri, download_dir=download_dir)
    except ModelSourceError as error:
        sys.exit(f"error: {error}")
    return Served(
        uri=uri,
        folder=source.folder,
        registered_name=source.registered_name,
        version=source.version,
        run_id=source.run_id,
        env={"PAYBAND_MLFLOW_TRACKING_URI": tracking_uri},
    )


def check_metadata(server: InferenceServer, served: Served, schema: ModelSchema) -> None:
    """WrongAnswer unless the server serves the version resolved here, with its rule."""
    response = httpx.get(f"{server.url}/v2/models/{server.model_name}", timeout=30)
    if response.status_code != 200:
        raise WrongAnswer(f"metadata: HTTP {response.status_code}: {response.text[:300]}")
    parameters = response.json().get("parameters") or {}
    if served.version is not None and parameters.get("model_version") != served.version:
        raise WrongAnswer(
            f"the server serves version {parameters.get('model_version')}, "
            f"not version {served.version} resolved before it started"
        )
    if DecisionRule.model_validate_json(parameters["decision_rule"]) != schema.decision:
        raise WrongAnswer(f"the server states the decision rule {parameters['decision_rule']}")


@contextlib.contextmanager
def home_tracking_uri(home: Home) -> Iterator[str]:
    """The MLflow tracking URI of the local stack in ``home``, as `payband up` obtains it. A
    stack that runs from it keeps its PostgreSQL; otherwise the home is locked, its cluster
    started, and stopped again on exit."""
    from rich.console import Console

    from payband.lifecycle import LifecycleError
    from payband.stack import launcher, local_postgres, lock_home
    from payband_local.cluster import LocalPostgres, LocalPostgresError

    with contextlib.ExitStack() as stack:
        try:
            cluster = LocalPostgres(home.root)
            if not (cluster.data_dir / "PG_VERSION").is_file():
                sys.exit(
                    f"error: {home.root} holds no local stack (no PostgreSQL cluster): run "
                    f"`PAYBAND_HOME={home.root} uv run payband demo` first"
                )
            if launcher(home) is None:
                stack.enter_context(lock_home(home, "benchmarks/serving.py"))
                postgres = stack.enter_context(local_postgres(home, Console(stderr=True)))
                uri = postgres.databases.mlflow
            else:
                # `payband up` (or the demo) runs from this home: the cluster is theirs.
                uri = cluster.url("mlflow")
        except (LifecycleError, LocalPostgresError) as error:
            sys.exit(f"error: PAYBAND_HOME {home.root}: {first_line(error)}")
        yield uri


def band_margins(booster: xgb.Booster, schema: ModelSchema, frame: pd.DataFrame) -> np.ndarray:
    """Each band's raw score [N, B], encoded by training's code rather than the Explainer's."""
    typed = encode_inputs(frame, schema)
    raw = booster.predict(xgb.DMatrix(typed, enable_categorical=True), output_margin=True)
    if schema.n_bands == 2:
        return np.column_stack((-raw, raw))
    return np.asarray(raw).reshape(len(frame), schema.n_bands)


def v2_request(frame: pd.DataFrame, schema: ModelSchema) -> bytes:
    inputs = [
        {
            "name": name,
            "shape": [len(frame), 1],
            "datatype": "BYTES" if name in schema.category_levels else "INT64",
            "data": frame[name].tolist(),
        }
        for name in schema.features
    ]
    return json.dumps({"inputs": inputs}).encode()


def margin_error(body: bytes, expected: np.ndarray, schema: ModelSchema) -> tuple[float, int]:
    """The largest |base_value + sum(contributions) - margin| of a response and how many of
    its rows are not in their most probable band; WrongAnswer if an output is missing,
    misshapen or inconsistent, or a band is not the model's decision rule."""
    response = json.loads(body)
    outputs = {
        output["name"]: np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])
        for output in response.get("outputs", [])
    }
    rows, bands = expected.shape
    shapes = {
        "band": (rows, 1),
        "probabilities": (rows, bands),
        "contributions": (rows, bands, len(schema.features)),
        "base_value": (rows, bands),
    }
    for name, shape in shapes.items():
        found = outputs[name].shape if name in outputs else None
        if found != shape:
            raise WrongAnswer(
                f"output {name!r} has shape {found}, expected {shape}: {body[:300]!r}"
            )
    probabilities = outputs["probabilities"]
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-9):
        raise WrongAnswer("probabilities do not sum to 1")
    band = outputs["band"][:, 0]
    if (band != schema.bands(probabilities)).any():
        rule = schema.decision.describe(schema.band_labels)
        raise WrongAnswer(f"band is not the model's decision rule ({rule})")
    explained = outputs["base_value"] + outputs["contributions"].sum(axis=2)
    moved = int((band != probabilities.argmax(axis=1)).sum())
    return float(np.abs(explained - expected).max()), moved


def percentiles(seconds: list[float], *points: float) -> list[float]:
    return [float(value) * 1000 for value in np.percentile(seconds, points)]


def within(measure: str, ms: float, target_ms: float) -> Row:
    ratio = f"{ms / target_ms:.0%} of budget"
    return Row(measure, f"{ms:.2f} ms", f"< {target_ms:.0f} ms", ratio, ms < target_ms)


def repeat(action: Callable[[], Any], times: int) -> list[float]:
    return [timed(action)[1] for _ in range(times)]


def rest_runs(
    server: InferenceServer,
    booster: xgb.Booster,
    schema: ModelSchema,
    held_out: pd.DataFrame,
    args: argparse.Namespace,
) -> tuple[list[Row], float]:
    """Single and batch latency over REST, every response checked; the rows and batch p50."""
    count = len(held_out)
    singles = [held_out.iloc[[i % count]] for i in range(args.single_requests + WARMUP_SINGLE)]
    single_bodies = [v2_request(frame, schema) for frame in singles]
    batches = [
        held_out.iloc[np.arange(i * BATCH_ROWS, (i + 1) * BATCH_ROWS) % count]
        for i in range(args.batch_repeats + WARMUP_BATCHES)
    ]
    batch_bodies, encode_s = zip(
        *(timed(lambda frame=frame: v2_request(frame, schema)) for frame in batches), strict=True
    )
    headers = {"content-type": "application/json"}
    single_s: list[float] = []
    batch_s: list[float] = []
    answers: list[bytes] = []

    def post(client: httpx.Client, body: bytes, into: list[float] | None) -> bytes:
        started = time.perf_counter()
        response = client.post(server.infer_url, content=body, headers=headers)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise WrongAnswer(f"HTTP {response.status_code}: {response.text[:300]}")
        if into is not None:
            into.append(elapsed)
        return response.content

    with httpx.Client(timeout=60) as client:
        for body in single_bodies[:WARMUP_SINGLE]:
            post(client, body, None)
        answers += [post(client, body, single_s) for body in single_bodies[WARMUP_SINGLE:]]
        for body in batch_bodies[:WARMUP_BATCHES]:
            post(client, body, None)
        answers += [post(client, body, batch_s) for body in batch_bodies[WARMUP_BATCHES:]]

    # Checked after timing, against margins computed apart from the server's code.
    expected_single = band_margins(booster, schema, pd.concat(singles[WARMUP_SINGLE:]))
    checked = [
        margin_error(body, expected_single[[i]], schema)
        for i, body in enumerate(answers[: len(single_s)])
    ]
    decode_s: list[float] = []
    for frame, body in zip(batches[WARMUP_BATCHES:], answers[len(single_s) :], strict=True):
        expected = band_margins(booster, schema, frame)
        checked.append(margin_error(body, expected, schema))
        decode_s.append(timed(lambda body=body: json.loads(body))[1])
    worst = max(error for error, _ in checked)
    moved = sum(count for _, count in checked)
    if worst >= MARGIN_TOLERANCE:
        raise WrongAnswer(f"base_value + sum(contributions) is {worst:.2e} off the margin")

    p50, p95, p99 = percentiles(single_s, 50, 95, 99)
    b50, b95 = percentiles(batch_s, 50, 95)
    client_ms = (float(np.median(encode_s)) + float(np.median(decode_s))) * 1000
    rows = [
        within(f"REST, 1 candidate + explanation: p50 ({len(single_s):,} requests)", p50,
               SINGLE_TARGET_MS),
        Row("REST, 1 candidate + explanation: p95 / p99", f"{p95:.2f} / {p99:.2f} ms"),
        within(f"REST, batch of {BATCH_ROWS:,} + explanations: p50 ({len(batch_s)} requests)",
               b50, BATCH_TARGET_MS),
        Row(f"REST, batch of {BATCH_ROWS:,}: p95", f"{b95:.2f} ms"),
        Row(f"client JSON, batch of {BATCH_ROWS:,}: encode + decode (not in the above)",
            f"{client_ms:.2f} ms"),
        Row(f"responses checked: {len(single_s):,} single + {len(batch_s)} batches, "
            "max |base + sum(contributions) - margin|", f"{worst:.1e}",
            f"< {MARGIN_TOLERANCE:g}", "", True),
        Row("responses checked: band = decision rule on the served probabilities; rows not "
            "in their most probable band",
            f"{moved:,} of {len(single_s) + len(batch_s) * BATCH_ROWS:,}", "every band", "",
            True),
    ]  # fmt: skip
    return rows, b50


@dataclass(frozen=True)
class Clock:
    """Wall and CPU seconds (all threads of this process) of one piece of work."""

    wall: float
    cpu: float


def clocked(action: Callable[[], T]) -> tuple[T, Clock]:
    # CPU time next to wall time: on a shared machine other work stretches the wall clock.
    cpu = time.process_time()
    value, wall = timed(action)
    return value, Clock(wall, time.process_time() - cpu)


def median_clock(action: Callable[[], Any], times: int) -> Clock:
    clocks = [clocked(action)[1] for _ in range(times)]
    return Clock(
        float(np.median([c.wall for c in clocks])), float(np.median([c.cpu for c in clocks]))
    )


def in_process_runs(
    explainer: Explainer, held_out: pd.DataFrame, repeats: int, batch_ms: float
) -> tuple[list[Row], np.ndarray, Clock]:
    """Encode + explain without HTTP; the rows, the batch's matrix and explain's median."""
    batch = held_out.iloc[np.arange(BATCH_ROWS) % len(held_out)]
    columns = {name: batch[name].tolist() for name in batch.columns}
    matrix = explainer.encode(columns)
    explainer.explain(matrix)  # warm-up
    encode_s = repeat(lambda: explainer.encode(columns), repeats)
    explain = median_clock(lambda: explainer.explain(matrix), repeats)
    encode_ms, explain_ms = float(np.median(encode_s)) * 1000, explain.wall * 1000
    one = {name: held_out[name].iloc[:1].tolist() for name in held_out.columns}
    single_s = repeat(lambda: explainer.explain(explainer.encode(one)), IN_PROCESS_SINGLE)
    in_process_ms = encode_ms + explain_ms
    share = f"{in_process_ms / batch_ms:.0%} of REST p50"
    rows = [
        Row(f"in process, {BATCH_ROWS:,} rows: Explainer.encode p50", f"{encode_ms:.2f} ms"),
        Row(f"in process, {BATCH_ROWS:,} rows: Explainer.explain p50 (TreeSHAP + probabilities)",
            f"{explain_ms:.2f} ms (cpu {explain.cpu * 1000:.0f} ms)"),
        Row(f"in process, {BATCH_ROWS:,} rows: encode + explain", f"{in_process_ms:.2f} ms", "",
            share),
        Row("REST batch p50 minus in process: transport, JSON, MLServer",
            f"{batch_ms - in_process_ms:.2f} ms", "", f"{1 - in_process_ms / batch_ms:.0%}"),
        Row("in process, 1 candidate: encode + explain p50",
            f"{float(np.median(single_s)) * 1000:.3f} ms"),
    ]  # fmt: skip
    return rows, matrix, explain


def per_thousand(clock: Clock, rows: int) -> Clock:
    return Clock(clock.wall * BATCH_ROWS / rows, clock.cpu * BATCH_ROWS / rows)


def scope(rows: int) -> str:
    if rows == BATCH_ROWS:
        return f"{BATCH_ROWS:,} rows"
    return f"{BATCH_ROWS:,} rows extrapolated from {rows:,}"


def permutation_runs(
    explainer: Explainer,
    matrix: np.ndarray,
    candidates: Candidates,
    exact: Clock,
    rows: int,
) -> list[Row]:
    """shap's permutation explainer on the upper band's margin against the exact values."""
    schema, booster = explainer.schema, explainer.booster
    features = len(schema.features)
    names, types = list(schema.features), list(schema.booster_feature_types)

    def upper_margin(encoded: np.ndarray) -> np.ndarray:
        # shap hands over masked copies of the encoded rows: category codes as floats.
        data = xgb.DMatrix(
            encoded,
            feature_names=names,
            feature_types=types,
            enable_categorical=True,
            nthread=explainer.threads,
        )
        raw = booster.predict(data, output_margin=True, validate_features=False)
        return raw if raw.ndim == 1 else raw[:, -1]

    background = candidates.background
    background_origin = candidates.background_origin
    reference = explainer.encode({name: background[name].tolist() for name in names})
    explained = matrix[:rows]
    cheapest = 2 * features + 1
    permutation = shap.PermutationExplainer(upper_margin, reference, seed=0)
    # shap's masking is compiled by numba on first use; timed warm, as TreeSHAP is.
    permutation(explained[:SHAP_WARMUP_ROWS], max_evals=cheapest, silent=True)
    estimate, clock = clocked(lambda: permutation(explained, max_evals=cheapest, silent=True))
    values = np.asarray(estimate.values)
    cost = per_thousand(clock, rows)
    default_rows = rows
    _, default_clock = clocked(lambda: permutation(explained[:default_rows], silent=True))
    default_cost = per_thousand(default_clock, default_rows)
    # Exact Shapley values of the very game the permutation explainer samples (same
    # background): what is left between the two is its approximation error alone.
    game_rows = min(rows, SHAP_EXACT_ROWS)
    game = shap.ExactExplainer(upper_margin, reference)(explained[:game_rows], silent=True)
    sampling_error = np.abs(values[:game_rows] - np.asarray(game.values))
    served = explainer.explain(explained).contributions[:, -1, :]
    versus_served = np.abs(values - served)
    ratio, cpu_ratio = default_cost.wall / exact.wall, default_cost.cpu / exact.cpu
    return [
        Row(f"exact: Explainer.explain, {BATCH_ROWS:,} rows (XGBoost pred_contribs)",
            f"{exact.wall * 1000:.1f} ms (cpu {exact.cpu * 1000:.0f} ms)"),
        Row("shap: explained output / background",
            f"upper band's margin / {len(reference)} {background_origin} rows"),
        Row(f"shap permutation as shipped (default max_evals 500), {scope(default_rows)}",
            f"{default_cost.wall:.2f} s (cpu {default_cost.cpu:.2f} s)"),
        Row("explanation cost: permutation (as shipped) / exact", f"{ratio:,.0f}x",
            f">= {RATIO_EXPECTED:.0f}x (expected)", f"cpu {cpu_ratio:,.0f}x",
            ratio >= RATIO_EXPECTED),
        Row(f"shap permutation, max_evals {cheapest} = 2 x {features} + 1 (cheapest: one "
            f"antithetic permutation), {scope(rows)}", f"{cost.wall:.2f} s (cpu {cost.cpu:.2f} s)",
            "", f"{cost.wall / exact.wall:,.0f}x exact (a lower bound)"),
        Row(f"permutation vs shap Exact (same game), {game_rows} rows: max / mean |diff|",
            f"{sampling_error.max():.3f} / {sampling_error.mean():.4f}"),
        Row(f"permutation vs served TreeSHAP, {rows:,} rows: max / mean |diff|",
            f"{versus_served.max():.3f} / {versus_served.mean():.4f}", "",
            f"mean |served| {np.abs(served).mean():.4f}"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-dir", type=Path, help="serve this model folder (no data prep)")
    model.add_argument(
        "--model-uri",
        help="serve this registered version: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...",
    )
    registry = parser.add_mutually_exclusive_group()
    registry.add_argument(
        "--tracking-uri",
        help="the MLflow store of --model-uri (default: PAYBAND_MLFLOW_TRACKING_URI)",
    )
    registry.add_argument(
        "--home",
        type=Path,
        help=f"the local stack's PAYBAND_HOME: its MLflow store and versioned store "
        f"(without --model-uri: {CHAMPION_URI})",
    )
    parser.add_argument("--trees", type=int, default=MIDDLE_PARAMS["n_estimators"])
    parser.add_argument("--depth", type=int, default=MIDDLE_PARAMS["max_depth"])
    parser.add_argument("--workers", type=int, help="pass --workers N to the server")
    parser.add_argument(
        "--threads", type=int, help="XGBoost threads per prediction (PAYBAND_SERVING_THREADS)"
    )
    parser.add_argument("--single-requests", type=int, default=2_000)
    parser.add_argument("--batch-repeats", type=int, default=20)
    parser.add_argument("--permutation-rows", type=int, default=BATCH_ROWS)
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target is missed")
    args = parser.parse_args()
    if not 1 <= args.permutation_rows <= BATCH_ROWS:
        parser.error(f"--permutation-rows must be between 1 and {BATCH_ROWS}")
    if args.single_requests < 1 or args.batch_repeats < 1:
        parser.error("--single-requests and --batch-repeats must be at least 1")
    from_registry = args.tracking_uri is not None or args.home is not None
    if args.model_dir is not None and from_registry:
        parser.error("--tracking-uri and --home name a registry: use them with --model-uri")
    if from_registry and args.model_uri is None:
        args.model_uri = CHAMPION_URI

    with (
        tempfile.TemporaryDirectory(prefix="payband-bench-") as tmp,
        # The registry's database is needed until the server has loaded the version.
        contextlib.ExitStack() as registry_open,
    ):
        home = Path(tmp)
        os.environ["PAYBAND_HOME"] = str(home)  # nothing of the run lands in ~/.payband
        if args.threads is not None:
            os.environ["PAYBAND_SERVING_THREADS"] = str(args.threads)  # the server's too
        threads = ServingSettings().threads
        rows: list[Row] = [
            Row("cpus", str(os.cpu_count())),
            # Other work on the machine stretches latencies: XGBoost's threads wait for each other.
            Row("1-min load average before the run (other work)", f"{os.getloadavg()[0]:.2f}"),
            Row(
                "threads (PAYBAND_SERVING_THREADS)", f"{threads}" + " (all cores)" * (threads == 0)
            ),
        ]
        if args.model_uri is not None:
            stack_home = None if args.home is None else Home(args.home.expanduser().resolve())
            if stack_home is not None:
                tracking = registry_open.enter_context(home_tracking_uri(stack_home))
                where = f"the local stack's, in {stack_home.root}"
            else:
                tracking = args.tracking_uri or ServingSettings().mlflow_tracking_uri
                where = redact(tracking)
            served = registered(args.model_uri, tracking, home / "registered")
            booster, schema = load_bundle(served.folder)
            candidates = (
                synthetic(schema) if stack_home is None else stored(schema, stack_home.store)
            )
            rows.append(Row("model: MLflow store", where))
        elif args.model_dir is None:
            folder = home / "model"
            params = MIDDLE_PARAMS | {"n_estimators": args.trees, "max_depth": args.depth}
            candidates, prep = adult_model(folder, params)
            rows += prep
            booster, schema = load_bundle(folder)
            served = Served(uri=str(folder), folder=folder)
        else:
            booster, schema = load_bundle(args.model_dir)
            candidates = synthetic(schema)
            served = Served(uri=str(args.model_dir), folder=args.model_dir)
        size = model_size(booster)
        rows += [
            Row("model: served", served.describe()),
            Row("model: decision rule", schema.decision.describe(schema.band_labels)),
            Row("model: candidates", candidates.origin),
            Row("model: trees / mean leaves per tree / max depth / mean leaf depth",
                f"{size.trees} / {size.mean_leaves:.1f} / {size.max_depth} / "
                f"{size.mean_leaf_depth:.2f}"),
            Row("model: features / bands", f"{len(schema.features)} / {schema.n_bands}"),
        ]  # fmt: skip

        server_args = [] if args.workers is None else ["--workers", str(args.workers)]
        workers = "in-process inference" if not args.workers else f"{args.workers} workers"
        rows.append(Row("server", f"payband-serving serve (MLServer), {workers}, batching off"))
        try:
            with inference_server(model_uri=served.uri, args=server_args, env=served.env) as server:
                check_metadata(server, served, schema)
                registry_open.close()
                rest, batch_ms = rest_runs(server, booster, schema, candidates.held_out, args)
        except WrongAnswer as exc:
            print_table(rows)
            sys.exit(f"wrong answer from the server: {exc}")
        rows += rest
        explainer = Explainer(booster, schema, threads=threads)
        in_process, matrix, exact = in_process_runs(
            explainer, candidates.held_out, args.batch_repeats, batch_ms
        )
        rows += in_process
        rows += permutation_runs(explainer, matrix, candidates, exact, args.permutation_rows)

    print_table(rows)
    if not args.no_fail and any(row.passed is False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
