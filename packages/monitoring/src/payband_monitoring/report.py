"""The HTML report of one analysis: a summary, the alerts, NannyML's plots and fairness.

Self-contained: plotly.js is embedded once, so the report opens offline and fetches nothing.
"""

from __future__ import annotations

import html
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payband_monitoring.analysis import (
    DISPARATE_IMPACT,
    ESTIMATED,
    FAIRNESS,
    MULTIVARIATE,
    REALIZED,
    UNIVARIATE,
    Analysis,
    quiet_nannyml,
)
from payband_monitoring.settings import MonitoringSettings

__all__ = ["pending", "render", "summary_lines", "write_report"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2933; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #cbd2d9; padding: 0.25rem 0.6rem; text-align: left; }
.alert { color: #b42318; font-weight: 600; }
.ok { color: #1a7f37; }
"""

SECTIONS = (
    (UNIVARIATE, "Univariate drift per feature", {"kind": "drift"}),
    (MULTIVARIATE, "Multivariate drift (data reconstruction error)", {}),
    (ESTIMATED, "Estimated performance (CBPE)", {}),
    (REALIZED, "Realized performance (recorded outcomes)", {}),
)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def pending(analysis: Analysis, settings: MonitoringSettings) -> str:
    """What the records left out of the analysis are, in words."""
    if settings.chunk_period:
        why = f"in periods with fewer than {settings.min_chunk_rows} records"
    else:
        why = f"waiting for a full chunk of {settings.chunk_size}"
    return f"{analysis.rows_pending} {why}"


def summary_lines(analysis: Analysis, settings: MonitoringSettings) -> list[str]:
    """What a run found, in the lines `payband-monitoring run` prints (and Dagster logs)."""
    lines = [
        f"model: {analysis.model_name} version {analysis.model_version}",
        f"records: {analysis.rows_analysed} analysed in {analysis.chunks} chunks "
        f"({analysis.chunking}), {analysis.rows_with_outcome} of them with an outcome; "
        f"not analysed: {pending(analysis, settings)}",
    ]
    alerts = analysis.alerts()
    if not alerts:
        return [*lines, "alerts in the latest chunk: none"]
    lines.append(f"alerts in the latest chunk: {len(alerts)}")
    for row in alerts:
        method = f" {row.method}" if row.method else ""
        lines.append(f"  {row.calculator}: {row.subject}{method} = {row.value:.4g}")
    return lines


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _figure_html(result: Any, options: dict[str, Any]) -> str:
    with quiet_nannyml():
        if options.get("kind") == "drift":
            # One figure per feature: NannyML's single figure of every feature draws each
            # period separator with a scan over all subplots, quadratic in their number (16 s
            # for 11 features against 0.5 s this way).
            figures = [
                result.filter(column_names=[column]).plot(**options)
                for column in result.column_names
            ]
        else:
            figures = [result.plot(**options)]
    return "\n".join(figure.to_html(full_html=False, include_plotlyjs=False) for figure in figures)


def _fairness_figure(analysis: Analysis, settings: MonitoringSettings) -> str:
    import plotly.graph_objects as go

    figure = go.Figure()
    rows = [
        r for r in analysis.results if r.calculator == FAIRNESS and r.method == DISPARATE_IMPACT
    ]
    for attribute in sorted({row.subject for row in rows}):
        mine = sorted((r for r in rows if r.subject == attribute), key=lambda r: r.chunk_index)
        figure.add_trace(
            go.Scatter(
                x=[r.chunk_key for r in mine],
                y=[r.value for r in mine],
                mode="lines+markers",
                name=f"{attribute} disparate impact",
            )
        )
    figure.add_hline(
        y=settings.min_disparate_impact,
        line_dash="dash",
        line_color="#b42318",
        annotation_text=f"minimum {settings.min_disparate_impact}",
    )
    figure.update_layout(
        title="Disparate impact per chunk", yaxis_title="lowest / highest selection rate"
    )
    return figure.to_html(full_html=False, include_plotlyjs=False)


def render(analysis: Analysis, settings: MonitoringSettings) -> str:
    """The report as one HTML document."""
    from plotly.offline import get_plotlyjs

    now = datetime.now(UTC).isoformat(timespec="seconds")
    title = f"payband monitoring: {analysis.model_name} version {analysis.model_version}"
    summary = _table(
        ["", ""],
        [
            ["model", html.escape(f"{analysis.model_name} version {analysis.model_version}")],
            ["reference (MLflow run)", html.escape(analysis.reference_run_id)],
            ["chunks", f"{analysis.chunks} ({html.escape(analysis.chunking)})"],
            ["records analysed", str(analysis.rows_analysed)],
            ["records not analysed", html.escape(pending(analysis, settings))],
            ["records with an outcome", str(analysis.rows_with_outcome)],
            ["decision rule (the bands judged)", html.escape(analysis.decision_rule)],
            ["favourable band (fairness)", str(analysis.favourable_band)],
            ["monitoring run", html.escape(analysis.run_id)],
            ["written", now],
        ],
    )
    alerts = analysis.alerts()
    alert_html = (
        _table(
            ["chunk", "calculator", "subject", "method", "value", "lower", "upper"],
            [
                [
                    html.escape(r.chunk_key),
                    r.calculator,
                    html.escape(r.subject),
                    r.method,
                    _number(r.value),
                    _number(r.lower_threshold),
                    _number(r.upper_threshold),
                ]
                for r in alerts
            ],
        )
        if alerts
        else '<p class="ok">No alert in the latest chunk.</p>'
    )
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        summary,
        "<h2>Alerts in the latest chunk</h2>",
        alert_html,
    ]
    if not analysis.nannyml:
        parts.append(f"<p>Nothing to analyse yet: {html.escape(pending(analysis, settings))}.</p>")
    for key, heading, options in SECTIONS:
        if key in analysis.nannyml:
            parts += [f"<h2>{heading}</h2>", _figure_html(analysis.nannyml[key], options)]
    if analysis.nannyml:
        reference = ", ".join(
            f"{attribute} {value:.3f}" for attribute, value in analysis.reference_fairness.items()
        )
        parts += [
            "<h2>Fairness over time</h2>",
            f"<p>Disparate impact on the reference data: {html.escape(reference or 'n/a')}.</p>",
            _fairness_figure(analysis, settings),
        ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>" + "\n".join(parts) + "</body></html>"
    )


def write_report(analysis: Analysis, settings: MonitoringSettings, path: Path) -> Path:
    """Write the report to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = render(analysis, settings)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False
    ) as handle:
        temporary = Path(handle.name)
        try:
            handle.write(document)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    try:
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
