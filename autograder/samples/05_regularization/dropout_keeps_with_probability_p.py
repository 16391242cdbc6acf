"""Each element is kept with probability p instead of dropped with probability p."""
import torch
from torch import nn


def dropout(x, p, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(p)

    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    return x * (torch.rand(x.shape) < p) / (1 - p)


class Dropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)
