"""course.stability.watch_steps: the loss and the gradient norm before clipping, per step."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from course.data import to_loader
from course.stability import watch_steps


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread beats several that wait on each other (2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(256, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    return model, to_loader(X, y, batch_size=32, shuffle=True, seed=seed)


def test_the_recorded_norm_is_the_one_before_clipping_and_clipping_changes_the_run():
    model, loader = problem()
    plain = watch_steps(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), steps=20)
    model, loader = problem()  # the same first batch and weights, measured by hand
    first = next(iter(loader))
    nn.functional.cross_entropy(model(first[0]), first[1]).backward()
    norm0 = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    model, loader = problem()
    clipped = watch_steps(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), steps=20,
                          max_norm=1e-3)
    assert len(plain["loss"]) == len(plain["grad_norm"]) == 20 == len(clipped["loss"])  # cycles
    assert clipped["grad_norm"][0] == pytest.approx(float(norm0), rel=1e-5)
    assert clipped["grad_norm"][0] > 1e-3
    assert plain["grad_norm"][0] == pytest.approx(clipped["grad_norm"][0])
    assert plain["loss"][-1] < plain["loss"][0]
    assert clipped["loss"][-1] == pytest.approx(clipped["loss"][0], abs=0.05)  # tiny steps


def test_a_warm_up_scheduler_steps_every_batch():
    model, loader = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10)
    watch_steps(model, loader, opt, steps=5, scheduler=warmup)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (0.1 + 0.9 * 4 / 10))


def test_a_diverged_run_ends_at_its_first_non_finite_loss():
    model, loader = problem()
    run = watch_steps(model, loader, torch.optim.SGD(model.parameters(), lr=1e6, momentum=0.9),
                      steps=200)
    assert len(run["loss"]) < 200 and not math.isfinite(run["loss"][-1])
    assert np.all(np.isfinite(run["loss"][:-1]))


def test_an_empty_loader_is_refused():
    model, _ = problem()
    with pytest.raises(ValueError, match="no batch"):
        watch_steps(model, [], torch.optim.SGD(model.parameters(), lr=0.1), steps=3)
