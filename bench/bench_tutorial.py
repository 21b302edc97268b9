"""Tutorial-mode training time: linreg-flow's train_sgd against the plain tutorial loop, same process."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from tasks.config import TrainConfig
from tasks.kernels.design import Design
from tasks.sgd import train_sgd

X = np.array([1.05, 1.54, 2.01, 2.55, 3.13, 3.45, 4.02, 4.65, 5.34, 5.50])
Y = np.array([10.3, 15.4, 21.2, 25.4, 30.1, 35.6, 40.5, 43.4, 50.1, 56.6])
TUTORIAL = TrainConfig(lr=0.001, epochs=10_000, tol=0, standardize=False, dtype="float32", device="cpu")


def plain_loop() -> float:
    """The tutorial as written: nn.Linear + MSELoss + SGD(lr=0.001), loss.item() every epoch."""
    x = torch.tensor(X, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(Y, dtype=torch.float32).unsqueeze(1)
    model = torch.nn.Linear(1, 1)
    loss_fn = torch.nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    history = []
    for _ in range(10_000):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return float(model.weight.detach()[0, 0])


def ours() -> float:
    design = Design.from_arrays(X.reshape(-1, 1), Y, ("x",), "y")
    return train_sgd(design, TUTORIAL).coefficients[0]


def main(repeats: int = 7) -> dict:
    torch.manual_seed(0)
    times = {"plain": [], "linreg-flow": []}
    ours(), plain_loop()  # warm-up: first-call costs of torch are not the loop's
    for _ in range(repeats):
        for name, fn in (("plain", plain_loop), ("linreg-flow", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    plain, mine = statistics.median(times["plain"]), statistics.median(times["linreg-flow"])
    print(f"tutorial mode, 10000 epochs, median of {repeats}: plain loop {plain:.3f} s, "
          f"linreg-flow {mine:.3f} s, ratio {mine / plain:.2f}")
    return {"plain_s": plain, "linreg_flow_s": mine, "ratio": mine / plain}


if __name__ == "__main__":
    main()
