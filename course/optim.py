"""RMSProp, Adam and Nesterov momentum written out by hand, one update rule each.

Chapter 4 teaches these update rules; ``tests/test_optim.py`` checks every one against
``torch.optim`` (``RMSprop``, ``Adam``, ``SGD(nesterov=True)``) step by step. With gradient g
and learning rate lr, for each parameter:

* **RMSProp** keeps a moving average of g², the *second moment*: v = α·v + (1-α)·g²,
  and steps p -= lr·g / (√v + ε). Unlike AdaGrad's sum, the average forgets old gradients,
  so the steps do not shrink for ever.
* **Adam** is RMSProp's second moment plus momentum's first moment (a moving average of g,
  m = β₁·m + (1-β₁)·g), both bias-corrected because they start at 0:
  p -= lr·m̂ / (√v̂ + ε) with m̂ = m / (1-β₁ᵗ), v̂ = v / (1-β₂ᵗ).
* **Nesterov momentum** (PyTorch's form): v = μ·v + g, then p -= lr·(g + μ·v): the step
  looks ahead along the velocity it is about to take.

Each optimizer reads its hyperparameters from its param groups at every step, so
learning-rate schedulers work with them as with ``torch.optim``.
"""

from __future__ import annotations

import torch

__all__ = ["RMSProp", "Adam", "NesterovSGD", "first_moment", "second_moment"]


def second_moment(state: dict, g: torch.Tensor, beta: float) -> torch.Tensor:
    """RMSProp's moving average of g²: v = beta·v + (1-beta)·g² (v starts at 0)."""
    v = state.setdefault("second_moment", torch.zeros_like(g))
    return v.mul_(beta).addcmul_(g, g, value=1 - beta)


def first_moment(state: dict, g: torch.Tensor, beta: float) -> torch.Tensor:
    """Momentum as a moving average of g: m = beta·m + (1-beta)·g (m starts at 0)."""
    m = state.setdefault("first_moment", torch.zeros_like(g))
    return m.mul_(beta).add_(g, alpha=1 - beta)


def _check(lr: float, eps: float = 0.0, **betas: float) -> None:
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    for name, beta in betas.items():
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta}")


class _PerParameter(torch.optim.Optimizer):
    """The loop every optimizer here shares: for each parameter with a gradient, in each group,
    ``update(p, state, group)``; the update rule is what each subclass teaches."""

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, self.state[p], group)
        return loss

    def update(self, p: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class RMSProp(_PerParameter):
    """p -= lr·g / (√v + eps) with v the moving average of g² (``torch.optim.RMSprop``)."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8):
        _check(lr, eps, alpha=alpha)
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    def update(self, p, state, group):
        v = second_moment(state, p.grad, group["alpha"])
        p.addcdiv_(p.grad, v.sqrt().add_(group["eps"]), value=-group["lr"])


class Adam(_PerParameter):
    """RMSProp's second moment + momentum's first moment + bias correction
    (``torch.optim.Adam``)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        _check(lr, eps, beta1=betas[0], beta2=betas[1])
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    def update(self, p, state, group):
        beta1, beta2 = group["betas"]
        state["t"] = t = state.get("t", 0) + 1
        m = first_moment(state, p.grad, beta1)   # momentum
        v = second_moment(state, p.grad, beta2)  # RMSProp
        m_hat = m / (1 - beta1 ** t)             # bias correction: both start at 0
        v_hat = v / (1 - beta2 ** t)
        p.addcdiv_(m_hat, v_hat.sqrt().add_(group["eps"]), value=-group["lr"])


class NesterovSGD(_PerParameter):
    """v = μ·v + g, p -= lr·(g + μ·v) (``torch.optim.SGD(momentum=μ, nesterov=True)``)."""

    def __init__(self, params, lr: float, momentum: float = 0.9):
        _check(lr, momentum=momentum)
        super().__init__(params, {"lr": lr, "momentum": momentum})

    def update(self, p, state, group):
        mu = group["momentum"]
        if "velocity" not in state:  # the first step: v = g, as torch does
            state["velocity"] = p.grad.detach().clone()
        else:
            state["velocity"].mul_(mu).add_(p.grad)
        p.add_(p.grad + mu * state["velocity"], alpha=-group["lr"])
