"""Waterfall charts of stored explanations, drawn as PNG from the recorded numbers only.

Built on matplotlib's object-oriented API (Figure + FigureCanvasAgg), never pyplot: charts are
rendered in a server thread pool, and pyplot keeps global, thread-unsafe state.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from payband_contracts import FEATURE_CATALOGUE
from payband_contracts.messages import FeatureContribution, Prediction

POSITIVE_COLOUR = "#d62728"
NEGATIVE_COLOUR = "#1f77b4"
REFERENCE_COLOUR = "#555555"
BASE_LABEL = "Average over training data"
_BAR_HEIGHT = 0.6
_WIDTH = 8.0
_LABEL_SIZE = 9


@dataclass(frozen=True, slots=True)
class WaterfallRow:
    """One bar of the waterfall: it starts where the previous bar ended."""

    label: str
    start: float
    value: float

    @property
    def end(self) -> float:
        return self.start + self.value


def contribution_label(contribution: FeatureContribution) -> str:
    """'Marital status = Married': the feature's label and the candidate's value in words."""
    value_label = contribution.value_label
    if value_label is None:
        value_label = FEATURE_CATALOGUE[contribution.feature].display(contribution.value)
    return f"{contribution.label} = {value_label}"


def waterfall_rows(prediction: Prediction, top: int) -> list[WaterfallRow]:
    """The `top` largest contributions, then the rest summed into one bar, chained from the
    base value to the explained band's score."""
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    explanation = prediction.explanation
    shown = explanation.contributions[:top]
    rest = explanation.contributions[top:]
    bars = [(contribution_label(c), c.contribution) for c in shown]
    if rest:
        noun = "feature" if len(rest) == 1 else "features"
        bars.append((f"{len(rest)} other {noun}", sum(c.contribution for c in rest)))
    rows = []
    position = explanation.base_value
    for label, value in bars:
        rows.append(WaterfallRow(label=label, start=position, value=value))
        position += value
    return rows


def waterfall_title(prediction: Prediction) -> str:
    """'Predicted band >50K (p = 0.69)', naming the predicted band too when another is
    explained."""
    explained = prediction.probabilities[prediction.explanation.band_index]
    if explained.index == prediction.band.index:
        return f"Predicted band {explained.label} (p = {explained.probability:.2f})"
    return (
        f"Explained band {explained.label} (p = {explained.probability:.2f}), "
        f"predicted {prediction.band.label}"
    )


def _plain(text: str) -> str:
    # A pair of '$' in a label would otherwise be typeset as mathtext.
    return text.replace("$", r"\$")


def render_waterfall(prediction: Prediction, *, top: int = 8, dpi: int = 100) -> bytes:
    """A PNG waterfall of the prediction's explanation: from the average score over the
    training data, through the largest contributions, to the explained band's score."""
    if dpi < 1:
        raise ValueError(f"dpi must be at least 1, not {dpi}")
    rows = waterfall_rows(prediction, top)
    explanation = prediction.explanation
    band = prediction.probabilities[explanation.band_index]
    base = explanation.base_value
    score = base + sum(c.contribution for c in explanation.contributions)
    labels = [BASE_LABEL, *(row.label for row in rows), f"Score of {band.label}"]

    # Rows top to bottom: the base value, one per bar, the final score.
    row_count = len(labels)
    height = 1.2 + 0.45 * row_count
    figure = Figure(figsize=(_WIDTH, height), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    # Margins are measured once instead of a layout engine, which would draw everything twice.
    renderer = canvas.get_renderer()
    label_font = FontProperties(size=_LABEL_SIZE)
    label_width = max(
        renderer.get_text_width_height_descent(label, label_font, ismath=False)[0]
        for label in labels
    )
    left = min((label_width / dpi + 0.2) / _WIDTH, 0.6)
    figure.subplots_adjust(
        left=left, right=1 - 0.3 / _WIDTH, top=1 - 0.6 / height, bottom=0.6 / height
    )
    axes = figure.add_subplot()
    _draw_waterfall(axes, rows, base, score, row_count)

    band_label = _plain(band.label)
    axes.set_yticks(range(row_count), labels=[_plain(label) for label in labels])
    axes.tick_params(axis="y", labelsize=_LABEL_SIZE)
    axes.tick_params(axis="x", labelsize=8)
    axes.set_ylim(row_count - 0.5, -0.5)
    axes.set_xlabel(f"Contribution to the log-odds of {band_label}", fontsize=_LABEL_SIZE)
    axes.spines[["top", "right"]].set_visible(False)

    figure.text(
        0.5,
        1 - 0.08 / height,
        _plain(waterfall_title(prediction)),
        ha="center",
        va="top",
        fontsize=12,
    )
    model = prediction.model
    figure.text(
        0.5,
        1 - 0.33 / height,
        _plain(f"Model {model.name}, version {model.version}"),
        ha="center",
        va="top",
        fontsize=7,
        color=REFERENCE_COLOUR,
    )

    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def _draw_waterfall(
    axes: Axes, rows: list[WaterfallRow], base: float, score: float, row_count: int
) -> None:
    bar_y = [index + 1 for index in range(len(rows))]
    colours = [POSITIVE_COLOUR if row.value >= 0 else NEGATIVE_COLOUR for row in rows]
    axes.barh(
        bar_y,
        [row.value for row in rows],
        left=[row.start for row in rows],
        height=_BAR_HEIGHT,
        color=colours,
    )
    score_y = row_count - 1
    axes.plot([base, score], [0, score_y], linestyle="none", marker="D", color=REFERENCE_COLOUR)
    for x in (base, score):
        axes.axvline(x, color=REFERENCE_COLOUR, linewidth=0.8, linestyle=":", zorder=0)
    # Connectors from each bar's end to the next row's start.
    ends = [base, *(row.end for row in rows)]
    axes.vlines(
        ends,
        [y + _BAR_HEIGHT / 2 for y in range(len(ends))],
        [y + 1 - _BAR_HEIGHT / 2 for y in range(len(ends))],
        color=REFERENCE_COLOUR,
        linewidth=0.8,
    )
    for y, row in zip(bar_y, rows, strict=True):
        rightwards = row.value >= 0
        axes.annotate(
            f"{row.value:+.2f}",
            xy=(row.end, y),
            xytext=(4 if rightwards else -4, 0),
            textcoords="offset points",
            ha="left" if rightwards else "right",
            va="center",
            fontsize=_LABEL_SIZE,
        )
    for y, x in ((0, base), (score_y, score)):
        axes.annotate(
            f"{x:.2f}",
            xy=(x, y),
            xytext=(8, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=_LABEL_SIZE,
            fontweight="bold",
        )
    # Bars stick to their left edge by default, which would leave no room for the values.
    axes.use_sticky_edges = False
    axes.margins(x=0.15)
