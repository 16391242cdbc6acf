"""course.search: grid vs random configurations, trials, and the learning-rate range test."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from course.data import to_loader
from course.search import (
    LogUniform,
    best_trial,
    grid_search,
    lr_range_test,
    random_search,
    run_trials,
    suggested_lr,
)

SPACE = {"lr": LogUniform(1e-4, 1.0), "weight_decay": LogUniform(1e-6, 1e-2)}


def test_a_grid_repeats_each_value_and_covers_the_ends():
    grid = grid_search(SPACE, budget=9)
    assert len(grid) == 9
    lrs = sorted({c["lr"] for c in grid})
    assert np.allclose(lrs, [1e-4, 1e-2, 1.0])
    assert all(sum(c["lr"] == lr for c in grid) == 3 for lr in lrs)
    assert len({(c["lr"], c["weight_decay"]) for c in grid}) == 9


def test_random_search_tries_a_new_value_of_every_hyperparameter_in_every_run():
    configs = random_search(SPACE, budget=9, seed=0)
    assert len(configs) == 9
    for name, rng in SPACE.items():
        values = [c[name] for c in configs]
        assert len(set(values)) == 9 and all(rng.low <= v <= rng.high for v in values)
    assert configs == random_search(SPACE, budget=9, seed=0)  # reproducible
    assert configs != random_search(SPACE, budget=9, seed=1)


def test_log_uniform_samples_every_decade_about_equally():
    values = LogUniform(1e-4, 1.0).sample(40_000, np.random.default_rng(0))
    per_decade = np.histogram(np.log10(values), bins=4, range=(-4, 0))[0] / len(values)
    assert np.allclose(per_decade, 0.25, atol=0.01)


@pytest.mark.parametrize("bad", [
    lambda: grid_search(SPACE, budget=10), lambda: random_search(SPACE, budget=0, seed=0),
    lambda: LogUniform(0.0, 1.0), lambda: LogUniform(1.0, 0.1)])
def test_bad_searches_are_refused_saying_what_to_do(bad):
    with pytest.raises(ValueError):
        bad()


def test_trials_keep_each_config_with_its_score_and_the_best_skips_diverged_runs():
    trials = run_trials([{"lr": 0.1}, {"lr": 10.0}, {"lr": 1.0}],
                        lambda lr: math.nan if lr > 5 else (lr - 0.9) ** 2)
    assert [t["lr"] for t in trials] == [0.1, 10.0, 1.0] and math.isnan(trials[1]["score"])
    assert best_trial(trials)["lr"] == 1.0
    with pytest.raises(ValueError, match="diverged"):
        best_trial([{"lr": 1.0, "score": math.inf}])


def _problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(512, 10, generator=gen)
    y = (X[:, :3].sum(1) > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    return model, to_loader(X.numpy(), y.numpy(), batch_size=32, shuffle=True, seed=seed)


def test_the_range_test_raises_the_rate_geometrically_and_stops_when_the_loss_blows_up():
    model, loader = _problem()
    result = lr_range_test(model, loader, torch.optim.SGD(model.parameters(), lr=0.1),
                           start=1e-4, end=100.0, steps=200)
    lrs, losses = result["lr"], result["loss"]
    assert len(lrs) == len(losses) < 200  # stopped early: SGD at lr 100 blows up
    assert np.allclose(lrs[1:] / lrs[:-1], (100.0 / 1e-4) ** (1 / 199))
    assert losses.min() < 0.5 * losses[0]  # it learned on the way
    assert losses[-1] > 4 * losses.min() or not np.isfinite(losses[-1])
    lr = suggested_lr(result)
    assert lr == pytest.approx(lrs[np.nanargmin(losses)] / 10)


def test_the_suggested_rate_trains_the_model_well():
    model, loader = _problem(1)
    lr = suggested_lr(lr_range_test(model, loader, torch.optim.SGD(model.parameters(), lr=1.0),
                                    start=1e-4, end=100.0, steps=200))
    model, loader = _problem(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(5):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    X, y = loader.dataset.tensors
    assert (model(X).argmax(1) == y).float().mean() > 0.9


def test_the_range_test_refuses_an_empty_range():
    model, loader = _problem()
    with pytest.raises(ValueError, match="start < end"):
        lr_range_test(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), start=1.0,
                      end=0.1)
