"""Predict step: a stored version's exact fit and SGD model applied to new rows, block by block.

design.json holds the exact fit in its well-conditioned form: the basis W of the design's column
space (W = X T), the coefficients c on it (W c = X beta) and R of W = Q R. For a new row x with
basis row w:
  prediction = w c
  h          = |R^-T w|^2            (= x (X^T X)^-1 x^T: W^T W = R^T R)
  std_error  = s sqrt(h)             (of the mean prediction; s = residual_std)
  mean interval       prediction -/+ t std_error
  prediction interval prediction -/+ t sqrt(s^2 + std_error^2)
with t = t_{1 - alpha/2}(df_resid), scipy's: statsmodels' get_prediction().summary_frame(alpha).
Under a robust covariance V (--cov HC0-HC3) std_error = sqrt(x V x^T) of the design row x and t is
the normal quantile, as statsmodels' robust results predict.
The SGD prediction is the torch.nn.Linear rebuilt from sgd_model.pt, on the term values. A weighted
fit (--weights) predicts as statsmodels' WLS does for new rows of weight 1: its basis is of the
whitened rows sqrt(w) [1, terms], which for w = 1 are [1, terms].
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg, stats

from tasks.errors import UserInputError
from tasks.kernels.design import ScaledBasis, term_values
from tasks.kernels.formula import FormulaModel
from tasks.publish.schema import Coefficients, DesignRecord
from tasks.training.model_file import linear_from

MODELS = ("exact", "sgd")
INTERVAL_COLUMNS = ("prediction", "std_error", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "sgd_prediction")


@dataclass(frozen=True)
class StoredModel:
    """What a prediction needs from one version; p parameters, q = p - intercept terms."""

    features: tuple[str, ...]
    degree: int
    basis: ScaledBasis
    basis_coefficients: np.ndarray  # c (p,)
    r_factor: np.ndarray  # R (p, p), upper triangular
    residual_std: float
    df_resid: int
    feature_min: np.ndarray  # (n_features,) the fitted range
    feature_max: np.ndarray
    sgd: torch.nn.Linear  # float64, on the term values (q,)
    formula: FormulaModel | None = None  # the terms of a formula model, with the levels it was fitted on
    robust_cov: np.ndarray | None = None  # cov_params under a robust cov_type (None: nonrobust)
    # A weighted fit's basis is of its whitened rows sqrt(w) [1, terms]: a new row (weight 1) is [1, terms].
    weighted: bool = False
    intercept: bool = True

    @property
    def text(self) -> frozenset[int]:
        """The indexes of the features read as text (a formula's categorical text columns)."""
        return frozenset(j for j, f in enumerate(self.features) if self.formula and f in self.formula.strings)


def stored_model(design: DesignRecord, coefficients: Coefficients, sgd_state: dict) -> StoredModel:
    """The model from a version's design.json, coefficients.json and sgd_model.pt (as loaded)."""
    b = design.basis
    basis = ScaledBasis(b.kind, np.array(b.shift, dtype=np.float64), np.array(b.scale, dtype=np.float64),
                        b.ones, b.degree, exact=())
    exact = coefficients.exact
    return StoredModel(
        features=design.features, degree=design.degree, basis=basis,
        basis_coefficients=np.array(design.basis_coefficients, dtype=np.float64),
        r_factor=np.array(design.r_factor, dtype=np.float64),
        residual_std=float(exact["residual_std"]), df_resid=int(exact["df_resid"]),
        feature_min=np.array(design.feature_min, dtype=np.float64),
        feature_max=np.array(design.feature_max, dtype=np.float64),
        sgd=linear_from(sgd_state),
        formula=FormulaModel.from_json(design.formula) if design.formula else None,
        robust_cov=(np.array(exact["cov_params"], dtype=np.float64)
                    if exact.get("cov_type", "nonrobust") != "nonrobust" else None),
        weighted=design.weights is not None, intercept=design.intercept,
    )


def output_columns(use: str) -> tuple[str, ...]:
    """The columns the prediction adds after the input's own: the intervals, with --model sgd the
    exact prediction, and whether the row lies outside the fitted range."""
    return (*INTERVAL_COLUMNS, *(("exact_prediction",) if use == "sgd" else ()), "extrapolated")


def kept_names(header: tuple[str, ...], added: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The input's columns as the output names them: a name the prediction adds (e.g. `prediction`)
    becomes input_<name> (input_2_<name>, ... while that is taken too), so the contract's columns keep
    their meaning; and the renamed ones, old -> new."""
    taken, names, renamed = set(header) | set(added), [], {}
    for name in header:
        if name in added:
            new, k = f"input_{name}", 2
            while new in taken:
                new, k = f"input_{k}_{name}", k + 1
            taken.add(new)
            renamed[name] = new
            name = new
        names.append(name)
    return tuple(names), renamed


def check_columns(source: str, header: tuple[str, ...], features: tuple[str, ...]) -> None:
    """Every feature column of the model is in the input's header, once."""
    counts = Counter(header)
    for name in features:
        if counts[name] == 0:
            raise UserInputError(f"{source}: feature column {name!r} not found (columns: {', '.join(header)})")
        if counts[name] > 1:
            raise UserInputError(f"{source}: duplicate column name {name!r}")


def critical_t(model: StoredModel, alpha: float) -> float:
    """t_{1 - alpha/2}(df_resid) (the normal quantile under a robust covariance): the half-width of the
    intervals in standard errors."""
    if model.robust_cov is not None:
        return float(stats.norm.ppf(1 - alpha / 2))
    return float(stats.t.ppf(1 - alpha / 2, model.df_resid))


def level_codes(model: StoredModel, columns: list[np.ndarray], first_row: int, where) -> list[np.ndarray]:
    """A formula model's categorical columns checked against the levels it was fitted on (an unseen
    one is UserInputError naming the column, the row and the level), text columns as the index of
    each value in its levels; the other columns as they are."""
    if model.formula is None:
        return columns
    out = []
    for j, (name, values) in enumerate(zip(model.features, columns)):
        levels = model.formula.levels.get(name)
        if levels is None:
            out.append(values)
            continue
        index = {level: i for i, level in enumerate(levels)}
        if j not in model.text:  # a number used as C(col): its levels are numbers too
            index |= {float(level): i for i, level in enumerate(levels)}
        codes = np.array([index.get(v, -1) for v in values.tolist()], dtype=np.float64)
        if (codes < 0).any():
            i = int(np.argmax(codes < 0))
            file, at = where(first_row + i)
            shown = ", ".join(map(repr, levels[:10])) + (", ..." if len(levels) > 10 else "")
            raise UserInputError(f"{file}: column {name!r}, {at}: level {values[i]!r} was not in the data the "
                                 f"model was fitted on (its levels: {shown})")
        out.append(codes if j in model.text else values)
    return out


def predict_block(model: StoredModel, columns: list[np.ndarray], t: float, use: str) -> dict[str, np.ndarray]:
    """The columns the prediction adds to one block (output_columns): columns are the model's
    features, (m,) float64 each (level_codes' for a formula model); t from critical_t; use: "exact" or
    "sgd", the model whose prediction the intervals are centred on."""
    features = np.column_stack(columns)
    terms = model.formula.terms_of(features) if model.formula else term_values(features, model.degree)
    if model.weighted:  # the whitened design's columns for a row of weight 1: [1, terms]
        W = model.basis.apply(np.column_stack([np.ones(len(terms)), terms]) if model.intercept else terms)
    else:
        W = model.basis.apply(features if model.degree > 1 else terms)  # (m, p)
    exact = W @ model.basis_coefficients
    # h = |R^-T w|^2, one triangular solve for the block: R^T V = W^T, V (p, m).
    V = linalg.solve_triangular(model.r_factor, W.T, trans="T")
    h = np.einsum("ij,ij->j", V, V)
    se = model.residual_std * np.sqrt(h)
    if model.robust_cov is not None:
        intercept = len(model.robust_cov) == terms.shape[1] + 1
        X = np.column_stack([np.ones(len(terms)), terms]) if intercept else terms
        se = np.sqrt(np.einsum("ij,jk,ik->i", X, model.robust_cov, X))
    with torch.no_grad():
        sgd = model.sgd(torch.from_numpy(np.ascontiguousarray(terms))).numpy()[:, 0]
    centre = exact if use == "exact" else sgd
    half_obs = t * np.sqrt(model.residual_std**2 + se**2)
    out = {
        "prediction": centre, "std_error": se, "ci_lower": centre - t * se, "ci_upper": centre + t * se,
        "pi_lower": centre - half_obs, "pi_upper": centre + half_obs, "sgd_prediction": sgd,
    }
    return out | ({"exact_prediction": exact} if use == "sgd" else {}) | {"extrapolated": extrapolated(model, columns)}


def extrapolated(model: StoredModel, columns: list[np.ndarray]) -> np.ndarray:
    """(m,) bool: the row has a feature outside the range the model was fitted on."""
    outside = np.zeros(len(columns[0]), dtype=bool)
    for j, v in enumerate(columns):
        if model.formula and model.features[j] in model.formula.levels:
            continue  # a level seen in the fit is inside its range
        outside |= (v < model.feature_min[j]) | (v > model.feature_max[j])
    return outside
