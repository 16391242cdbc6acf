"""The velocity is updated, but the parameter steps with the gradient: p -= lr * g."""
import torch


class MomentumSGD(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.9):
        if lr < 0.0:
            raise ValueError("lr")
        if not 0.0 <= momentum < 1.0:
            raise ValueError("momentum")
        super().__init__(params, {"lr": lr, "momentum": momentum})


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
                state = self.state[p]
                v = state.get("velocity")
                state["velocity"] = p.grad.clone() if v is None else v.mul_(mu).add_(p.grad)
                p.add_(p.grad, alpha=-lr)
        return loss
