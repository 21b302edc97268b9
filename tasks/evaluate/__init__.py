"""Evaluation: the exact fit and the trained model in, their comparison and the plots out.

`compare.Comparison` (the verdict, the differences, the excess loss) and `plots` (fit.png, loss.png
and the other figures, rendered once as PNG bytes).
"""
