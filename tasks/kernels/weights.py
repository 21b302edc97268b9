"""Weighted least squares (--weights COL), as statsmodels' WLS defines it: ordinary least squares on
the whitened rows s [1, terms] and s y, s = sqrt(w).

The whitened design is a plain design without an intercept (when the model has one, its first column
is s itself), so the geometry, the certified fit, the robust covariance (statsmodels' HC and
cluster covariances of WLS are those of the whitened rows too) and the training run on it unchanged;
its parameters are the model's, in the same order. The fit is certified for the whitened float64
matrix as statsmodels forms it (s and each product rounded once). What WLS defines on the raw rows
comes from one pass (`weigh`): the total sum of squares, centered by the weighted mean (statsmodels'
centered_tss) or sum w y^2; 1/2 sum log w, the likelihood's share of the weights; and whether the
raw design spans the constant (statsmodels' k_constant), from s^T X_w.

Flows in: the model's design over the stored table and the name of its weights column. Flows out:
a Weighting (what the pass learned) and the whitened design (`whiten`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from tasks.kernels.design import Design
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.table import ColumnStats

INTERCEPT = "intercept"  # the whitened design's name for the column s (the model's intercept)


@dataclass(frozen=True)
class Weighting:
    """What the weighting pass learned about the model's rows and weights w.

    column: the weights' column; intercept: the model's (the whitened design's first column is then
    s); stats: the whitened table's columns [s y, s, s terms] (no s without an intercept);
    total: sum w; means, m2: of the raw columns [y, terms], the weighted mean and sum w (v - mean)^2
    (merged block by block, Chan's update with weights); half_log: 1/2 sum log w; cross: s^T of each
    whitened term column, roots: s^T s, for k_constant.
    """

    column: str
    intercept: bool
    stats: ColumnStats = field(compare=False)
    total: float
    means: tuple[float, ...]
    m2: tuple[float, ...]
    half_log: float
    cross: tuple[float, ...]
    roots: float

    def tss(self, centered: bool) -> float:
        """statsmodels' WLS total sum of squares: sum w (y - weighted mean)^2 when the design spans the
        constant (centered_tss), else sum w y^2 (uncentered_tss)."""
        return self.m2[0] if centered else self.m2[0] + self.total * self.means[0] ** 2

    def spans_constant(self, geometry) -> bool:
        """statsmodels' k_constant of the raw design: with an intercept; without one, whether the raw
        columns span 1, i.e. the whitened ones span s: |Q^T s|^2 = s^T s, with W^T s from the pass
        (the whitened basis only scales its columns), no pass over the rows."""
        if self.intercept:
            return True
        b = geometry.basis
        if b.kind != "columns" or np.any(b.shift != 0) or self.roots <= 0:
            return False
        proj = np.linalg.solve(geometry.R.T, np.asarray(self.cross) / b.scale)
        return bool(proj @ proj >= self.roots * (1 - 1e-9))

    def to_json(self) -> dict:
        return {"column": self.column, "intercept": self.intercept, "stats": self.stats.to_json(),
                "total": self.total, "means": list(self.means), "m2": list(self.m2), "half_log": self.half_log,
                "cross": list(self.cross), "roots": self.roots}

    @classmethod
    def from_json(cls, doc: dict) -> Weighting:
        return cls(str(doc["column"]), bool(doc["intercept"]), ColumnStats.from_json(doc["stats"]),
                   float(doc["total"]), tuple(map(float, doc["means"])), tuple(map(float, doc["m2"])),
                   float(doc["half_log"]),
                   tuple(map(float, doc["cross"])), float(doc["roots"]))


def labels(design: Design) -> tuple[str, ...]:
    """The whitened design's column names: the model's parameters, intercept first when it has one."""
    return ((INTERCEPT,) if design.intercept else ()) + tuple(design.term_names)


def whitened_block(design: Design, terms: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(m, 1 + p) whitened rows [s y, s (with an intercept), s terms] of a block's terms, s = sqrt(w)."""
    s = np.sqrt(w)
    k = int(design.intercept)
    out = np.empty((len(y), 1 + k + terms.shape[1]))
    np.multiply(s, y, out=out[:, 0])
    if k:
        out[:, 1] = s
    np.multiply(terms, s[:, None], out=out[:, 1 + k:])
    return out


def _weights(design: Design, column: str) -> Iterator[np.ndarray]:
    for w in design.table.column_blocks(column):
        yield np.asarray(w, dtype=np.float64)


@dataclass(frozen=True)
class WhitenedTable:
    """The whitened rows of a design over the stored table, block by block: the table a WLS fit runs on.
    raw: the model's design (its table holds the weights' column); stats: the whitened columns'."""

    raw: Design
    column: str
    stats: ColumnStats = field(compare=False)

    @property
    def rows(self) -> int:
        return self.raw.n

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.raw.target, *labels(self.raw))

    def blocks(self) -> Iterator[np.ndarray]:
        for (features, y), w in zip(self.raw.blocks(), _weights(self.raw, self.column), strict=True):
            yield whitened_block(self.raw, self.raw.terms_of(features), y, w)

    def split(self, parts: int) -> list[WhitenedTable]:
        return [replace(self, raw=part) for part in self.raw.split(parts)]

    def column_blocks(self, name: str) -> Iterator[np.ndarray]:
        return self.raw.table.column_blocks(name)


