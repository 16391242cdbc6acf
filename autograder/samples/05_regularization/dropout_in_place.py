"""The input tensor is modified in place."""
import torch
from torch import nn


def dropout(x, p, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(p)

    if not training or p == 0:
        return x
    if p == 1:
        return x.zero_() if not x.requires_grad else x * 0
    if x.requires_grad:
        return x * (torch.rand(x.shape) >= p) / (1 - p)
    return x.mul_(torch.rand(x.shape) >= p).div_(1 - p)


class Dropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)
