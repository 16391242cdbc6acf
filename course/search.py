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

__all__ = ["LogUniform", "grid_search", "random_search", "quasi_random_search", "run_trials",
           "best_trial", "on_boundary", "widen", "successive_halving", "lr_range_test",
           "suggested_lr"]


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
        return self.scale(rng.uniform(0.0, 1.0, n))

    def scale(self, u) -> np.ndarray:
        """Points ``u`` of [0, 1] mapped onto the range, on the log scale."""
        return np.exp(math.log(self.low) + np.asarray(u) * math.log(self.high / self.low))

    def unit(self, value) -> np.ndarray:
        """Where ``value`` sits in the range: 0 at ``low``, 1 at ``high`` (log scale)."""
        return np.log(np.asarray(value) / self.low) / math.log(self.high / self.low)


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


def quasi_random_search(space: Mapping[str, LogUniform], budget: int, *, seed: int
                        ) -> list[dict]:
    """``budget`` configurations from a scrambled Sobol sequence (scipy.stats.qmc): spread over
    the space more evenly than independent draws, yet every one tries a new value of each
    hyperparameter (the playbook's choice while exploring).

    Sobol points are balanced in blocks of a power of two: this draws the next power of two at
    or above ``budget`` and keeps the first ``budget`` of them.
    """
    from scipy.stats import qmc

    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    unit = qmc.Sobol(d=len(space), scramble=True, seed=seed).random_base2(
        max(0, math.ceil(math.log2(budget))))[:budget]
    columns = {name: r.scale(unit[:, i]) for i, (name, r) in enumerate(space.items())}
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


def on_boundary(trial: Mapping, space: Mapping[str, LogUniform], *, edge: float = 0.1
                ) -> dict[str, str]:
    """The hyperparameters whose value in ``trial`` sits in the outer ``edge`` of its range (log
    scale), each with the side: ``{"lr": "high"}``. A best trial there says the range may cut
    off better settings: widen it on that side and search again.

    >>> on_boundary({"lr": 0.9}, {"lr": LogUniform(0.001, 1.0)})
    {'lr': 'high'}
    """
    sides = {}
    for name, r in space.items():
        u = float(r.unit(trial[name]))
        if u <= edge:
            sides[name] = "low"
        elif u >= 1 - edge:
            sides[name] = "high"
    return sides


def widen(space: Mapping[str, LogUniform], sides: Mapping[str, str], *, factor: float = 30.0
          ) -> dict[str, LogUniform]:
    """A copy of ``space`` with each range in ``sides`` stretched by ``factor`` on that side.

    >>> widen({"lr": LogUniform(0.001, 0.01)}, {"lr": "high"})["lr"].high
    0.3
    """
    wider = dict(space)
    for name, side in sides.items():
        r = space[name]
        wider[name] = (LogUniform(r.low, r.high * factor) if side == "high"
                       else LogUniform(r.low / factor, r.high))
    return wider


def successive_halving(configs: list[dict], start: Callable[[dict], Callable[[int], float]],
                       *, rungs: Iterable[int], keep: float = 1 / 3) -> list[dict]:
    """Successive halving (Jamieson & Talwalkar 2016; one bracket of Hyperband, Li et al. 2018).

    ``start(config)`` returns ``advance(epochs) -> score``, which trains that configuration's
    own model ``epochs`` epochs more and returns its score (lower is better). Every config
    trains to the first rung; only the best ``keep`` of them go on to the next rung, and so on.
    Returns one record per config: its last score, the epochs it got, and the rung it reached.
    """
    rungs = list(rungs)
    records = [{**config, "advance": start(config), "epochs": 0, "score": math.inf, "rung": 0}
               for config in configs]
    alive = records
    for rung, target in enumerate(rungs):
        for r in alive:
            r["score"] = float(r["advance"](target - r["epochs"]))
            r["epochs"], r["rung"] = target, rung
        if rung + 1 < len(rungs):
            # a diverged trial (nan or inf) ranks last
            ranked = sorted(alive, key=lambda r: r["score"] if math.isfinite(r["score"])
                            else math.inf)
            alive = ranked[:max(1, math.floor(len(alive) * keep))]
    return [{k: v for k, v in r.items() if k != "advance"} for r in records]


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
