"""payband-monitoring: drift, performance and fairness of the served model, over time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from payband_contracts.cli_support import add_version_option, run_guarded
from payband_monitoring import __version__

HELP = "Monitoring of the served model: drift, estimated and realized performance, fairness."
app = typer.Typer(
    help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
add_version_option(app, f"payband-monitoring {__version__}", HELP)


def _settings(**overrides: Any) -> Any:
    from payband_monitoring.settings import load_settings

    return run_guarded(lambda: load_settings(**overrides), _errors())


def _audit_settings() -> Any:
    from payband_monitoring.settings import load_audit_settings

    return run_guarded(load_audit_settings, _errors())


def _errors() -> tuple[type[BaseException], ...]:
    from payband_monitoring.errors import MonitoringError

    return (MonitoringError,)


def _summary(analysis: Any, settings: Any) -> None:
    from payband_monitoring.report import summary_lines

    for line in summary_lines(analysis, settings):
        typer.echo(line)


Model = Annotated[
    str | None,
    typer.Option("--model-version", help="Analyse this registry version, not the champion's."),
]


@app.command()
def migrate() -> None:
    """Create or upgrade the monitoring schema (PAYBAND_MONITORING_DATABASE_URL)."""
    from payband_monitoring.store import migrate as run

    settings = _settings()
    run_guarded(lambda: run(settings.database_url), _errors())
    typer.echo("monitoring schema is up to date")


@app.command()
def run(model_version: Model = None) -> None:
    """Analyse the audit log once, store the results and write the report."""
    from payband_monitoring.runner import Monitor

    settings = _settings(model_version=model_version)
    audit_settings = _audit_settings()
    analysis = run_guarded(lambda: Monitor(settings, audit_settings).run(), _errors())
    _summary(analysis, settings)
    typer.echo(f"report: {settings.report_path}")


@app.command()
def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    model_version: Model = None,
) -> None:
    """Analyse the audit log and write the HTML report to a file (nothing is stored)."""
    from payband_monitoring.report import write_report
    from payband_monitoring.runner import Monitor

    settings = _settings(model_version=model_version)
    audit_settings = _audit_settings()
    analysis = run_guarded(lambda: Monitor(settings, audit_settings).analyse(), _errors())
    run_guarded(lambda: write_report(analysis, settings, output), _errors())
    _summary(analysis, settings)
    typer.echo(f"report: {output}")


@app.command()
def history(
    calculator: Annotated[
        str | None,
        typer.Option(
            help="univariate_drift, multivariate_drift, estimated_performance, "
            "realized_performance or fairness."
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="A feature, metric, attribute or attribute=group.")
    ] = None,
    model_version: Annotated[str | None, typer.Option(help="Only this model version.")] = None,
    alerts: Annotated[bool, typer.Option("--alerts", help="Only results that alerted.")] = False,
) -> None:
    """Print stored results, oldest chunk first, as tab-separated lines."""
    from payband_monitoring.store import ResultStore

    settings = _settings()
    rows = run_guarded(
        lambda: ResultStore(settings.database_url).history(
            model_name=settings.model_name,
            model_version=model_version,
            calculator=calculator,
            subject=subject,
            alerts_only=alerts,
        ),
        _errors(),
    )
    columns = ["model_version", "chunk_key", "chunk_start", "rows", "calculator", "subject"]
    columns += ["method", "value", "alert"]
    typer.echo("\t".join(columns))
    for row in rows:
        typer.echo("\t".join("" if row[c] is None else str(row[c]) for c in columns))


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on \\[default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on \\[default: 8090].")] = None,
    interval_s: Annotated[
        float | None, typer.Option(help="Seconds between runs \\[default: 300].")
    ] = None,
) -> None:
    """Run monitoring every interval; serve /metrics, /report, /healthz and /readyz."""
    from payband_monitoring.service import ServeError
    from payband_monitoring.service import serve as run_service

    settings = _settings(host=host, port=port, interval_s=interval_s)
    audit_settings = _audit_settings()
    run_guarded(lambda: run_service(settings, audit_settings), (ServeError, *_errors()))


def main() -> None:
    app()
