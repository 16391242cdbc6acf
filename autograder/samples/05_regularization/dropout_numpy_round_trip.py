"""The mask is applied in NumPy: no gradient reaches x."""
import numpy as np
import torch
from torch import nn


def dropout(x, p, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(p)

    if not training or p == 0:
        return x
    a = x.detach().numpy()
    keep = np.random.random_sample(a.shape) >= p
    return torch.from_numpy(a * keep / (1 - p) if p < 1 else a * 0)


class Dropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)
