"""coefficients.json's inference (t, p, confidence intervals, F, likelihood, AIC, BIC) equals
statsmodels' OLS results on NIST sets and random designs, with and without an intercept.

Oracle: statsmodels.api.OLS on the same rows, where statsmodels itself is accurate (Norris,
Longley, NoInt1, a random design); the certified standard errors already pin ours everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from tasks.config import TrainConfig
from tasks.evaluate.compare import compare_fits
from tasks.exact.fit import fit_exact
from tasks.publish.documents import coefficients_doc
from tasks.publish.reader import jsonable
from tasks.training.train import train_sgd
from tests.helpers import make_design, nist_arrays, nist_meta

RTOL = 1e-10


def _nist(name: str):
    X, y, _ = nist_arrays(name)
    return X, y, nist_meta(name)["model_detail"]["intercept"]


def _random(intercept: bool):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 3)) * [1.0, 5.0, 0.2] + [2.0, -1.0, 10.0]
    return X, 1.0 + X @ [0.5, -0.2, 3.0] + rng.normal(scale=2.0, size=200), intercept


CASES = {"Norris": lambda: _nist("Norris"), "Longley": lambda: _nist("Longley"),
         "NoInt1": lambda: _nist("NoInt1"), "random": lambda: _random(True),
         "random, no intercept": lambda: _random(False)}


def _close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=RTOL, atol=0)


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("case", list(CASES))
def test_inference_in_coefficients_json_equals_statsmodels(case, alpha):
    """Every statistic as statsmodels computes it, to 1e-10 relative; the intercept's entries
    apart from the coefficients', null without an intercept; F uncentered without one."""
    X, y, intercept = CASES[case]()
    design = make_design(X, y, intercept=intercept)
    exact = fit_exact(design)
    sgd = train_sgd(design, TrainConfig(device="cpu", epochs=2))
    doc = jsonable(coefficients_doc(design, exact, sgd, compare_fits(design, exact, sgd, 1e-6), alpha))["exact"]
    res = sm.OLS(y, sm.add_constant(X, has_constant="add") if intercept else X).fit()
    k = int(intercept)

    def flat(field):
        return ([doc[field]["intercept"]] if intercept else []) + doc[field]["coefficients"]

    if not intercept:
        assert all(doc[f]["intercept"] is None for f in ("t_values", "p_values", "conf_int"))
    _close(flat("t_values"), res.tvalues)
    _close(flat("p_values"), res.pvalues)
    _close(np.array(flat("conf_int")), res.conf_int(alpha))
    _close([doc["f_statistic"], doc["f_pvalue"], doc["log_likelihood"], doc["aic"], doc["bic"]],
           [res.fvalue, res.f_pvalue, res.llf, res.aic, res.bic])
    assert (doc["df_resid"], doc["df_model"], doc["alpha"]) == (res.df_resid, res.df_model, alpha)
    assert len(flat("t_values")) == len(X[0]) + k
