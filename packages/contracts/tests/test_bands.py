import pytest
from pydantic import ValidationError

from payband_contracts import SalaryBands, format_usd
from payband_contracts.settings import ContractsSettings


def test_default_is_two_adult_bands():
    bands = SalaryBands()
    assert bands.edges_usd == (50_000.0,)
    assert len(bands) == 2
    assert [(b.index, b.label) for b in bands.bands] == [(0, "<=50K"), (1, ">50K")]
    assert bands.bands[0].lower_usd is None
    assert bands.bands[0].upper_usd == 50_000
    assert bands.bands[1].lower_usd == 50_000
    assert bands.bands[1].upper_usd is None


def test_edges_belong_to_the_lower_band():
    bands = SalaryBands()
    assert bands.band_for(50_000).index == 0
    assert bands.band_for(50_000.01).index == 1
    assert bands.band_for(0).index == 0


def test_more_edges_make_more_bands():
    bands = SalaryBands(edges_usd=(25_000, 52_500, 100_000, 1_250_000))
    assert bands.labels == ("<=25K", "25K-52.5K", "52.5K-100K", "100K-1.25M", ">1.25M")
    assert [bands.band_for(x).index for x in (1, 25_000, 30_000, 100_001, 2e6)] == [0, 0, 1, 3, 4]
    assert bands.band(2).label == "52.5K-100K"
    with pytest.raises(ValueError, match=r"outside 0\.\.4"):
        bands.band(5)


@pytest.mark.parametrize(
    "edges", [(50_000, 50_000), (60_000, 50_000), (), (-1.0,), (float("inf"),)]
)
def test_edges_must_be_positive_and_strictly_ascending(edges):
    with pytest.raises(ValidationError):
        SalaryBands(edges_usd=edges)


def test_format_usd():
    assert [format_usd(x) for x in (800, 1000, 50_000, 52_500, 1e6, 1_250_000)] == [
        "800",
        "1K",
        "50K",
        "52.5K",
        "1M",
        "1.25M",
    ]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PAYBAND_SALARY_BAND_EDGES_USD", "[30000, 60000]")
    monkeypatch.setenv("PAYBAND_MAX_BATCH_SIZE", "25")
    settings = ContractsSettings()
    assert settings.max_batch_size == 25
    assert settings.salary_bands.labels == ("<=30K", "30K-60K", ">60K")


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PAYBAND_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="max_batch_size"):
        ContractsSettings()
