"""One monitoring analysis: NannyML drift and performance, and fairness, per chunk.

The reference data is the champion's test set as training logged it; the analysis data is
every answered prediction of that model version in the audit log, oldest first. Both are
brought into one shape: the catalogue's features, ``y_pred`` (band index), ``p_<i>`` (the
probability of band i), ``y_true`` (the true band index; empty until an outcome arrives).
``y_pred`` is the band of the model's decision rule, never re-derived here: the band served
in the records, ``predicted_band`` in the reference (checked against the rule on loading).
NannyML takes it as given (CBPE estimates the confusion matrix from it and the calibrated
probabilities), so a cut-off other than 0.5 is judged as served.

Conventions:
- Chunks are ``chunk_size`` records (an incomplete last chunk waits until it is full) or one
  calendar period of ``received_at`` (the current period is analysed as it grows, once it
  has ``min_chunk_rows`` records; a period with fewer is left out, so that a new period's
  first records raise no alarm). Records left out are counted as ``rows_pending``. The
  reference data is cut into chunks of ``chunk_size`` records (with periods: of the median
  period's size, leaving at least four chunks), from which the thresholds are derived.
- Univariate drift alerts when a distance exceeds ``drift_threshold`` (chi2: p < 0.05).
- Multivariate drift alerts when the reconstruction error exceeds the mean plus three standard
  deviations of its values on reference chunks the PCA did not see (k folds, each fitted on
  the others): NannyML's own threshold comes from chunks it was fitted on, which sit lower,
  so records drawn like the reference raised alerts.
- Performance (estimated and realized) alerts only below the reference mean minus three
  standard deviations: a model that does better than on its test set is no cause for alarm.
- Fairness: a record is "selected" when its band (the band served, the decision rule's) is at
  least the favourable band, as training's fairness gate judges the rule's bands;
  disparate impact is the lowest over the highest selection rate among the groups with at
  least ``min_group_rows`` records in the chunk (1.0 when no such group is selected).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.util import find_spec
from typing import Any

import pandas as pd
from pandas.errors import Pandas4Warning

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
# NannyML imports statsmodels without declaring it: say so here rather than deep inside it.
if find_spec("statsmodels") is None:
    raise ImportError("payband-monitoring needs statsmodels (NannyML imports it)")

from nannyml.chunk import Chunk, Chunker, PeriodBasedChunker, SizeBasedChunker

from payband_contracts import FEATURE_CATALOGUE
from payband_contracts.model import REFERENCE_PREDICTION, REFERENCE_TRUTH
from payband_monitoring.errors import MonitoringConfigError, MonitoringError
from payband_monitoring.reference import WatchedModel
from payband_monitoring.settings import MonitoringSettings

__all__ = ["CALCULATORS", "PROTECTED", "Analysis", "ResultRow", "analyse", "analysis_frame"]

FEATURES = [str(spec.name) for spec in FEATURE_CATALOGUE.features]
CATEGORICAL = [str(s.name) for s in FEATURE_CATALOGUE.features if s.categories is not None]
PROTECTED = [str(s.name) for s in FEATURE_CATALOGUE.features if s.protected]
TIMESTAMP = "received_at"
Y_PRED, Y_TRUE = "y_pred", "y_true"

UNIVARIATE, MULTIVARIATE = "univariate_drift", "multivariate_drift"
ESTIMATED, REALIZED, FAIRNESS = "estimated_performance", "realized_performance", "fairness"
SELECTION_RATE, DISPARATE_IMPACT = "selection_rate", "disparate_impact"
CALCULATORS = (UNIVARIATE, MULTIVARIATE, ESTIMATED, REALIZED, FAIRNESS)
# The reference data must give this many chunks (thresholds are statistics over them).
MIN_REFERENCE_CHUNKS = 4
MAX_FOLDS = 10


@dataclass(frozen=True)
class ResultRow:
    """One number about one chunk: what was measured, on what, by which method."""

    chunk_key: str
    chunk_index: int
    chunk_start: datetime | None
    chunk_end: datetime | None
    rows: int
    calculator: str  # univariate_drift, multivariate_drift, ..._performance, fairness
    subject: str  # a feature, "reconstruction_error", a metric, an attribute or attribute=group
    method: str  # the drift method, or selection_rate / disparate_impact; "" otherwise
    value: float
    lower_threshold: float | None
    upper_threshold: float | None
    alert: bool


@dataclass
class Analysis:
    """What one run found, and NannyML's results for the report's plots."""

    model_name: str
    model_version: str
    run_id: str  # this monitoring run's
    reference_run_id: str  # the model's MLflow run
    chunking: str
    rows_analysed: int
    rows_pending: int
    rows_with_outcome: int
    favourable_band: int
    decision_rule: str  # the model's, in words: how the judged bands follow from probabilities
    results: list[ResultRow] = field(default_factory=list)
    nannyml: dict[str, Any] = field(default_factory=dict)
    reference_fairness: dict[str, float] = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return len({row.chunk_key for row in self.results})

    def latest(self, calculator: str) -> list[ResultRow]:
        """The calculator's results in its latest chunk."""
        rows = [row for row in self.results if row.calculator == calculator]
        if not rows:
            return []
        last = max(row.chunk_index for row in rows)
        return [row for row in rows if row.chunk_index == last]

    def alerts(self) -> list[ResultRow]:
        """Alerts in the latest chunk of each calculator."""
        return [row for c in CALCULATORS for row in self.latest(c) if row.alert]

    def alert_counts(self) -> dict[str, int]:
        """How many alerts each calculator raised in its latest chunk (0 included)."""
        counts = dict.fromkeys(CALCULATORS, 0)
        for row in self.alerts():
            counts[row.calculator] += 1
        return counts


