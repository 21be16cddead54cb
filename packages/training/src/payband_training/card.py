"""The model card: what a model is for, what it was trained on, how well and how fairly it does.

Markdown, written for the people who decide whether and how the model is used (EU AI Act
Art. 11 and 13), not for engineers only. This module renders the card and is its one writer:
a card is written once its content is final, when the gates have decided, as a new artifact
of the version's run (``model_cards/version-<N>-registered.md``). A version made champion
despite failed gates gets the card again with an "Override" section, as another artifact
(``model_cards/version-<N>-override-<UTC time>.md``). A card is never overwritten; the
version's ``model_card.path`` and ``model_card.sha256`` tags name its current card and that
file's SHA-256.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payband_contracts import SalaryBands
from payband_contracts.model import DecisionRule
from payband_training.evaluate import Evaluation
from payband_training.features import PROTECTED
from payband_training.gates import GateDecision
from payband_training.mitigation import Mitigation
from payband_training.model import ModelSchema

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "BIAS_HEADING",
    "CARDS_DIR",
    "CARD_DIGEST_TAG",
    "CARD_PATH_TAG",
    "OVERRIDE_HEADING",
    "BiasExamination",
    "MissingCardError",
    "Override",
    "card_digest",
    "model_card",
    "read_card",
    "with_override",
    "write_card",
]

OVERRIDE_HEADING = "## Override"
BIAS_HEADING = "## Bias examination and mitigation"
# The version's current model card (an artifact path in its run) and that file's SHA-256.
CARD_PATH_TAG = "model_card.path"
CARD_DIGEST_TAG = "model_card.sha256"
CARDS_DIR = "model_cards"


class MissingCardError(Exception):
    """The version has no model card in its run (none was written, or its file is gone)."""


@dataclass(frozen=True)
class Override:
    """A version made champion by a person although it failed its gates, as
    `payband_training.registry.promote_with_override` records it.

    ``failed_reasons`` is empty when the version had passed its gates: nothing was overridden
    then, and no override was recorded.
    """

    name: str
    version: str
    previous_champion: str | None
    reason: str
    actor: str
    at: datetime
    failed_reasons: tuple[str, ...]


@dataclass(frozen=True)
class BiasExamination:
    """What the card says about bias: the data's own, the mitigation chosen and its price.

    ``before`` is the best trial without mitigation, ``after`` the model, both fitted on the
    training rows and evaluated on the test rows; ``label_disparate_impact`` is the ratio of
    favourable-label rates in the training data itself, per attribute.
    """

    mitigation: Mitigation
    decision: DecisionRule
    after: Evaluation
    before: Evaluation | None
    trials: int
    front: int
    feasible: int
    chosen_trial: int
    baseline_trial: int | None
    chosen_feasible: bool
    label_disparate_impact: dict[str, float] = field(default_factory=dict)


_SOURCES = {
    "adult": "UCI Adult (person records from the {year} US Census database)",
    "pums": "ACS PUMS {year} (American Community Survey person records)",
}
_METRIC_NAMES = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "roc_auc": "ROC AUC",
    "log_loss": "Log loss",
    "brier_score": "Brier score",
}


def _cell(value: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _population(schema: ModelSchema) -> str:
    where = f"the states {', '.join(schema.states)}" if schema.states else "all US states"
    return f"adults with earnings in {where}, as sampled by {_source(schema)}"


def _source(schema: ModelSchema) -> str:
    template = _SOURCES.get(schema.source, "{source} data of {year}")
    return template.format(source=schema.source, year=schema.year or "an unknown year")


def _bands(schema: ModelSchema) -> list[str]:
    lines = ["| Band | Label | Annual income (USD) |", "| ---: | --- | --- |"]
    for band in SalaryBands(edges_usd=schema.band_edges_usd).bands:
        if band.lower_usd is None:
            income = f"up to {band.upper_usd:,.0f}"
        elif band.upper_usd is None:
            income = f"more than {band.lower_usd:,.0f}"
        else:
            income = f"more than {band.lower_usd:,.0f}, up to {band.upper_usd:,.0f}"
        lines.append(f"| {band.index} | {_cell(band.label)} | {income} |")
    return lines


def _intended_use(schema: ModelSchema) -> list[str]:
    return [
        "## Intended use",
        "",
        "- Estimates the salary band of a candidate from a few job-related attributes, to "
        "support, not replace, the people who decide on pay offers. Every estimate comes with "
        "its explanation and is reviewed by a person before it affects an offer.",
        "- A high-risk AI system under the EU AI Act (Annex III, point 4: employment and "
        "workers management): human oversight, logging of every prediction and monitoring "
        "after deployment are part of its use.",
        f"- Valid only for the population it was trained on: {_population(schema)}. "
        "Not for individuals outside it, nor for deciding about a person without review.",
        "- Not for estimating anything about sex or race; those attributes are used to "
        "measure fairness.",
    ]


def _data(schema: ModelSchema, evaluation: Evaluation, train_rows: int | None) -> list[str]:
    test_rows = sum(band.support for band in evaluation.per_band)
    return [
        "## Data",
        "",
        f"Source: {_source(schema)}.",
        "",
        "| Part | Version | Rows |",
        "| --- | --- | ---: |",
        f"| Features snapshot | `{_cell(schema.features_uri)}` | |",
        f"| Training | `{_cell(schema.train_uri)}` | {'' if train_rows is None else train_rows} |",
        f"| Test | `{_cell(schema.test_uri)}` | {test_rows} |",
        "",
        "Salary bands:",
        "",
        *_bands(schema),
    ]


def _model(schema: ModelSchema, params: Mapping[str, Any], cv_roc_auc: float | None) -> list[str]:
    protected = ", ".join(PROTECTED)
    use = (
        f"Protected attributes used as inputs: yes ({protected})."
        if schema.use_protected
        else f"Protected attributes used as inputs: no; {protected} are used only to "
        "measure fairness."
    )
    lines = [
        "## Model",
        "",
        "XGBoost gradient-boosted trees with native categorical splits, "
        + (
            "binary logistic objective."
            if schema.n_bands == 2
            else f"softmax over {schema.n_bands} bands."
        ),
        "",
        f"Features, in input order: {', '.join(f'`{name}`' for name in schema.features)}.",
        "",
        use,
        "",
    ]
    if cv_roc_auc is not None and math.isfinite(cv_roc_auc):
        lines += [f"Cross-validated ROC AUC of the chosen trial: {cv_roc_auc:.3f}.", ""]
    lines += ["| Parameter | Value |", "| --- | --- |"]
    lines += [f"| {_cell(name)} | {_cell(value)} |" for name, value in sorted(params.items())]
    return lines


def _metrics(evaluation: Evaluation) -> list[str]:
    lines = ["## Metrics (test set)", "", "| Metric | Value |", "| --- | ---: |"]
    lines += [
        f"| {_METRIC_NAMES.get(name, name)} | {_number(value)} |"
        for name, value in evaluation.quality.items()
    ]
    lines += [
        "",
        "| Band | Precision | Recall | F1 | Support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {_cell(band.label)} | {_number(band.precision)} | {_number(band.recall)} "
        f"| {_number(band.f1)} | {band.support} |"
        for band in evaluation.per_band
    ]
    if evaluation.notes:
        lines += [""] + [f"- {_cell(note)}" for note in evaluation.notes]
    return lines


def _limitations(schema: ModelSchema) -> list[str]:
    year = schema.year or "the survey year"
    return [
        "## Limitations",
        "",
        f"- Census survey data: self-reported, with income standing in for salary; the bands "
        f"are in US dollars of {year}, not adjusted for inflation or for today's pay levels.",
        f"- Trained on {_population(schema)}; other countries, years, sectors or groups "
        "absent from the data are outside what was measured.",
        "- Bands are coarse: an estimate says which band is likely, not a salary, and people "
        "near a band edge are the most uncertain.",
        "- Sex is recorded as two categories and race in a few broad groups; fairness is "
        "measured only for those, and small groups give unstable rates.",
        "- Other inputs (occupation, marital status, birthplace) can carry information about "
        "sex and race even when those are not inputs.",
    ]


def _with_interval(evaluation: Evaluation, attribute: str) -> str:
    result = evaluation.fairness[attribute]
    low, high = result.disparate_impact_interval
    shown = _number(result.disparate_impact)
    return shown if math.isnan(low) else f"{shown} [{low:.3f}, {high:.3f}]"


def _points(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f} %"


def _bias(bias: BiasExamination, schema: ModelSchema) -> list[str]:
    band_labels = schema.band_labels
    after, before = bias.after, bias.before
    attributes = list(after.fairness)
    lines = [BIAS_HEADING, ""]
    if bias.label_disparate_impact:
        shown = ", ".join(
            f"{_cell(attribute)} {_number(value)}"
            for attribute, value in bias.label_disparate_impact.items()
        )
        lines += [
            "The training labels themselves are unequal: the ratio of the lowest to the highest "
            f"group's share of favourable labels is {shown}. A model that learns them as they "
            "are repeats that gap.",
            "",
        ]
    method = bias.mitigation.describe()
    inputs = (
        "Sex and race are inputs of this model (PAYBAND_TRAINING_USE_PROTECTED_ATTRIBUTES): "
        "its bands depend on them directly."
        if schema.use_protected
        else "Sex and race are never inputs of the model: mitigation changes what it learns "
        "from, one booster serves every candidate, and its explanations are exact."
    )
    lines += [
        f"Mitigation: {method}. {inputs}",
        "",
        f"Decision rule, the same for every candidate: {bias.decision.describe(band_labels)}.",
        "",
        f"Chosen by a multi-objective search (cross-validated ROC AUC against the worst "
        f"disparate impact, the gates as constraints): {bias.trials} trials, {bias.front} on "
        f"the Pareto front, {bias.feasible} meeting every gate on every validation fold; "
        f"the model is trial {bias.chosen_trial}"
        + (
            ", the most accurate of those."
            if bias.chosen_feasible
            else ". No trial met every gate, so this is the trial with the best worst disparate "
            "impact, and the gates will not promote it."
        ),
        "",
    ]
    label = "before (no mitigation" + (
        f", trial {bias.baseline_trial})" if bias.baseline_trial is not None else ")"
    )
    rows = [
        ("ROC AUC", "roc_auc"),
        ("Accuracy", "accuracy"),
        ("Balanced accuracy", "balanced_accuracy"),
    ]
    lines += [
        f"| Test set | {'n/a' if before is None else _cell(label)} | after (this model) |",
        "| --- | ---: | ---: |",
    ]
    for name, key in rows:
        was = "n/a" if before is None else _number(before.quality[key])
        lines.append(f"| {name} | {was} | {_number(after.quality[key])} |")
    for attribute in attributes:
        was = "n/a" if before is None else _with_interval(before, attribute)
        lines.append(
            f"| Disparate impact by {_cell(attribute)} (95 % interval) | {was} "
            f"| {_with_interval(after, attribute)} |"
        )
    for attribute in attributes:
        was = (
            "n/a"
            if before is None
            else _number(before.fairness[attribute].equal_opportunity_difference)
        )
        now = _number(after.fairness[attribute].equal_opportunity_difference)
        lines.append(f"| Equal-opportunity difference by {_cell(attribute)} | {was} | {now} |")
    lines.append("")
    if before is not None and before is not after:
        auc = before.quality["roc_auc"] - after.quality["roc_auc"]
        accuracy = before.quality["accuracy"] - after.quality["accuracy"]
        fairer = ", ".join(
            f"by {_cell(a)} from {_number(before.fairness[a].disparate_impact)} to "
            f"{_number(after.fairness[a].disparate_impact)}"
            for a in attributes
        )
        lines += [
            f"The price: ROC AUC {_number(before.quality['roc_auc'])} -> "
            f"{_number(after.quality['roc_auc'])} ({auc:+.3f} lost) and accuracy "
            f"{_points(before.quality['accuracy'])} -> {_points(after.quality['accuracy'])} "
            f"({100 * accuracy:+.1f} points lost); in exchange disparate impact went {fairer}.",
            "",
        ]
    elif before is None:
        lines += ["No trial without mitigation ran, so there is no before to compare.", ""]
    else:
        lines += ["The search chose no mitigation: before and after are the same model.", ""]
    small = [
        f"{_cell(result.attribute)} = {_cell(rates.group)} ({rates.count} test rows)"
        for result in after.fairness.values()
        for rates in result.small_groups
    ]
    if small:
        lines += [
            f"Small groups: {', '.join(small)} have fewer than {after.min_group_rows} test rows. "
            "Their selection rates are reported with intervals under Fairness, but they do not "
            "decide disparate impact or the gate: estimates from so few rows are too unstable "
            "to judge a model by. They deserve a review on more data.",
            "",
        ]
    return lines[:-1]


def _gate(decision: GateDecision | None) -> list[str]:
    lines = ["## Gate decision", ""]
    if decision is None:
        return [*lines, "Pending: the quality and fairness gates are applied at registration."]
    verdict = (
        "Passed: the model may become champion."
        if decision.passed
        else "Rejected: the model is registered but does not become champion."
    )
    return [*lines, verdict, "", *(f"- {_cell(reason)}" for reason in decision.reasons)]


def model_card(
    schema: ModelSchema,
    evaluation: Evaluation,
    *,
    params: Mapping[str, Any],
    cv_roc_auc: float | None = None,
    train_rows: int | None = None,
    decision: GateDecision | None = None,
    title: str = "salary-band",
    bias: BiasExamination | None = None,
) -> str:
    """The model card in markdown; the gate section says "pending" without a ``decision``."""
    sections = [
        [f"# Model card: {_cell(title)}"],
        _intended_use(schema),
        _data(schema, evaluation, train_rows),
        _model(schema, params, cv_roc_auc),
        _metrics(evaluation),
        ["## Fairness", "", evaluation.fairness_table().rstrip("\n")],
        *([_bias(bias, schema)] if bias is not None else []),
        _limitations(schema),
        _gate(decision),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def _override(override: Override) -> list[str]:
    previous = (
        f"version {override.previous_champion}" if override.previous_champion else "no version"
    )
    return [
        OVERRIDE_HEADING,
        "",
        f"Version {_cell(override.version)} was made champion although it failed the gates "
        "above: the gates were not lowered, a person overrode their decision.",
        "",
        f"- By: {_cell(override.actor)}",
        f"- When: {override.at.isoformat()}",
        f"- Why: {_cell(override.reason)}",
        f"- Champion before: {previous}",
        "- Failed gates:",
        *(f"  - {_cell(reason)}" for reason in override.failed_reasons),
    ]


def with_override(card: str, override: Override) -> str:
    """The card with an "Override" section at its end, replacing an earlier one."""
    lines = card.rstrip("\n").splitlines()
    if OVERRIDE_HEADING in lines:
        start = lines.index(OVERRIDE_HEADING)
        after = [i for i, line in enumerate(lines) if i > start and line.startswith("## ")]
        end = after[0] if after else len(lines)
        lines = lines[:start] + lines[end:]
    kept = "\n".join(lines).rstrip("\n")
    return f"{kept}\n\n" + "\n".join(_override(override)) + "\n"


def card_digest(card: str) -> str:
    """The SHA-256 of a card's text as logged (UTF-8), in hex."""
    return hashlib.sha256(card.encode("utf-8")).hexdigest()


