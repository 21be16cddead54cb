"""The launchers' options and their defaults (shared by the command line and the code)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DemoOptions", "UpOptions"]


@dataclass(frozen=True)
class DemoOptions:
    fresh: bool = False
    retrain: bool = False
    trials: int = 5
    timeout_s: float | None = None
    held_out: int = 2_000
    drifted: int = 1_000
    override_gates: bool = True
    seed: int = 20_261_127


@dataclass(frozen=True)
class UpOptions:
    trials: int = 5
    monitoring_interval_s: float = 60.0
    dagster: bool = True
