"""course.search's tuning loop: quasi-random search, the boundary check and successive halving."""

import math

import numpy as np
import pytest
from scipy.stats import qmc

from course.search import (
    LogUniform,
    on_boundary,
    quasi_random_search,
    random_search,
    successive_halving,
    widen,
)

SPACE = {"lr": LogUniform(1e-4, 1.0), "weight_decay": LogUniform(1e-6, 1e-2)}


def unit(configs):
    return np.array([[SPACE[k].unit(c[k]) for k in SPACE] for c in configs])


@pytest.mark.parametrize("budget", [4, 9, 16])
def test_quasi_random_search_covers_the_space_more_evenly_than_random_search(budget):
    configs = quasi_random_search(SPACE, budget, seed=0)
    assert len(configs) == budget == len({c["lr"] for c in configs})
    for name, r in SPACE.items():
        assert all(r.low <= c[name] <= r.high for c in configs)
    assert configs == quasi_random_search(SPACE, budget, seed=0)
    assert configs != quasi_random_search(SPACE, budget, seed=1)
    sobol = [qmc.discrepancy(unit(quasi_random_search(SPACE, budget, seed=s))) for s in range(20)]
    rand = [qmc.discrepancy(unit(random_search(SPACE, budget, seed=s))) for s in range(20)]
    assert np.mean(sobol) < 0.6 * np.mean(rand)


def test_quasi_random_search_warns_about_nothing(recwarn):
    quasi_random_search(SPACE, 9, seed=0)  # 9 is no power of two: scipy would warn on stderr
    assert not [w for w in recwarn if "balance" in str(w.message)]


def test_a_range_maps_onto_the_unit_interval_and_back():
    r = LogUniform(1e-3, 10.0)
    assert r.unit(1e-3) == pytest.approx(0) and r.unit(10.0) == pytest.approx(1)
    assert r.unit(0.1) == pytest.approx(0.5)
    assert r.scale(r.unit(0.37)) == pytest.approx(0.37)


def test_the_boundary_check_flags_each_edge_and_widen_stretches_that_side_only():
    space = {"lr": LogUniform(1e-3, 1e-1), "wd": LogUniform(1e-6, 1e-2)}
    assert on_boundary({"lr": 0.09, "wd": 1.1e-6}, space) == {"lr": "high", "wd": "low"}
    assert on_boundary({"lr": 0.01, "wd": 1e-4}, space) == {}
    assert on_boundary({"lr": 0.02, "wd": 1e-4}, space, edge=0.4) == {"lr": "high"}
    wider = widen(space, {"lr": "high", "wd": "low"}, factor=10)
    assert (wider["lr"].low, wider["lr"].high) == (1e-3, pytest.approx(1.0))
    assert (wider["wd"].low, wider["wd"].high) == (pytest.approx(1e-7), 1e-2)
    assert space["lr"].high == 1e-1  # the original is left alone


def fake_start(config):
    """A trial whose score falls with its epochs towards its config's quality ``q``; it records
    how many epochs it was trained."""
    state = {"epochs": 0}
    config["trained"] = state

    def advance(epochs):
        state["epochs"] += epochs
        return config["q"] + 1.0 / state["epochs"]
    return advance


def test_successive_halving_keeps_the_best_third_at_each_rung_and_counts_the_epochs():
    configs = [{"q": q} for q in np.random.default_rng(0).permutation(27) / 27]
    records = successive_halving(configs, fake_start, rungs=[1, 3, 9], keep=1 / 3)
    epochs = sorted(r["epochs"] for r in records)
    assert epochs == [1] * 18 + [3] * 6 + [9] * 3
    assert sum(epochs) == 27 + 18 + 18 == sum(c["trained"]["epochs"] for c in configs)
    finalists = sorted(r["q"] for r in records if r["rung"] == 2)
    assert finalists == pytest.approx([0, 1 / 27, 2 / 27])  # the three best survive
    best = min(records, key=lambda r: r["score"])
    assert best["q"] == 0 and best["score"] == pytest.approx(1 / 9)
    assert all("advance" not in r for r in records)


def test_successive_halving_ranks_a_diverged_trial_last():
    configs = [{"q": math.nan}, {"q": 0.5}, {"q": 0.1}]
    records = successive_halving(configs, fake_start, rungs=[1, 2], keep=1 / 3)
    assert [r["rung"] for r in records] == [0, 0, 1]
