"""What the benchmarks share: a row of the result table, a timer, and the table printer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Row:
    measure: str
    result: str
    target: str = ""
    ratio: str = ""
    passed: bool | None = None  # None: informative, no target


def timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def print_table(rows: list[Row]) -> None:
    status = {None: "", True: "pass", False: "FAIL"}
    table = [("measure", "result", "target", "ratio", "")]
    table += [(row.measure, row.result, row.target, row.ratio, status[row.passed]) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
