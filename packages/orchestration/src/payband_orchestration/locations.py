"""payband's Dagster code locations: one per pipeline package, the one list of them.

Read by the default of PAYBAND_ORCHESTRATION_CODE_LOCATIONS (one code server per location on
one machine), by the workspace of `payband up` (`dagster dev` loads each module itself) and by
the deployment tests (compose's `dagster-<name>` services serve `-m <module>`). A package's
code location is its module `payband_<name>.definitions`, whose `defs` (an `@definitions`
function) Dagster finds itself; the names are strings here, so this package still imports no
payband package.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOCATIONS", "Location", "location"]


@dataclass(frozen=True)
class Location:
    """A code location: its name in Dagster and in the UI, the module a code server loads
    (`dagster code-server start -m <module>`) and that server's port when all share one
    machine."""

    name: str
    module: str
    port: int


# In the order of the lifecycle: data, then training on it, serving its champion, monitoring.
LOCATIONS = (
    Location("data", "payband_data.definitions", 4000),
    Location("training", "payband_training.definitions", 4001),
    Location("serving", "payband_serving.definitions", 4002),
    Location("monitoring", "payband_monitoring.definitions", 4003),
)


def location(name: str) -> Location:
    """The code location called ``name``; KeyError naming the known ones."""
    for known in LOCATIONS:
        if known.name == name:
            return known
    raise KeyError(f"no code location {name!r} (known: {', '.join(x.name for x in LOCATIONS)})")
