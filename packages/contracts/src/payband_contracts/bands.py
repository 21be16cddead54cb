"""Salary bands: defined by ascending edges in USD.

A band covers the amounts above its lower edge up to and including its upper edge, so the
default single edge at 50,000 gives the two UCI Adult bands "<=50K" and ">50K".
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import pairwise
from typing import Annotated

from pydantic import Field, model_validator

from payband_contracts.base import ContractModel

DEFAULT_EDGES_USD: tuple[float, ...] = (50_000.0,)
MAX_EDGES = 20


class SalaryBand(ContractModel):
    """One salary band: its index (0 for the lowest), label and edges in USD."""

    index: Annotated[int, Field(ge=0, strict=True)]
    label: Annotated[str, Field(min_length=1, max_length=40)]
    lower_usd: float | None = Field(
        default=None, description="Exclusive lower edge in USD; null for the lowest band."
    )
    upper_usd: float | None = Field(
        default=None, description="Inclusive upper edge in USD; null for the highest band."
    )


def format_usd(amount: float) -> str:
    """A compact amount: 50000 -> '50K', 52500 -> '52.5K', 1250000 -> '1.25M'."""
    for divisor, suffix in ((1_000_000, "M"), (1_000, "K")):
        if amount >= divisor:
            return f"{amount / divisor:g}{suffix}"
    return f"{amount:g}"


class SalaryBands(ContractModel):
    """The band definition a model is trained and served with."""

    edges_usd: Annotated[
        tuple[Annotated[float, Field(gt=0)], ...],
        Field(
            min_length=1,
            max_length=MAX_EDGES,
            description="Strictly ascending band edges in USD; n edges make n + 1 bands.",
        ),
    ] = DEFAULT_EDGES_USD

    @model_validator(mode="after")
    def _edges_ascend(self) -> SalaryBands:
        for lower, upper in pairwise(self.edges_usd):
            if upper <= lower:
                raise ValueError(
                    f"edges_usd must be strictly ascending, but {upper:g} follows {lower:g}"
                )
        return self

    @property
    def bands(self) -> tuple[SalaryBand, ...]:
        edges = self.edges_usd
        bands = [SalaryBand(index=0, label=f"<={format_usd(edges[0])}", upper_usd=edges[0])]
        for index, (lower, upper) in enumerate(pairwise(edges), start=1):
            label = f"{format_usd(lower)}-{format_usd(upper)}"
            bands.append(SalaryBand(index=index, label=label, lower_usd=lower, upper_usd=upper))
        bands.append(
            SalaryBand(index=len(edges), label=f">{format_usd(edges[-1])}", lower_usd=edges[-1])
        )
        return tuple(bands)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(band.label for band in self.bands)

    def __len__(self) -> int:
        return len(self.edges_usd) + 1

    def band(self, index: int) -> SalaryBand:
        """The band with this index; ValueError naming the valid range otherwise."""
        if not 0 <= index < len(self):
            raise ValueError(f"band index {index} is outside 0..{len(self) - 1}")
        return self.bands[index]

    def band_for(self, amount_usd: float) -> SalaryBand:
        """The band an annual amount in USD falls into (edges belong to the lower band)."""
        return self.bands[bisect_left(self.edges_usd, amount_usd)]
