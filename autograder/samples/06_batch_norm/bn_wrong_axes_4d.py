"""A 4-D input is flattened with reshape(-1, C) without moving the channels last, so the
statistics mix channels and positions (right for (N, C), wrong for (N, C, H, W))."""
import torch


def batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    shape = [1, -1] + [1] * (x.dim() - 2)
    rows = x.reshape(-1, x.shape[1])  # (N, C, H, W) -> rows of C values: not per channel
    if training:
        mean = rows.mean(dim=0)
        var = rows.var(dim=0, correction=0)
        m = rows.shape[0]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * m / (m - 1))
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * x_hat + beta.reshape(shape)