@contextmanager
def quiet_nannyml() -> Iterator[None]:
    """NannyML 0.13 (and category_encoders under it) on pandas 3 warn on every call about
    their own use of deprecated pandas options, and NannyML about short chunk lists; none of
    it is actionable for our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(nannyml|category_encoders)(\.|$)")
        warnings.filterwarnings("ignore", category=Pandas4Warning)
        yield


class _Chunker(Chunker):
    """Size-based chunks for the reference data; size- or period-based for the analysis."""

    def __init__(self, size: int, period: str | None, min_rows: int) -> None:
        # No timestamp column for NannyML: the reference data has none.
        super().__init__(timestamp_column_name=None)
        self.size, self.period, self.min_rows = size, period, min_rows

    def _split(self, data: pd.DataFrame) -> list[Chunk]:
        if self.period and TIMESTAMP in data.columns:
            chunks = PeriodBasedChunker(TIMESTAMP, self.period)._split(data)
            return [chunk for chunk in chunks if len(chunk.data) >= self.min_rows]
        return SizeBasedChunker(self.size, incomplete="drop")._split(data)


def _plain_features(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {
        name: (
            frame[name].astype(object).astype(str)
            if name in CATEGORICAL
            else pd.to_numeric(frame[name]).astype("float64")
        )
        for name in FEATURES
    }


def reference_frame(model: WatchedModel) -> pd.DataFrame:
    reference = model.reference
    columns: dict[str, Any] = _plain_features(reference)
    columns[Y_PRED] = reference[REFERENCE_PREDICTION].astype("int64")
    columns[Y_TRUE] = reference[REFERENCE_TRUTH].astype("float64")
    for index, label in enumerate(model.schema.band_labels):
        columns[f"p_{index}"] = reference[label].astype("float64")
    return pd.DataFrame(columns).reset_index(drop=True)


def analysis_frame(records: pd.DataFrame, n_bands: int) -> pd.DataFrame:
    """The audit reader's frame in the analysis shape, oldest first."""
    needed = [f"probability_{i}" for i in range(n_bands)]
    if not records.empty and (missing := [name for name in needed if name not in records]):
        raise MonitoringConfigError(
            f"the audit records lack {', '.join(missing)}: they were not answered by a "
            f"model with {n_bands} bands"
        )
    columns: dict[str, Any] = _plain_features(records)
    columns[Y_PRED] = records["band_index"].astype("int64")
    columns[Y_TRUE] = records["outcome_band_index"].astype("float64")
    for index, name in enumerate(needed):
        probability = records[name] if name in records else pd.Series(dtype="float64")
        columns[f"p_{index}"] = probability.astype("float64")
    columns[TIMESTAMP] = records[TIMESTAMP]
    columns["prediction_id"] = records["prediction_id"]
    return pd.DataFrame(columns).reset_index(drop=True)


