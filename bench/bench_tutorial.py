"""Training: the tutorial's own loop against tutorial mode and default mode, side by side in one
process; then epochs and seconds to convergence on real tables, per optimizer, with and without
--precondition. Prints markdown.

python -m bench.bench_tutorial [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from bench.bench_nist import load
from bench.common import markdown_table, ratio, secs
from tasks.config import TrainConfig
from tasks.exact.fit import fit_exact
from tasks.kernels.design import Design
from tasks.kernels.tsqr import design_geometry
from tasks.training.train import train_sgd

X = np.array([1.05, 1.54, 2.01, 2.55, 3.13, 3.45, 4.02, 4.65, 5.34, 5.50])
Y = np.array([10.3, 15.4, 21.2, 25.4, 30.1, 35.6, 40.5, 43.4, 50.1, 56.6])
OPTIMIZERS = ("sgd", "momentum", "adam", "lbfgs")


def tutorial_loop(epochs: int) -> tuple[int, np.ndarray]:
    """The tutorial as written: nn.Linear + MSELoss + SGD(lr=0.001) with autograd, loss.item() every epoch."""
    x = torch.tensor(X, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(Y, dtype=torch.float32).unsqueeze(1)
    model = torch.nn.Linear(1, 1)
    loss_fn = torch.nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    history = []
    for _ in range(epochs):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return epochs, np.array([float(model.bias.detach()[0]), float(model.weight.detach()[0, 0])])


def mode(cfg: TrainConfig) -> tuple[int, np.ndarray]:
    """linreg-flow's training from the arrays, all set-up included (design, geometry, tensors)."""
    result = train_sgd(Design.from_arrays(X.reshape(-1, 1), Y, ("x",), "y"), cfg)
    return result.epochs, result.params


def speed(epochs: int, repeats: int) -> str:
    tutorial = dict(lr=0.001, epochs=epochs, tol=0, standardize=False, dtype="float32", device="cpu")
    approaches = {
        "the tutorial's loop (autograd, loss.item() each epoch)": lambda: tutorial_loop(epochs),
        "tutorial mode (`--lr 0.001 --epochs N --tol 0 --no-standardize --dtype float32`)":
            lambda: mode(TrainConfig(**tutorial)),
        "default mode (sgd, lr auto, standardized, float64, stops at convergence)":
            lambda: mode(TrainConfig(device="cpu")),
        "default mode with `--precondition`": lambda: mode(TrainConfig(device="cpu", precondition=True)),
    }
    times: dict[str, list[float]] = {name: [] for name in approaches}
    outcome = {name: fn() for name, fn in approaches.items()}  # warm-up: torch's first-call costs
    for _ in range(repeats):  # interleaved, so that a noisy neighbour slows every approach alike
        for name, fn in approaches.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(next(iter(times.values())))
    rows = []
    for name, runs in times.items():
        median = statistics.median(runs)
        epochs, params = outcome[name]
        rows.append([name, str(epochs), secs(median), f"{1e6 * median / epochs:.1f}", ratio(base / median),
                     f"{params[0]:.6g}", f"{params[1]:.6g}"])
    table = markdown_table(["approach", "epochs", "seconds (median)", "µs per epoch", "× faster than the loop",
                            "b0", "b1"], rows)
    return (f"The seed data (10 points), median of {repeats} interleaved runs after a warm-up; "
            f"set-up included.\n\n{table}")


def macrodata() -> Design:
    """statsmodels' macrodata: 203 quarters, realgdp on the 13 other columns."""
    import statsmodels.datasets.macrodata as macro

    frame = macro.load_pandas().data
    names = tuple(c for c in frame.columns if c != "realgdp")
    return Design.from_arrays(frame[list(names)].to_numpy(float), frame["realgdp"].to_numpy(float), names, "realgdp")


def convergence(names: list[str], optimizers: tuple[str, ...]) -> str:
    rows = []
    for name in names:
        design = macrodata() if name == "macrodata" else load(name)[0]
        geometry = design_geometry(design)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exact = fit_exact(design, geometry)
        for precondition in (False, True):
            for optimizer in optimizers:
                cfg = TrainConfig(optimizer=optimizer, precondition=precondition, device="cpu")
                result = train_sgd(design, cfg, geometry)
                diff = np.max(np.abs(result.params - exact.params) / np.abs(exact.params))
                rows.append([name, f"{exact.condition_number_scaled:.3g}", optimizer, "yes" if precondition else "",
                             str(result.epochs), result.stop_reason, secs(result.seconds), f"{diff:.2g}",
                             "yes" if diff <= 1e-6 else "**no**"])
    return markdown_table(["data", "cond. (standardized)", "optimizer", "precondition", "epochs", "stop",
                           "seconds", "max rel. diff vs exact", "within 1e-6"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1000 epochs, one repeat, two tables")
    args = parser.parse_args()
    print(speed(1000, 1) if args.smoke else speed(10_000, 5))
    print("\nDefaults otherwise (lr auto, tol 1e-15, up to 10000 epochs, float64), from the same geometry as "
          "the exact fit; the stop rule ends a run once the Newton step of the gradient puts every parameter "
          "within 1e-4 times the verdict's tolerance 1e-6 of the optimum, or at the noise floor.\n")
    names = ["Longley"] if args.smoke else ["macrodata", "Longley", "Norris", "Pontius", "Filip", "Wampler2",
                                            "Wampler4", "Wampler5"]
    print(convergence(names, ("sgd", "lbfgs") if args.smoke else OPTIMIZERS))


if __name__ == "__main__":
    main()
