"""Both conventions at once: scaled by 1/(1-p) in training and by (1-p) at evaluation."""
import torch
from torch import nn


def dropout(x, p, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(p)

    if not training:
        return x * (1 - p)
    if p == 1:
        return torch.zeros_like(x)
    return x * (torch.rand(x.shape) >= p) / (1 - p)


class Dropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)
