"""A pass over the data as map and merge: a function of one part of the design, results merged.

Every n-row computation (TSQR, refinement gradients, sums of squares, training gradients) is a
pure function of a part; a Mapper runs it over the parts, here one after another, or as Prefect
tasks on a Dask cluster (flows/dask.py). Merges are order-stable (TSQR, Chan, double-double), so
results agree with the single-part pass to float64 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# mapper(fn, parts) -> [fn(part) for part in parts], in order, wherever it runs; fn is picklable
# (a module-level function or a functools.partial of one).
Mapper = Callable[[Callable[[Any], T], Sequence[Any]], list[T]]


def local_map(fn: Callable[[Any], T], parts: Sequence[Any]) -> list[T]:
    """Run fn over the parts in this process, one after another."""
    return [fn(part) for part in parts]


@dataclass(frozen=True)
class Passes:
    """How every pass of a run goes over the design: split into up to `parts` runs of consecutive
    rows, `map` runs a function over them (local_map here, Prefect tasks on Dask in flows/dask.py)."""

    map: Mapper = local_map
    parts: int = 1

    def split(self, design):
        """The design's parts (kernels.design.Design.split), in row order."""
        return design.split(self.parts)

    def over(self, fn: Callable[[Any], T], design) -> list[T]:
        """[fn(part) for each part of design], in row order, wherever the map runs them."""
        return self.map(fn, self.split(design))


LOCAL = Passes()  # one part, in this process
