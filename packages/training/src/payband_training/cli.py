"""payband-training: train, evaluate, record and register a salary-band model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from payband_contracts.cli_support import add_version_option, fail, run_guarded, settings_problems
from payband_training import __version__

app = typer.Typer(
    help="The training pipeline of payband: search, evaluate, record, register.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
add_version_option(
    app,
    f"payband-training {__version__}",
    "The training pipeline of payband: search, evaluate, record, register.",
)

T = TypeVar("T")
console = Console(stderr=True)


def _run(action: Callable[[], T]) -> T:
    """Run `action`; an error a user can cause ends in one `error:` line, not a traceback."""
    from payband_data.errors import DataError
    from payband_training.registry import RegistryError
    from payband_training.tracking import TrackingError

    return run_guarded(action, (DataError, RegistryError, TrackingError, ValueError))


def _settings(**overrides: Any) -> Any:
    from payband_data.settings import DataSettings
    from payband_training.settings import TrainingSettings

    try:
        given = {key: value for key, value in overrides.items() if value is not None}
        return TrainingSettings(**given), DataSettings()
    except ValidationError as error:
        fail(f"invalid setting: {settings_problems(error)}")


def _summary(outcome: Any) -> Table:
    table = Table(title="training summary", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    registration = outcome.registration
    rows = [
        ("features", outcome.features_uri),
        ("train / test", f"{outcome.train_uri}\n{outcome.test_uri}"),
        (
            "search",
            f"{outcome.search.n_trials} trials, {len(outcome.search.front)} on the Pareto front, "
            f"{sum(t.feasible for t in outcome.search.trials)} meeting every gate",
        ),
        (
            "chosen",
            f"trial {outcome.search.chosen.number}: "
            f"{outcome.search.chosen.config.mitigation.describe()}, "
            f"CV ROC AUC {outcome.search.best_value:.4f}",
        ),
        ("MLflow run", outcome.run_id),
        ("model", f"{registration.name} version {registration.version}"),
        ("champion", "yes, promoted" if registration.promoted else "no, not promoted"),
    ]
    metrics = outcome.evaluation.metrics()
    for name in ("roc_auc", "accuracy", "balanced_accuracy", "macro_f1", "log_loss", "brier_score"):
        if name in metrics:
            rows.append((f"test {name}", f"{metrics[name]:.4f}"))
    for attribute in ("sex", "race"):
        key = f"{attribute}_disparate_impact"
        if key in metrics:
            rows.append((f"{attribute} disparate impact", f"{metrics[key]:.3f}"))
    rows.append(("gates", "\n".join(registration.decision.reasons)))
    for what, value in rows:
        table.add_row(what, value)
    return table


@app.command()
def train(
    features_uri: Annotated[
        str | None,
        typer.Argument(help="Features snapshot URI [default: the newest features/<source>]."),
    ] = None,
    source: Annotated[str, typer.Option(help="Source whose newest snapshot to use.")] = "adult",
    trials: Annotated[int | None, typer.Option(help="Optuna trials of this worker.")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Stop the search after seconds.")] = None,
    use_protected: Annotated[
        bool | None,
        typer.Option("--use-protected/--no-use-protected", help="Let sex and race in."),
    ] = None,
    mitigation: Annotated[
        str | None,
        typer.Option(
            help="Mitigation methods the search may choose, comma-separated, from "
            "none, reweigh, massage, penalty, selection_penalty ('none' alone: no mitigation)."
        ),
    ] = None,
) -> None:
    """Train on a features snapshot, record the run in MLflow and register the model."""
    settings, data_settings = _settings(
        trials=trials,
        timeout_s=timeout_s,
        use_protected_attributes=use_protected,
        mitigation=mitigation,
    )
    # After the settings are checked: MLflow and XGBoost take seconds to import.
    from payband_training.pipeline import newest_features_uri
    from payband_training.pipeline import train as run_training

    uri = features_uri or _run(lambda: newest_features_uri(source, data_settings))

    def progress(step: str, detail: str) -> None:
        console.print(f"[bold]{step}[/bold] {detail}")

    outcome = _run(lambda: run_training(uri, settings, data_settings, progress=progress))
    Console().print(_summary(outcome))


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The version of the registered model.")],
    override_gates: Annotated[
        bool,
        typer.Option(
            "--override-gates",
            help="Promote a version that failed its gates; recorded with --reason and --by.",
        ),
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why the failed gates may be overridden (20+ characters).")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who overrides the gates.")] = None,
) -> None:
    """Make a registered version champion: only if its gates passed, or by a recorded override."""
    if not override_gates and (reason is not None or by is not None):
        fail("--reason and --by go with --override-gates; a version that passed needs neither")
    if override_gates and (reason is None or by is None):
        fail("--override-gates needs --reason TEXT and --by NAME: an override records who and why")
    settings, _ = _settings()
    # After the arguments are checked: MLflow takes seconds to import.
    from payband_training import registry

    if not override_gates:
        promotion = _run(lambda: _promote_passed(version, settings))
        typer.echo(
            f"{promotion.name} version {promotion.version} is champion "
            f"(before: {promotion.previous_champion or 'none'})"
        )
        return
    done = _run(lambda: registry.promote_with_override(version, reason, by, settings))
    if done.previous_champion == done.version:
        how = "it already was, so nothing was overridden"
    elif done.failed_reasons:
        how = f"gates overridden by {done.actor}, recorded on the version and in its model card"
    else:
        how = "its gates passed, so nothing was overridden"
    typer.echo(
        f"{done.name} version {done.version} is champion "
        f"(before: {done.previous_champion or 'none'}); {how}"
    )


def _promote_passed(version: str, settings: Any) -> Any:
    from payband_training.registry import GatesFailed, promote

    try:
        return promote(version, settings)
    except GatesFailed as refused:
        fail(
            f"{refused}; to promote it anyway, record an override with "
            "--override-gates --reason TEXT --by NAME"
        )


def main() -> None:
    app()
