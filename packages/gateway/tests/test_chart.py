from __future__ import annotations

import copy
import io
import itertools
import math
import os
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import matplotlib
import pytest
from matplotlib.image import imread

from payband_contracts.messages import EXAMPLE_PREDICTION, Prediction
from payband_gateway.chart import (
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    WaterfallRow,
    render_waterfall,
    waterfall_rows,
    waterfall_title,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Ordered by magnitude, signs mixed; value_label is left out so the catalogue supplies it.
NINE_CONTRIBUTIONS: list[tuple[str, str, int | str, float]] = [
    ("marital_status", "Marital status", "married", 0.9),
    ("education", "Education", "bachelors_degree", -0.7),
    ("age", "Age", 38, 0.5),
    ("occupation", "Occupation", "management_business_financial", 0.4),
    ("hours_per_week", "Hours per week", 40, -0.3),
    ("class_of_worker", "Class of worker", "self_employed_not_incorporated", 0.2),
    ("sex", "Sex", "female", -0.1),
    ("race", "Race", "american_indian_alaska_native", 0.05),
    ("birthplace", "Birthplace", "abroad", -0.01),
]


def two_band_prediction() -> Prediction:
    return Prediction.model_validate(EXAMPLE_PREDICTION)


def three_band_prediction(*, explained: int = 1, predicted: int = 1) -> Prediction:
    data: dict[str, Any] = copy.deepcopy(EXAMPLE_PREDICTION)
    bands = [
        {"index": 0, "label": "<=50K", "lower_usd": None, "upper_usd": 50000.0},
        {"index": 1, "label": "50K-100K", "lower_usd": 50000.0, "upper_usd": 100000.0},
        {"index": 2, "label": ">100K", "lower_usd": 100000.0, "upper_usd": None},
    ]
    probabilities = [0.2, 0.5, 0.3]
    data["band"] = bands[predicted]
    data["probabilities"] = [
        {"index": band["index"], "label": band["label"], "probability": probability}
        for band, probability in zip(bands, probabilities, strict=True)
    ]
    data["explanation"] = {
        "band_index": explained,
        "base_value": -0.4,
        "contributions": [
            {"feature": feature, "label": label, "value": value, "contribution": contribution}
            for feature, label, value, contribution in NINE_CONTRIBUTIONS
        ],
    }
    return Prediction.model_validate(data)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which always follows the signature."""
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def has_colour(png: bytes, colour: str) -> bool:
    pixels = imread(io.BytesIO(png), format="png")[..., :3]
    close = abs(pixels - matplotlib.colors.to_rgb(colour)) < 1.5 / 255
    return bool(close.all(axis=-1).any())


def assert_chained(rows: list[WaterfallRow], prediction: Prediction) -> None:
    explanation = prediction.explanation
    assert rows[0].start == explanation.base_value
    for previous, row in itertools.pairwise(rows):
        assert row.start == pytest.approx(previous.start + previous.value, abs=1e-12)
    total = explanation.base_value + sum(c.contribution for c in explanation.contributions)
    assert math.isclose(rows[-1].end, total, abs_tol=1e-9)


def test_rows_aggregate_the_rest_into_one_bar() -> None:
    prediction = three_band_prediction()
    rows = waterfall_rows(prediction, top=3)

    assert [row.label for row in rows] == [
        "Marital status = Married",
        "Education = Bachelor's degree",
        "Age = 38 years",
        "6 other features",
    ]
    assert [row.value for row in rows[:3]] == [0.9, -0.7, 0.5]
    rest = sum(contribution for *_, contribution in NINE_CONTRIBUTIONS[3:])
    assert rows[-1].value == pytest.approx(rest, abs=1e-12)
    assert_chained(rows, prediction)


@pytest.mark.parametrize("top", [9, 20])
def test_rows_without_a_rest_have_no_aggregate_bar(top: int) -> None:
    prediction = three_band_prediction()
    rows = waterfall_rows(prediction, top=top)

    assert len(rows) == 9
    assert not any("other feature" in row.label for row in rows)
    assert rows[-1].label == "Birthplace = Abroad"
    assert_chained(rows, prediction)


def test_a_single_remaining_feature_is_named_in_the_singular() -> None:
    rows = waterfall_rows(three_band_prediction(), top=8)

    assert rows[-1].label == "1 other feature"
    assert rows[-1].value == -0.01


def test_rows_use_stored_value_labels_and_catalogue_labels() -> None:
    prediction = two_band_prediction()
    rows = waterfall_rows(prediction, top=8)

    assert [row.label for row in rows] == [
        "Marital status = Married",
        "Education = Bachelor's degree",
        "Age = 38 years",
    ]
    assert_chained(rows, prediction)
    labels = [row.label for row in waterfall_rows(three_band_prediction(), top=9)]
    assert "Hours per week = 40 hours per week" in labels
    assert "Class of worker = Self-employed, not incorporated" in labels


def test_title_names_the_explained_band_and_its_probability() -> None:
    assert waterfall_title(two_band_prediction()) == "Predicted band >50K (p = 0.69)"
    assert waterfall_title(three_band_prediction()) == "Predicted band 50K-100K (p = 0.50)"
    assert (
        waterfall_title(three_band_prediction(explained=2, predicted=1))
        == "Explained band >100K (p = 0.30), predicted 50K-100K"
    )


@pytest.mark.parametrize("top", [0, -1])
def test_top_below_one_is_refused(top: int) -> None:
    with pytest.raises(ValueError, match="top must be at least 1"):
        waterfall_rows(two_band_prediction(), top=top)
    with pytest.raises(ValueError, match="top must be at least 1"):
        render_waterfall(two_band_prediction(), top=top)


def test_dpi_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="dpi must be at least 1"):
        render_waterfall(two_band_prediction(), dpi=0)


@pytest.mark.parametrize(
    ("prediction", "top", "rows"),
    [
        (two_band_prediction(), 8, 3 + 2),
        (three_band_prediction(), 3, 4 + 2),
        (three_band_prediction(), 8, 9 + 2),
    ],
)
@pytest.mark.parametrize("dpi", [50, 100])
def test_png_has_the_expected_size(prediction: Prediction, top: int, rows: int, dpi: int) -> None:
    png = render_waterfall(prediction, top=top, dpi=dpi)

    assert png.startswith(PNG_SIGNATURE)
    width, height = png_size(png)
    assert width == 8 * dpi
    assert abs(height - (1.2 + 0.45 * rows) * dpi) <= 1
    assert len(png) < 100_000
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (height, width)


def test_bars_are_coloured_by_sign() -> None:
    all_positive = render_waterfall(two_band_prediction())
    mixed = render_waterfall(three_band_prediction(), top=3)

    assert has_colour(all_positive, POSITIVE_COLOUR)
    assert not has_colour(all_positive, NEGATIVE_COLOUR)
    assert has_colour(mixed, POSITIVE_COLOUR)
    assert has_colour(mixed, NEGATIVE_COLOUR)


def test_a_dollar_sign_in_a_band_label_is_drawn_as_text() -> None:
    data: dict[str, Any] = copy.deepcopy(EXAMPLE_PREDICTION)
    # An unescaped '$...$' pair would be parsed as mathtext, and '\\frac' fails to parse.
    data["band"]["label"] = "$\\frac$"
    data["probabilities"][1]["label"] = "$\\frac$"
    png = render_waterfall(Prediction.model_validate(data))

    assert png.startswith(PNG_SIGNATURE)


def test_renders_concurrently_from_eight_threads() -> None:
    prediction = three_band_prediction()
    expected = render_waterfall(prediction, top=5)
    start = threading.Barrier(8)

    def render(_: int) -> bytes:
        start.wait(timeout=30)
        return render_waterfall(prediction, top=5)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(render, range(8)))

    assert all(result == expected for result in results)


def test_rendering_leaves_matplotlib_settings_alone() -> None:
    # dict's own items: RcParams' item access would itself resolve the backend via pyplot.
    before = dict(dict.items(matplotlib.rcParams))
    render_waterfall(three_band_prediction())

    assert dict(dict.items(matplotlib.rcParams)) == before


def test_imports_and_renders_without_display_warnings_or_pyplot() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND"}
    }
    script = (
        "import sys\n"
        "from payband_contracts.messages import EXAMPLE_PREDICTION, Prediction\n"
        "from payband_gateway.chart import render_waterfall\n"
        "png = render_waterfall(Prediction.model_validate(EXAMPLE_PREDICTION))\n"
        "assert png.startswith(b'\\x89PNG'), png[:8]\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
