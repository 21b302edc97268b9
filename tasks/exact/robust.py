"""Heteroskedasticity-robust covariance of the exact fit (--cov HC0|HC1|HC2|HC3), as statsmodels'
OLS results define it, from one more streamed pass over the design with the final parameters.

With X = W T^-1 (W the design's well-conditioned basis, W^T W = R^T R) and v_i = R^-T w_i, whose
squared norm is the leverage h_i:

    cov = (X^T X)^-1 X^T diag(omega) X (X^T X)^-1 = (T R^-1) [sum_i omega_i v_i v_i^T] (T R^-1)^T

with omega_i = e_i^2 (HC0; HC1 scales by n / (n - p)), e_i^2 / (1 - h_i) (HC2), e_i^2 / (1 - h_i)^2
(HC3), e = y - X beta. X^T X is never formed: the sum is p x p in v's coordinates, which are
orthonormal over the rows, so its conditioning is the data's, not the square of X's.

cluster (--cov cluster:COL, statsmodels' CRV1 defaults): the sum is over clusters g of u_g u_g^T,
u_g = sum_{i in g} e_i v_i, scaled by G / (G - 1) * (n - 1) / (n - p); the cluster of each row is
read from the stored table beside the design's columns, block by block. Memory: G x p.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial, reduce

import numpy as np
import pandas as pd
from scipy import linalg

from tasks.kernels.design import Design
from tasks.kernels.passes import LOCAL, Passes
from tasks.kernels.tsqr import Geometry

HC_TYPES = ("HC0", "HC1", "HC2", "HC3")
COV_TYPES = ("nonrobust", *HC_TYPES)


def _block_scores(R: np.ndarray, basis, params: np.ndarray, part: Design) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(e (m,), V = R^-T W^T (p, m)) of each block of the part, in order (empty blocks included)."""
    for features, y in part.blocks():
        e = y - part.matrix_of(features) @ params
        yield e, linalg.solve_triangular(R, part.basis_rows(basis, features).T, trans="T", check_finite=False)


def part_meat(cov_type: str, R: np.ndarray, basis, params: np.ndarray, part: Design) -> np.ndarray:
    """sum_i omega_i v_i v_i^T over one part of the design (the function a pass maps over the parts)."""
    p = len(params)
    total = np.zeros((p, p))
    for e, V in _block_scores(R, basis, params, part):
        omega = e * e
        if cov_type in ("HC2", "HC3"):
            h = np.einsum("ij,ij->j", V, V)
            omega = omega / (1.0 - h) ** (1 if cov_type == "HC2" else 2)
        total += (V * omega) @ V.T
    return total


def part_clusters(column: str, R: np.ndarray, basis, params: np.ndarray, part: Design) -> dict:
    """{cluster: u_g (p,)} over one part of the design (the function a pass maps over the parts)."""
    if not hasattr(part.table, "column_blocks"):
        raise ValueError("clustered standard errors read the clusters from the stored table (a ParquetTable)")
    sums: dict = {}
    for (e, V), groups in zip(_block_scores(R, basis, params, part), part.table.column_blocks(column), strict=True):
        codes, keys = pd.factorize(groups)
        block = np.zeros((len(keys), len(params)))
        np.add.at(block, codes, (V * e).T)
        for key, row in zip(keys.tolist(), block):
            sums[key] = sums[key] + row if key in sums else row
    return sums


def _merge(a: dict, b: dict) -> dict:
    return a | {key: a[key] + row if key in a else row for key, row in b.items()}


def robust_cov(design: Design, geometry: Geometry, M: np.ndarray, params: np.ndarray, cov_type: str,
               passes: Passes = LOCAL, cluster: str | None = None) -> tuple[np.ndarray, int | None]:
    """statsmodels' cov_params() under cov_type (HC0-HC3, or cluster with the column `cluster`):
    (p, p), parameters in order; and the number of clusters (None for HC). M: T R^-1 in float64
    (Geometry.params_map(), which the fit has already formed)."""
    R, params, groups = geometry.R, np.asarray(params), None
    if cov_type in HC_TYPES:
        meat = reduce(np.add, passes.over(partial(part_meat, cov_type, R, geometry.basis, params), design))
    elif cov_type == "cluster" and cluster:
        U = np.array(list(reduce(_merge, passes.over(partial(part_clusters, cluster, R, geometry.basis, params),
                                                    design)).values()))
        groups, meat = len(U), U.T @ U
    else:
        raise ValueError(f"cov_type {cov_type!r}: expected one of {', '.join(HC_TYPES)} or cluster with a column")
    cov = M @ meat @ M.T
    n, p = design.n, design.n_params
    if cov_type == "HC1":
        cov *= n / (n - p)
    if groups is not None:
        cov *= groups / (groups - 1) * (n - 1) / (n - p) if groups > 1 else np.nan
    return (cov + cov.T) / 2, groups