def write_card(
    client: MlflowClient, version: ModelVersion, card: str, *, override: Override | None = None
) -> str:
    """Log the version's card as a new artifact of its run, name it in the version's tags with
    its digest, and return its path.

    Without ``override`` it is the card of the registration; with one, ``card`` gets the
    override's section (replacing an earlier one) and is named after the override's time.
    A name already taken (two overrides within one second) gets ``-2``, ``-3``, ...: a card
    is never overwritten. MLflow's errors are the caller's to translate.
    """
    stem = f"{CARDS_DIR}/version-{version.version}-registered"
    if override is not None:
        card = with_override(card, override)
        stem = f"{CARDS_DIR}/version-{version.version}-override-{override.at:%Y%m%dT%H%M%SZ}"
    taken = {item.path for item in client.list_artifacts(version.run_id, CARDS_DIR)}
    path, copy = f"{stem}.md", 1
    while path in taken:
        copy += 1
        path = f"{stem}-{copy}.md"
    client.log_text(version.run_id, card, path)
    # Tagged after the file exists: the tags never name a card that is not there.
    client.set_model_version_tag(version.name, version.version, CARD_PATH_TAG, path)
    client.set_model_version_tag(version.name, version.version, CARD_DIGEST_TAG, card_digest(card))
    return path


def read_card(client: MlflowClient, version: ModelVersion) -> str:
    """The version's current card, the file its ``model_card.path`` tag names;
    `MissingCardError` if it has none. MLflow's errors are the caller's to translate."""
    path = version.tags.get(CARD_PATH_TAG)
    where = f"in its run {version.run_id or '(none)'}"
    if path is None or not version.run_id:
        raise MissingCardError(f"version {version.version} has no model card {where}")
    folder = path.rpartition("/")[0] or None
    if path not in {artifact.path for artifact in client.list_artifacts(version.run_id, folder)}:
        raise MissingCardError(f"version {version.version} has no {path} {where}")
    with tempfile.TemporaryDirectory() as directory:
        downloaded = client.download_artifacts(version.run_id, path, directory)
        return Path(downloaded).read_text(encoding="utf-8")
