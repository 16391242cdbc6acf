"""The checks to run before tuning anything, after Karpathy's "A recipe for training neural
networks" (2019): a model that fails one of them has a bug that no hyperparameter will fix.

1. **The loss at initialisation** of a K-class classifier with small random weights is close
   to ln K: every class gets about 1/K of the probability.
2. **Overfit one batch**: a model that cannot drive the loss of a single small batch to about
   zero cannot learn (a wrong label, a detached graph, a learning rate of 0...).
3. **An input-independent baseline**: the same model trained on zeroed inputs can learn only
   the class frequencies; the real inputs must do clearly better, or the model ignores them.

::

    report = sanity_checks(lambda: make_mlp(64, 10), X_train, y_train, X_val, y_val)
    print(report)            # one line per check, with its numbers

Each chapter calls it again on its own model (chapter 7 on its ResNet).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SanityReport", "initial_loss", "overfit_one_batch", "input_independent_gap",
           "sanity_checks"]


@dataclass
class SanityReport:
    """The numbers of the three checks; ``str()`` reads them as a checklist."""

    n_classes: int
    initial_loss: float
    one_batch_loss: float
    real_accuracy: float
    zeroed_accuracy: float

    @property
    def log_k(self) -> float:
        return math.log(self.n_classes)

    def __str__(self) -> str:
        return "\n".join([
            f"1. loss at initialisation {self.initial_loss:.3f} vs ln K = ln {self.n_classes} "
            f"= {self.log_k:.3f}",
            f"2. loss after overfitting one batch {self.one_batch_loss:.4f} (should be about 0)",
            f"3. validation accuracy {self.real_accuracy:.3f} with the inputs, "
            f"{self.zeroed_accuracy:.3f} with zeroed inputs (input-independent baseline)"])


def _tensors(X, y, device):
    return (torch.as_tensor(np.asarray(X), dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(y), dtype=torch.long, device=device))


@torch.no_grad()
def initial_loss(model: nn.Module, X, y, *, device="cpu") -> float:
    """The mean cross-entropy of an untrained ``model`` on ``(X, y)``."""
    model.to(device).eval()
    X, y = _tensors(X, y, device)
    return float(F.cross_entropy(model(X), y))


def _train_steps(model: nn.Module, X, y, *, steps: int, lr: float, batch_size: int | None,
                 seed: int) -> float:
    """Adam on ``(X, y)`` for ``steps`` steps (mini-batches drawn at random when
    ``batch_size`` is given); the last step's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(math.nan)
    for _ in range(steps):
        if batch_size is None:
            xb, yb = X, y
        else:
            idx = torch.randint(len(X), (batch_size,), generator=generator).to(X.device)
            xb, yb = X[idx], y[idx]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
    return loss.item()


def overfit_one_batch(model: nn.Module, X, y, *, steps: int = 200, lr: float = 1e-2,
                      device="cpu") -> float:
    """Train ``model`` on the one batch ``(X, y)`` for ``steps`` full-batch Adam steps; return
    the final loss on it (about 0 when the model and the loop work)."""
    model.to(device)
    X, y = _tensors(X, y, device)
    _train_steps(model, X, y, steps=steps, lr=lr, batch_size=None, seed=0)
    return initial_loss(model, X, y, device=device)


@torch.no_grad()
def _accuracy(model: nn.Module, X, y) -> float:
    model.eval()
    return float((model(X).argmax(1) == y).float().mean())


def input_independent_gap(make_model: Callable[[], nn.Module], X_train, y_train, X_val, y_val,
                          *, steps: int = 300, lr: float = 1e-2, batch_size: int = 64,
                          device="cpu", seed: int = 0) -> tuple[float, float]:
    """Validation accuracy of the same model trained ``steps`` steps on the real inputs and on
    zeroed inputs (``X * 0``: only the class frequencies are left to learn)."""
    X_train, y_train = _tensors(X_train, y_train, device)
    X_val, y_val = _tensors(X_val, y_val, device)
    accuracies = []
    for scale in (1.0, 0.0):
        model = make_model().to(device)
        _train_steps(model, X_train * scale, y_train, steps=steps, lr=lr,
                     batch_size=batch_size, seed=seed)
        accuracies.append(_accuracy(model, X_val * scale, y_val))
    return accuracies[0], accuracies[1]


def sanity_checks(make_model: Callable[[], nn.Module], X_train, y_train, X_val, y_val, *,
                  n_classes: int | None = None, batch: int = 32, overfit_steps: int = 200,
                  baseline_steps: int = 300, lr: float = 1e-2, device="cpu",
                  seed: int = 0) -> SanityReport:
    """The three checks on fresh models from ``make_model()`` (a seeded builder gives the same
    start each time). ``batch`` samples of the training set are the batch to overfit."""
    n_classes = int(n_classes or len(np.unique(np.asarray(y_train))))
    start = initial_loss(make_model(), X_train, y_train, device=device)
    one_batch = overfit_one_batch(make_model(), X_train[:batch], y_train[:batch],
                                  steps=overfit_steps, lr=lr, device=device)
    real, zeroed = input_independent_gap(make_model, X_train, y_train, X_val, y_val,
                                         steps=baseline_steps, lr=lr, device=device, seed=seed)
    return SanityReport(n_classes, start, one_batch, real, zeroed)
