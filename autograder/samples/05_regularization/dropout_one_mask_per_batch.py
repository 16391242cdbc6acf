"""One mask over the features, shared by every example of the batch:
torch.rand(x.shape[-1]) broadcast along the rows, so whole columns drop together."""
import torch
from torch import nn


def dropout(x, p, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.rand(x.shape[-1], device=x.device) >= p
    return x * keep / (1.0 - p)


class Dropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)
