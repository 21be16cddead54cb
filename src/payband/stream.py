"""A stream of candidates sent through the gateway's HTTP API, as an HR tool would send them.

First held-out rows of the test split (never seen in training), then a drifted stream: the
same kind of rows, but older candidates working longer hours with more education, as if the
job ads had started reaching another population. Outcomes (the true band) are recorded for
part of the held-out predictions, and a few predictions get a human review.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd

from payband_contracts.catalogue import FEATURE_CATALOGUE, FeatureName

__all__ = ["Candidate", "StreamError", "StreamResult", "drifted", "held_out", "send_stream"]

CONCURRENCY = 8
# How the drifted population differs from the held-out one.
AGE_SHIFT = 12
HOURS_SHIFT = 15
EDUCATION_STEPS = 2
_FEATURES = [str(name) for name in FEATURE_CATALOGUE.names]
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class StreamError(RuntimeError):
    """The gateway refused or failed a request the stream expected to succeed."""


@dataclass(frozen=True)
class Candidate:
    """One request body's candidate, its true band, and which part of the stream it is."""

    features: dict[str, Any]
    truth: int
    drifted: bool


@dataclass
class StreamResult:
    """What was sent and what the gateway answered."""

    predictions: list[tuple[Candidate, dict[str, Any]]] = field(default_factory=list)
    outcomes: int = 0
    reviews: int = 0
    rejected: int = 0

    @property
    def answered(self) -> int:
        return len(self.predictions)


def _candidates(frame: pd.DataFrame, *, drifted: bool) -> list[Candidate]:
    rows = frame[[*_FEATURES, "band"]].astype(object).to_dict("records")
    return [
        Candidate(
            features={name: _plain(row[name]) for name in _FEATURES},
            truth=int(row["band"]),
            drifted=drifted,
        )
        for row in rows
    ]


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, (int, np.integer)) else str(value)


def held_out(test: pd.DataFrame, count: int, seed: int) -> list[Candidate]:
    """``count`` rows of the test split, in a random order."""
    sample = test.sample(n=min(count, len(test)), random_state=seed)
    return _candidates(sample, drifted=False)


def drifted(test: pd.DataFrame, count: int, seed: int) -> list[Candidate]:
    """``count`` test rows moved to another population: older, longer hours, more education.

    The true band is kept as it was: it only serves outcomes, which the stream records for
    held-out rows only.
    """
    sample = test.sample(n=min(count, len(test)), random_state=seed + 1).copy()
    age = FEATURE_CATALOGUE[FeatureName.AGE]
    hours = FEATURE_CATALOGUE[FeatureName.HOURS_PER_WEEK]
    levels = list(FEATURE_CATALOGUE[FeatureName.EDUCATION].values)
    sample["age"] = (sample["age"].astype(int) + AGE_SHIFT).clip(age.minimum, age.maximum)
    sample["hours_per_week"] = (sample["hours_per_week"].astype(int) + HOURS_SHIFT).clip(
        hours.minimum, hours.maximum
    )
    sample["education"] = [
        levels[min(levels.index(str(level)) + EDUCATION_STEPS, len(levels) - 1)]
        for level in sample["education"]
    ]
    return _candidates(sample, drifted=True)


def _refused(response: httpx.Response, what: str) -> StreamError:
    try:
        detail = response.json().get("error", {}).get("message", response.text[:200])
    except ValueError:
        detail = response.text[:200]
    return StreamError(f"{what}: HTTP {response.status_code}: {detail}")


async def _predict_all(
    client: httpx.AsyncClient,
    candidates: Sequence[Candidate],
    key: str,
    tick: Callable[[], None],
) -> list[tuple[Candidate, dict[str, Any]]]:
    queue: asyncio.Queue[tuple[int, Candidate]] = asyncio.Queue()
    for item in enumerate(candidates):
        queue.put_nowait(item)
    answers: list[dict[str, Any] | None] = [None] * len(candidates)
    headers = {"Authorization": f"Bearer {key}"}

    async def worker() -> None:
        while not queue.empty():
            index, candidate = queue.get_nowait()
            response = await client.post(
                "/v1/predictions", json={"candidate": candidate.features}, headers=headers
            )
            if response.status_code != 200:
                raise _refused(response, "a prediction was refused")
            answers[index] = response.json()
            tick()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return [(c, a) for c, a in zip(candidates, answers, strict=True) if a is not None]


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str) -> None:
    response = await client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    if response.status_code != 201:
        raise _refused(response, f"POST {path}")


def _reviews(predictions: Sequence[tuple[Candidate, dict[str, Any]]], count: int) -> Iterable:
    """A few human reviews: most confirm the band, some override it with a reason."""
    for number, (_, answer) in enumerate(predictions[:count]):
        predicted = answer["band"]["index"]
        if number % 3 == 2:
            other = 0 if predicted else 1
            yield (
                answer["id"],
                {
                    "reviewer": "Local Reviewer",
                    "decision": "override",
                    "band": other,
                    "reason": "The collective agreement for this role sets another band.",
                },
            )
        else:
            yield answer["id"], {"reviewer": "Local Reviewer", "decision": "confirm"}


async def _stream(
    base_url: str,
    candidates: Sequence[Candidate],
    keys: dict[str, str],
    *,
    outcome_share: float,
    reviews: int,
    tick: Callable[[], None],
) -> StreamResult:
    result = StreamResult()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    # Loopback only: no proxy from the environment.
    async with httpx.AsyncClient(
        base_url=base_url, timeout=_TIMEOUT, limits=limits, trust_env=False
    ) as client:
        result.predictions = await _predict_all(client, candidates, keys["predict"], tick)
        # A request the gateway must refuse (and record): an age outside the catalogue.
        bad = {**candidates[0].features, "age": 7}
        response = await client.post(
            "/v1/predictions",
            json={"candidate": bad},
            headers={"Authorization": f"Bearer {keys['predict']}"},
        )
        if response.status_code != 422:
            raise _refused(response, "an invalid candidate was not refused with 422")
        result.rejected = 1
        held = [(c, a) for c, a in result.predictions if not c.drifted]
        with_outcome = held[: int(len(held) * outcome_share)]
        for candidate, answer in with_outcome:
            body = {"band": candidate.truth, "source": "payband demo: the census label"}
            await _post(client, f"/v1/predictions/{answer['id']}/outcome", body, keys["review"])
            result.outcomes += 1
        for prediction_id, body in _reviews(held[len(with_outcome) :], reviews):
            await _post(client, f"/v1/predictions/{prediction_id}/reviews", body, keys["review"])
            result.reviews += 1
    return result


def send_stream(
    base_url: str,
    candidates: Sequence[Candidate],
    keys: dict[str, str],
    *,
    outcome_share: float = 0.5,
    reviews: int = 6,
    tick: Callable[[], None] = lambda: None,
) -> StreamResult:
    """Send every candidate (``CONCURRENCY`` at a time), one invalid request, the outcomes of
    the first ``outcome_share`` of the held-out predictions and ``reviews`` reviews.

    ``keys`` maps "predict" and "review" to API keys with those roles.
    """
    return asyncio.run(
        _stream(base_url, candidates, keys, outcome_share=outcome_share, reviews=reviews, tick=tick)
    )
