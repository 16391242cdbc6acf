"""One velocity for the whole optimizer (self.velocity), not one per parameter: the
gradients of different tensors are mixed (and tensors of other shapes crash it)."""
import torch


class MomentumSGD(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.9):
        if lr < 0.0:
            raise ValueError("lr")
        if not 0.0 <= momentum < 1.0:
            raise ValueError("momentum")
        super().__init__(params, {"lr": lr, "momentum": momentum})
        self.velocity = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self.velocity is None:
                    self.velocity = p.grad.clone()
                else:
                    self.velocity = mu * self.velocity + p.grad
                self.state[p]["velocity"] = self.velocity
                p.add_(self.velocity, alpha=-lr)
        return loss
