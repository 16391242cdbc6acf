"""course.optim against torch.optim: the same model, the same gradients, every step compared."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from course.optim import Adam, NesterovSGD, RMSProp


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def _compare(make_mine, make_ref, *, steps=60, lr_changes=None, seed=0):
    """Train two copies of a network, one per optimizer, and compare them after every step."""
    torch.manual_seed(seed)
    net_mine, net_ref = _mlp(), _mlp()
    net_ref.load_state_dict(net_mine.state_dict())
    x, y = torch.randn(32, 6, dtype=torch.double), torch.randint(0, 3, (32,))
    mine, ref = make_mine(net_mine.parameters()), make_ref(net_ref.parameters())
    for step in range(steps):
        if lr_changes and step in lr_changes:
            for opt in (mine, ref):
                opt.param_groups[0]["lr"] = lr_changes[step]
        for net, opt in ((net_mine, mine), (net_ref, ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        for p_mine, p_ref in zip(net_mine.parameters(), net_ref.parameters(), strict=True):
            assert_close(p_mine.detach(), p_ref.detach(), msg=f"differs after step {step + 1}")


PAIRS = {
    "rmsprop": (lambda p: RMSProp(p, lr=0.01, alpha=0.9),
                lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8)),
    "rmsprop-defaults": (lambda p: RMSProp(p), lambda p: torch.optim.RMSprop(p, eps=1e-8)),
    "adam": (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam-betas": (lambda p: Adam(p, lr=0.05, betas=(0.5, 0.9), eps=1e-6),
                   lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.9), eps=1e-6)),
    "nesterov": (lambda p: NesterovSGD(p, lr=0.05, momentum=0.9),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "nesterov-0": (lambda p: NesterovSGD(p, lr=0.1, momentum=0.0),
                   lambda p: torch.optim.SGD(p, lr=0.1)),
}


@pytest.mark.parametrize("name", PAIRS)
def test_matches_torch_optim_step_by_step(name):
    _compare(*PAIRS[name])


@pytest.mark.parametrize("name", ["rmsprop", "adam", "nesterov"])
def test_a_changed_learning_rate_is_read_at_every_step(name):
    _compare(*PAIRS[name], lr_changes={20: 0.2, 40: 0.001}, seed=1)


def test_a_scheduler_drives_them_as_it_drives_torch():
    _compare(lambda p: Adam(p, lr=0.02), lambda p: torch.optim.Adam(p, lr=0.02), steps=5)
    torch.manual_seed(2)
    net_mine, net_ref = _mlp(), _mlp()
    net_ref.load_state_dict(net_mine.state_dict())
    x, y = torch.randn(16, 6, dtype=torch.double), torch.randint(0, 3, (16,))
    mine, ref = RMSProp(net_mine.parameters(), lr=0.01), torch.optim.RMSprop(
        net_ref.parameters(), lr=0.01, eps=1e-8)
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30) for o in (mine, ref)]
    for _ in range(30):
        for net, opt, sched in zip((net_mine, net_ref), (mine, ref), scheds, strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            sched.step()
    for p_mine, p_ref in zip(net_mine.parameters(), net_ref.parameters(), strict=True):
        assert_close(p_mine.detach(), p_ref.detach())


def test_adam_is_rmsprop_plus_momentum_with_bias_correction():
    """beta1 = 0 leaves no momentum: Adam's first step is then RMSProp's with a bias-corrected
    second moment, lr·g/(|g| + eps) = lr·sign(g) (for eps -> 0)."""
    p = torch.tensor([3.0, -2.0], dtype=torch.double, requires_grad=True)
    opt = Adam([p], lr=0.1, betas=(0.0, 0.999), eps=0.0)
    p.grad = torch.tensor([0.5, -4.0], dtype=torch.double)
    opt.step()
    assert_close(p.detach(), torch.tensor([2.9, -1.9], dtype=torch.double))
    # without bias correction the first step would be 1/sqrt(1 - 0.999) ~ 31.6 times larger
    assert "first_moment" in opt.state[p] and "second_moment" in opt.state[p]


def test_parameters_without_a_gradient_are_left_alone():
    for make in (lambda p: RMSProp(p), lambda p: Adam(p), lambda p: NesterovSGD(p, lr=0.1)):
        unused, used = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
        opt = make([unused, used])
        (used ** 2).sum().backward()
        opt.step()
        assert torch.equal(unused.detach(), torch.ones(3)) and unused not in opt.state
        assert not torch.equal(used.detach(), torch.ones(3))


def test_step_returns_the_closures_loss():
    w = torch.tensor([2.0], requires_grad=True)
    opt = NesterovSGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 4.0
    assert opt.step() is None


@pytest.mark.parametrize("bad", [
    lambda p: RMSProp(p, lr=-1.0), lambda p: RMSProp(p, alpha=1.0), lambda p: RMSProp(p, eps=-1),
    lambda p: Adam(p, betas=(0.9, 1.0)), lambda p: Adam(p, betas=(-0.1, 0.9)),
    lambda p: NesterovSGD(p, lr=0.1, momentum=1.0), lambda p: NesterovSGD(p, lr=-0.1)])
def test_bad_hyperparameters_are_refused_with_their_name(bad):
    with pytest.raises(ValueError, match="must be"):
        bad([torch.zeros(2, requires_grad=True)])
