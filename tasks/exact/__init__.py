"""The exact fit: the design in, certified least-squares coefficients and their statistics out.

In: the design and its geometry (from ingest). Out: `fit.ExactFit` (coefficients refined in
double-double until certified, standard errors, R², condition numbers), `inference.Inference`
(t, p, intervals, F, likelihood, as statsmodels names them) and, for new rows, `predict`
(predictions, intervals and extrapolation flags from a version's design.json).
"""
