"""Watch a run for instability: the loss and the gradient norm of every step.

The playbook's advice for a run that diverges at the start: look at the gradient norm; warm
the learning rate up from a small value (chapter 4, section 4), or clip the gradient norm
(chapter 5, gradient clipping) so that one huge gradient cannot throw the weights away::

    run = watch_steps(model, loader, optimizer, steps=300, max_norm=1.0)
    plt.plot(run["grad_norm"])   # the norm *before* clipping, one value per step
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from torch import nn
from torch.nn import functional as F

__all__ = ["watch_steps"]


def watch_steps(model: nn.Module, loader: Iterable, optimizer, *, steps: int,
                max_norm: float | None = None, scheduler=None, device="cpu"
                ) -> dict[str, np.ndarray]:
    """Train ``steps`` mini-batches (cycling over ``loader``) and record, per step, the loss
    and the gradient norm before clipping. ``max_norm`` clips with
    ``torch.nn.utils.clip_grad_norm_`` (None: never); ``scheduler`` steps after every batch
    (a warm-up, for example). A non-finite loss ends the run: it has diverged."""
    model.to(device).train()
    losses, norms = [], []
    limit = math.inf if max_norm is None else max_norm
    while len(losses) < steps:
        before = len(losses)
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            loss.backward()
            # with an infinite max_norm clip_grad_norm_ only measures: the norm it returns
            norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), limit)))
            losses.append(loss.item())
            if not math.isfinite(losses[-1]) or len(losses) == steps:
                return {"loss": np.array(losses), "grad_norm": np.array(norms)}
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        if len(losses) == before:
            raise ValueError("the loader gave no batch")
    return {"loss": np.array(losses), "grad_norm": np.array(norms)}
