"""course.sanity: the checks before tuning find a bad initialisation, a loop that cannot learn
and a model that ignores its inputs."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from course.sanity import initial_loss, input_independent_gap, overfit_one_batch, sanity_checks


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread beats several that wait on each other (2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def data(n=400, k=4, seed=0, majority=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    if majority:  # every other sample is class 0: the majority class
        y = np.where(np.arange(n) % 2 == 0, 0, y)
    X = (rng.normal(size=(n, 8)) + 2.0 * np.eye(k, 8)[y]).astype(np.float32)
    return X, y


def mlp(gain=1.0, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        net[-1].weight.mul_(gain)
    return net


def test_a_healthy_model_passes_all_three_checks():
    X, y = data()
    report = sanity_checks(mlp, X[:300], y[:300], X[300:], y[300:], overfit_steps=150,
                           baseline_steps=150)
    assert report.n_classes == 4 and report.log_k == pytest.approx(math.log(4))
    assert abs(report.initial_loss - math.log(4)) < 0.15
    assert report.one_batch_loss < 0.01
    assert report.real_accuracy > report.zeroed_accuracy + 0.4
    assert "ln K = ln 4" in str(report) and "zeroed inputs" in str(report)


def test_a_confident_initialisation_starts_far_above_log_k():
    X, y = data()
    assert initial_loss(mlp(gain=30.0), X, y) > 2 * math.log(4)


def test_a_loop_that_cannot_learn_does_not_overfit_one_batch():
    X, y = data()
    assert overfit_one_batch(mlp(), X[:32], y[:32], steps=100, lr=0.0) > 1.0
    assert overfit_one_batch(mlp(), X[:32], y[:32], steps=100) < 0.01


def test_zeroed_inputs_learn_only_the_class_frequencies():
    X, y = data(majority=True)
    real, zeroed = input_independent_gap(mlp, X[:300], y[:300], X[300:], y[300:], steps=150)
    assert zeroed == pytest.approx(np.mean(y[300:] == 0), abs=1e-6)  # it always says class 0
    assert real > zeroed + 0.2