@dataclass(frozen=True)
class _ChunkInfo:
    key: str
    index: int
    start: datetime | None
    end: datetime | None
    rows: int
    data: pd.DataFrame


def _chunks(chunker: _Chunker, analysis: pd.DataFrame) -> list[_ChunkInfo]:
    with quiet_nannyml():
        chunks = chunker.split(analysis)
    infos = []
    for chunk in chunks:
        stamps = chunk.data[TIMESTAMP]
        infos.append(
            _ChunkInfo(
                key=str(chunk.key),
                index=int(chunk.chunk_index),
                start=stamps.min().to_pydatetime(),
                end=stamps.max().to_pydatetime(),
                rows=len(chunk.data),
                data=chunk.data,
            )
        )
    return infos


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _rows_from(
    frame: pd.DataFrame,
    chunks: list[_ChunkInfo],
    calculator: str,
    subjects: list[tuple[tuple[str, ...], str, str]],
) -> list[ResultRow]:
    """ResultRows from a NannyML analysis-period frame; ``subjects`` maps a column prefix to
    (subject, method)."""
    rows = []
    for position, chunk in enumerate(chunks):
        for prefix, subject, method in subjects:
            value = _number(frame[(*prefix, "value")].iloc[position])
            if value is None:
                continue
            alert = frame[(*prefix, "alert")].iloc[position]
            rows.append(
                ResultRow(
                    chunk_key=chunk.key,
                    chunk_index=chunk.index,
                    chunk_start=chunk.start,
                    chunk_end=chunk.end,
                    rows=chunk.rows,
                    calculator=calculator,
                    subject=subject,
                    method=method,
                    value=value,
                    lower_threshold=_number(frame[(*prefix, "lower_threshold")].iloc[position]),
                    upper_threshold=_number(frame[(*prefix, "upper_threshold")].iloc[position]),
                    alert=bool(alert) if not pd.isna(alert) else False,
                )
            )
    return rows


def _selection_rates(frame: pd.DataFrame, attribute: str, favourable: int) -> pd.DataFrame:
    selected = frame[Y_PRED] >= favourable
    grouped = selected.groupby(frame[attribute], observed=True)
    return pd.DataFrame({"rows": grouped.size(), "rate": grouped.mean()})


def disparate_impact(rates: pd.DataFrame, min_rows: int) -> float | None:
    """Lowest over highest selection rate of the groups with ``min_rows`` records; None when
    fewer than two groups are that large."""
    eligible = rates[rates["rows"] >= min_rows]["rate"]
    if len(eligible) < 2:
        return None
    highest = float(eligible.max())
    return 1.0 if highest == 0 else float(eligible.min()) / highest


def _fairness(
    chunks: list[_ChunkInfo], settings: MonitoringSettings, favourable: int
) -> list[ResultRow]:
    rows = []
    for chunk in chunks:
        common = {
            "chunk_key": chunk.key,
            "chunk_index": chunk.index,
            "chunk_start": chunk.start,
            "chunk_end": chunk.end,
            "rows": chunk.rows,
            "calculator": FAIRNESS,
        }
        for attribute in PROTECTED:
            rates = _selection_rates(chunk.data, attribute, favourable)
            for group, rate in rates.iterrows():
                rows.append(
                    ResultRow(
                        **common,
                        subject=f"{attribute}={group}",
                        method=SELECTION_RATE,
                        value=float(rate["rate"]),
                        lower_threshold=None,
                        upper_threshold=None,
                        alert=False,
                    )
                )
            ratio = disparate_impact(rates, settings.min_group_rows)
            if ratio is not None:
                rows.append(
                    ResultRow(
                        **common,
                        subject=attribute,
                        method=DISPARATE_IMPACT,
                        value=ratio,
                        lower_threshold=settings.min_disparate_impact,
                        upper_threshold=None,
                        alert=ratio < settings.min_disparate_impact,
                    )
                )
    return rows


