"""Numerical kernels: the design and its well-conditioned basis, blocked tables and their streaming
merges (column statistics, TSQR), double-double and exact rational arithmetic, refinement, and the
training rows' loss and gradient passes.

Pipeline steps (tasks/*.py) call these; kernels know nothing of Prefect, files' formats or users.
"""
