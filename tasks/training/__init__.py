"""Training: the design in, what torch gradient descent reached out.

In: the design, its geometry and the training options. Out: `train.SGDResult` (coefficients on the
original scale, the loss of every epoch, why it stopped). Modules: `setup` (training coordinates,
the automatic learning rate, the optimizer), `train` (the epochs and the checks), `stop_rule` (when
the estimated distance to the optimum says stop), `progress` (log lines while it runs) and
`model_file` (sgd_model.pt, saved and loaded).
"""