def _multivariate_threshold(reference: pd.DataFrame, chunker: _Chunker) -> float:
    """The upper alert threshold of the reconstruction error: mean plus three standard
    deviations of its values on reference chunks the PCA was not fitted on (k folds, one
    chunk or more each)."""
    import nannyml as nml

    folds = min(MAX_FOLDS, len(reference) // chunker.size)
    shuffled = reference.sample(frac=1.0, random_state=0).reset_index(drop=True)
    values: list[float] = []
    for fold in range(folds):
        held_out = shuffled.iloc[fold::folds].reset_index(drop=True)
        fitted = shuffled.drop(index=shuffled.index[fold::folds]).reset_index(drop=True)
        calculator = nml.DataReconstructionDriftCalculator(column_names=FEATURES, chunker=chunker)
        frame = calculator.fit(fitted).calculate(held_out).filter(period="analysis").to_df()
        values += [float(v) for v in frame[("reconstruction_error", "value")] if not pd.isna(v)]
    if len(values) < MIN_REFERENCE_CHUNKS:
        raise MonitoringConfigError("the reference data is too small for a multivariate threshold")
    series = pd.Series(values)
    return float(series.mean() + 3 * series.std())


def _check_keys(frame: pd.DataFrame, chunks: list[_ChunkInfo], name: str) -> None:
    """Results are matched to chunks by position: make sure NannyML cut the same chunks."""
    column = ("chunk", "chunk", "key") if frame.columns.nlevels == 3 else ("chunk", "key")
    if [str(key) for key in frame[column]] != [chunk.key for chunk in chunks]:
        raise MonitoringError(f"NannyML's {name} chunks differ from the analysed chunks")


def _reference_chunk_size(
    settings: MonitoringSettings, chunks: list[_ChunkInfo], reference_rows: int
) -> int:
    """Thresholds hold for chunks of the reference's chunk size: with period chunks, that is
    the median period's size, as long as the reference still gives four chunks."""
    if not settings.chunk_period or not chunks:
        return settings.chunk_size
    median = int(pd.Series([chunk.rows for chunk in chunks]).median())
    return max(1, min(median, reference_rows // MIN_REFERENCE_CHUNKS))


def _problem(n_bands: int) -> tuple[str, Any]:
    if n_bands == 2:
        return "classification_binary", "p_1"
    return "classification_multiclass", {index: f"p_{index}" for index in range(n_bands)}


def analyse(
    model: WatchedModel, records: pd.DataFrame, settings: MonitoringSettings, run_id: str
) -> Analysis:
    """Drift, estimated and realized performance and fairness of ``records`` per chunk."""
    import nannyml as nml
    from nannyml.thresholds import ConstantThreshold, StandardDeviationThreshold

    n_bands = model.schema.n_bands
    favourable = settings.favourable_band if settings.favourable_band is not None else n_bands - 1
    if favourable >= n_bands:
        raise MonitoringConfigError(
            f"favourable band {favourable} does not exist: the model has bands 0 to {n_bands - 1}"
        )
    reference = reference_frame(model)
    if len(reference) < MIN_REFERENCE_CHUNKS * settings.chunk_size:
        raise MonitoringConfigError(
            f"the reference data has {len(reference)} rows, fewer than {MIN_REFERENCE_CHUNKS} "
            f"chunks of {settings.chunk_size}; lower PAYBAND_MONITORING_CHUNK_SIZE"
        )
    analysis = analysis_frame(records, n_bands)
    split = _Chunker(settings.chunk_size, settings.chunk_period, settings.min_chunk_rows)
    chunks = _chunks(split, analysis) if len(analysis) else []
    # NannyML's chunker: the analysis as above, the reference in chunks of a matching size.
    chunker = _Chunker(
        _reference_chunk_size(settings, chunks, len(reference)),
        settings.chunk_period,
        settings.min_chunk_rows,
    )
    analysed = sum(chunk.rows for chunk in chunks)
    result = Analysis(
        model_name=model.name,
        model_version=model.version,
        run_id=run_id,
        reference_run_id=model.run_id,
        chunking=settings.chunking,
        rows_analysed=analysed,
        rows_pending=len(analysis) - analysed,
        rows_with_outcome=sum(int(chunk.data[Y_TRUE].notna().sum()) for chunk in chunks),
        favourable_band=favourable,
        decision_rule=model.schema.decision.describe(model.schema.band_labels),
    )
    for attribute in PROTECTED:
        ratio = disparate_impact(
            _selection_rates(reference, attribute, favourable), settings.min_group_rows
        )
        if ratio is not None:
            result.reference_fairness[attribute] = ratio
    if not chunks:
        return result

    thresholds = {
        method: ConstantThreshold(lower=None, upper=settings.drift_threshold)
        for method in {*settings.continuous_methods, *settings.categorical_methods} - {"chi2"}
    }
    problem, probabilities = _problem(n_bands)
    below_only = StandardDeviationThreshold(std_lower_multiplier=3, std_upper_multiplier=None)
    performance = {
        "y_pred_proba": probabilities,
        "y_pred": Y_PRED,
        "y_true": Y_TRUE,
        "problem_type": problem,
        "metrics": list(settings.performance_metrics),
        "chunker": chunker,
        "thresholds": dict.fromkeys(settings.performance_metrics, below_only),
    }
    with quiet_nannyml():
        univariate = nml.UnivariateDriftCalculator(
            column_names=FEATURES,
            treat_as_categorical=CATEGORICAL,
            continuous_methods=list(settings.continuous_methods),
            categorical_methods=list(settings.categorical_methods),
            chunker=chunker,
            thresholds=thresholds,
        ).fit(reference)
        result.nannyml[UNIVARIATE] = univariate.calculate(analysis)
        multivariate = nml.DataReconstructionDriftCalculator(
            column_names=FEATURES,
            chunker=chunker,
            threshold=ConstantThreshold(
                lower=None, upper=_multivariate_threshold(reference, chunker)
            ),
        ).fit(reference)
        result.nannyml[MULTIVARIATE] = multivariate.calculate(analysis)
        cbpe = nml.CBPE(**performance).fit(reference)
        result.nannyml[ESTIMATED] = cbpe.estimate(analysis)
        if result.rows_with_outcome:
            realized = nml.PerformanceCalculator(**performance).fit(reference)
            result.nannyml[REALIZED] = realized.calculate(analysis)

    frames = {
        name: value.filter(period="analysis").to_df() for name, value in result.nannyml.items()
    }
    for name, frame in frames.items():
        _check_keys(frame, chunks, name)
    drift_subjects = [
        ((feature, method), feature, method)
        for feature in FEATURES
        for method in (
            settings.categorical_methods if feature in CATEGORICAL else settings.continuous_methods
        )
    ]
    result.results += _rows_from(frames[UNIVARIATE], chunks, UNIVARIATE, drift_subjects)
    result.results += _rows_from(
        frames[MULTIVARIATE],
        chunks,
        MULTIVARIATE,
        [(("reconstruction_error",), "reconstruction_error", "")],
    )
    metric_subjects = [((metric,), metric, "") for metric in settings.performance_metrics]
    result.results += _rows_from(frames[ESTIMATED], chunks, ESTIMATED, metric_subjects)
    if REALIZED in frames:
        result.results += _rows_from(frames[REALIZED], chunks, REALIZED, metric_subjects)
    result.results += _fairness(chunks, settings, favourable)
    return result
