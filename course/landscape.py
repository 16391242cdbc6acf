"""Loss surfaces and descent paths: watch an optimizer walk over a function of two weights.

A loss here is a torch function of a weight tensor ``w`` whose last axis holds the weights and
that broadcasts over the leading axes: ``loss(w)`` with ``w.shape == (2,)`` is one number, with
``w.shape == (ny, nx, 2)`` a grid of numbers (what ``loss_contours`` draws). For example::

    def bowl(w):  # the notes' "inefficient SGD" picture: steep in w2, flat in w1
        return w[..., 0] ** 2 / 20 + w[..., 1] ** 2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["optimizer_path", "loss_grid", "loss_contours"]


def optimizer_path(loss: Callable[[torch.Tensor], torch.Tensor], w0, make_optimizer: Callable,
                   *, steps: int) -> np.ndarray:
    """Run ``steps`` optimizer steps on ``loss`` from ``w0``; return the visited points.

    ``make_optimizer`` builds the optimizer from a parameter list, e.g.
    ``lambda params: torch.optim.SGD(params, lr=0.1)``. The result has shape
    (steps + 1, len(w0)) and starts with ``w0``; it ends early at the first point that is not
    finite (a diverging run), so a plot of it never holds inf or nan.

    >>> path = optimizer_path(lambda w: (w ** 2).sum(), [1.0],
    ...                       lambda p: torch.optim.SGD(p, lr=0.25), steps=2)
    >>> path.ravel().tolist()  # w <- w - 0.25 * 2w = w / 2
    [1.0, 0.5, 0.25]
    """
    w = torch.tensor(np.asarray(w0, dtype=np.float64), requires_grad=True)
    optimizer = make_optimizer([w])
    points = [w.detach().clone().numpy()]
    for _ in range(steps):
        optimizer.zero_grad()
        loss(w).backward()
        optimizer.step()
        point = w.detach().clone().numpy()
        if not np.all(np.isfinite(point)):
            break
        points.append(point)
    return np.stack(points)


def loss_grid(loss: Callable[[torch.Tensor], torch.Tensor], xlim, ylim, *, n: int = 121
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``loss`` on an n x n grid over ``xlim`` x ``ylim``: returns (W1, W2, Z) for contour plots."""
    w1, w2 = np.meshgrid(np.linspace(*xlim, n), np.linspace(*ylim, n))
    with torch.no_grad():
        z = loss(torch.as_tensor(np.stack([w1, w2], axis=-1)))
    return w1, w2, np.asarray(z, dtype=np.float64)


def loss_contours(loss: Callable[[torch.Tensor], torch.Tensor], *, xlim, ylim,
                  paths: Mapping[str, np.ndarray] | None = None, ax=None, levels: int = 20,
                  log_levels: bool = True, minimum=None, title: str | None = None,
                  xlabel: str = "$w_1$", ylabel: str = "$w_2$"):
    """Contours of a 2-weight ``loss`` with descent ``paths`` ({label: points}) drawn on top.

    ``log_levels`` spaces the contour levels geometrically, so both the steep walls and the flat
    valley floor show; ``minimum`` marks the optimum with a star. Returns the Axes.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    w1, w2, z = loss_grid(loss, xlim, ylim)
    if log_levels:
        low = max(z.min(), z.max() * 1e-6, 1e-12)
        lv = np.geomspace(low, z.max(), levels)
    else:
        lv = np.linspace(z.min(), z.max(), levels)
    ax.contour(w1, w2, z, levels=lv, cmap="viridis", linewidths=0.8)
    for label, path in (paths or {}).items():
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], marker="o", ms=2.5, lw=1.2, label=label)
    if minimum is not None:
        ax.plot(*minimum, marker="*", ms=12, color="k", ls="none", label="minimum")
    ax.set(xlim=xlim, ylim=ylim, xlabel=xlabel, ylabel=ylabel, title=title or "loss contours")
    if paths or minimum is not None:
        ax.legend(fontsize="small", loc="upper right")
    return ax
