"""Hyperparameter search on a budget of runs: grid vs random search, and the LR range test.

A search space maps each hyperparameter to a :class:`LogUniform` range (learning rates and
weight decays are searched on a log scale)::

    space = {"lr": LogUniform(1e-4, 3.0), "weight_decay": LogUniform(1e-6, 1e-2)}
    grid = grid_search(space, budget=9)                 # 3 x 3: only 3 distinct lr values
    rand = random_search(space, budget=9, seed=0)       # 9 distinct lr values
    trials = run_trials(grid, lambda lr, weight_decay: ...)  # each config + its score

Bergstra & Bengio (2012): when only a few hyperparameters matter, random search tries more
distinct values of each one than a grid with the same number of runs. The learning-rate range
test (Smith, 2017) raises the rate exponentially over a few hundred mini-batches and records the
loss: it falls, flattens, then blows up, and a good rate sits below the blow-up.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["LogUniform", "grid_search", "random_search", "run_trials", "best_trial",
           "lr_range_test", "suggested_lr"]


@dataclass(frozen=True)
class LogUniform:
    """A positive range searched on a log scale, e.g. ``LogUniform(1e-4, 1.0)``."""

    low: float
    high: float

    def __post_init__(self):
        if not 0 < self.low < self.high:
            raise ValueError(f"LogUniform needs 0 < low < high, got {self.low}, {self.high}")

    def grid(self, n: int) -> np.ndarray:
        """``n`` values evenly spaced on the log scale, both ends included."""
        return np.geomspace(self.low, self.high, n)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` values drawn uniformly on the log scale."""
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), n))


def grid_search(space: Mapping[str, LogUniform], budget: int) -> list[dict]:
    """Every combination of ``budget ** (1/d)`` values per hyperparameter (d of them).

    >>> [round(c["lr"], 3) for c in grid_search({"lr": LogUniform(0.01, 1.0)}, budget=3)]
    [0.01, 0.1, 1.0]
    """
    per_axis = round(budget ** (1 / len(space)))
    if per_axis < 1 or per_axis ** len(space) != budget:
        raise ValueError(f"a grid over {len(space)} hyperparameters needs a budget that is a "
                         f"power {len(space)} (4, 9, 16, ... for two); got {budget}: use "
                         f"random_search for any budget")
    axes = [rng.grid(per_axis) for rng in space.values()]
    return [dict(zip(space, (float(v) for v in values), strict=True))
            for values in itertools.product(*axes)]


def random_search(space: Mapping[str, LogUniform], budget: int, *, seed: int) -> list[dict]:
    """``budget`` configurations, each hyperparameter drawn independently (log-uniform)."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    rng = np.random.default_rng(seed)
    columns = {name: r.sample(budget, rng) for name, r in space.items()}
    return [{name: float(columns[name][i]) for name in space} for i in range(budget)]


def run_trials(configs: Iterable[dict], objective: Callable[..., float]) -> list[dict]:
    """Call ``objective(**config)`` for each config; return each config with its ``score``."""
    return [{**config, "score": float(objective(**config))} for config in configs]


def best_trial(trials: list[dict]) -> dict:
    """The trial with the lowest finite score (a diverged run scores nan or inf)."""
    finite = [t for t in trials if math.isfinite(t["score"])]
    if not finite:
        raise ValueError("every trial diverged: lower the search range of the learning rate")
    return min(finite, key=lambda t: t["score"])


def _batches(loader: Iterable):
    """The loader's batches, over and over (a range test may need more than one epoch)."""
    while True:
        yield from loader


def lr_range_test(model: nn.Module, loader: Iterable, optimizer, *, start: float = 1e-5,
                  end: float = 10.0, steps: int = 200, smoothing: float = 0.9,
                  stop_factor: float = 4.0, loss_fn: Callable | None = None, device=None
                  ) -> dict[str, np.ndarray]:
    """Train with a rate raised from ``start`` to ``end`` by the same factor at every batch.

    Returns ``{"lr": ..., "loss": ...}``: the rate of each step and the loss, smoothed by an
    exponential moving average (bias-corrected, as in Adam) because one batch's loss is noisy.
    Stops early once the smoothed loss exceeds ``stop_factor`` times its lowest value. The
    model and optimizer are changed: run it on a throwaway copy.
    """
    if not 0 < start < end:
        raise ValueError(f"the range test needs 0 < start < end, got {start}, {end}")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    lrs = np.geomspace(start, end, steps)  # the same factor from one step to the next
    device = next(model.parameters()).device if device is None else torch.device(device)
    model.to(device).train()
    losses, avg = [], 0.0
    for i, (lr, (x, y)) in enumerate(zip(lrs, _batches(loader), strict=False)):
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        avg = smoothing * avg + (1 - smoothing) * loss.item()
        losses.append(avg / (1 - smoothing ** (i + 1)))
        if not math.isfinite(losses[-1]) or losses[-1] > stop_factor * min(losses):
            break
    return {"lr": lrs[:len(losses)], "loss": np.array(losses)}


def suggested_lr(result: Mapping[str, np.ndarray], *, below: float = 10.0) -> float:
    """Smith's reading: the rate of the lowest smoothed loss, divided by ``below`` (a safe
    distance from where the loss blows up)."""
    losses = np.where(np.isfinite(result["loss"]), result["loss"], np.inf)
    return float(result["lr"][int(np.argmin(losses))] / below)
