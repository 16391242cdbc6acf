"""The learning rate inside the velocity: v = mu * v + lr * g, p -= v.

The same trajectory as PyTorch's while the learning rate is constant; different as soon as it
changes (PyTorch applies a new lr to the whole velocity), and state["velocity"] is lr * g.
"""
import torch


class MomentumSGD(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.9):
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = group["lr"] * p.grad.detach().clone()
                else:
                    state["velocity"].mul_(group["momentum"]).add_(p.grad, alpha=group["lr"])
                p.sub_(state["velocity"])
        return loss