@dataclass
class _WeighFold:
    """What the weighting pass gathers from some consecutive rows (a part of the design)."""

    stats: ColumnStats
    total: float
    mean: np.ndarray
    m2: np.ndarray
    half_log: list[float]
    roots: list[float]
    cross: np.ndarray

    def add(self, total: float, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan's update with weights: the weighted means and sums w (v - mean)^2 of rows that follow."""
        d, new = mean - self.mean, self.total + total
        self.mean, self.m2 = self.mean + d * (total / new), self.m2 + m2 + d * d * (self.total * (total / new))
        self.total = new

    def merge(self, other: _WeighFold) -> None:
        """Add what the weighting pass gathered from the rows that follow (another part's fold)."""
        if not other.total:  # a part without rows: nothing to add (and Chan's update would divide by 0)
            return
        self.stats = self.stats.merge(other.stats)
        self.cross = self.cross + other.cross
        self.roots += other.roots
        self.half_log += other.half_log
        self.add(other.total, other.mean, other.m2)


def _weigh_part(column: str, design: Design) -> _WeighFold:
    k, q = int(design.intercept), len(design.term_names)
    fold = _WeighFold(ColumnStats.empty(1 + k + q), 0.0, np.zeros(1 + q), np.zeros(1 + q), [], [], np.zeros(k + q))
    for (features, y), w in zip(design.blocks(), _weights(design, column), strict=True):
        if not len(y):
            continue
        terms = design.terms_of(features)
        rows = whitened_block(design, terms, y, w)
        fold.stats = fold.stats.merge(ColumnStats.of(rows))
        s = rows[:, 1] if k else np.sqrt(w)
        fold.cross += s @ rows[:, 1:]
        fold.roots.append(float(s @ s))
        fold.half_log.append(0.5 * float(np.sum(np.log(w))))
        raw = np.column_stack([y, terms])
        wb = float(np.sum(w))
        mb = (w @ raw) / wb
        fold.add(wb, mb, w @ (raw - mb) ** 2)
    return fold


def weigh(design: Design, column: str, passes: Passes = LOCAL) -> Weighting:
    """The weighting pass over the model's design and its weights (finite and > 0, checked on ingest),
    part by part where passes runs them, merged in row order."""
    folds = passes.over(partial(_weigh_part, column), design)
    whole = folds[0]
    for fold in folds[1:]:
        whole.merge(fold)
    return Weighting(column, design.intercept, whole.stats, whole.total, tuple(map(float, whole.mean)),
                     tuple(map(float, whole.m2)), math.fsum(whole.half_log), tuple(map(float, whole.cross)),
                     math.fsum(whole.roots))


def whiten(design: Design, weighting: Weighting) -> Design:
    """The whitened design of a model and its weighting: terms s [1, terms], no intercept of its own."""
    table = WhitenedTable(design, weighting.column, weighting.stats)
    return Design(table, labels(design), design.target, 1, False, None, None, weighting=weighting)
