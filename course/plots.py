"""Figures the chapters share: learning curves, confusion matrices, runs side by side, schedules.

Each function draws into the matplotlib ``ax`` you pass, or into a new figure, and returns
the Axes, as scikit-learn's display objects do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

__all__ = ["learning_curves", "confusion_matrix_heatmap", "compare_runs", "lr_schedule"]


def _axes(ax, figsize=(6, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _history_dict(history) -> Mapping[str, Sequence[float]]:
    return history.history if hasattr(history, "history") else history


def learning_curves(history, *, metric: str = "loss", ax=None, title: str | None = None):
    """Training vs validation ``metric`` per epoch ("loss" or "accuracy").

    A validation curve that turns up while training keeps going down is overfitting;
    two high, flat curves are underfitting.
    """
    ax = _axes(ax)
    h = _history_dict(history)
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        values = h.get(key, [])
        if len(values):
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel=metric, title=title or f"learning curves: {metric}")
    ax.legend()
    return ax


def confusion_matrix_heatmap(cm, *, labels=None, normalize: bool = False, ax=None,
                             cmap: str = "Blues", title: str = "confusion matrix"):
    """A seaborn heatmap of ``cm`` (rows: true class, columns: predicted class)."""
    cm = np.asarray(cm)
    ax = _axes(ax, figsize=(1 + 0.6 * len(cm), 0.5 + 0.6 * len(cm)))
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            cm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    labels = list(labels) if labels is not None else list(range(len(cm)))
    fmt = ".2f" if normalize or cm.dtype.kind == "f" else "d"
    sns.heatmap(cm, annot=len(cm) <= 12, fmt=fmt, cmap=cmap, xticklabels=labels,
                yticklabels=labels, square=True, cbar=False, ax=ax)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return ax


def compare_runs(histories: Mapping[str, object], *, metric: str = "val_loss", ax=None,
                 title: str | None = None, logy: bool = False):
    """One curve of ``metric`` per run, e.g. ``{"lr=0.1": h1, "lr=0.01": h2}``."""
    ax = _axes(ax)
    palette = sns.color_palette(n_colors=max(len(histories), 1))
    for color, (label, history) in zip(palette, histories.items(), strict=False):
        values = _history_dict(history).get(metric, [])
        ax.plot(np.arange(1, len(values) + 1), values, label=str(label), color=color)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel=metric, title=title or metric)
    ax.legend(fontsize="small")
    return ax


def lr_schedule(schedules: Mapping[str, Sequence[float]] | Sequence[float], *, ax=None,
                xlabel: str = "epoch", title: str = "learning-rate schedule", logy: bool = False):
    """Plot one learning-rate sequence, or several as ``{name: [lr, ...]}``."""
    ax = _axes(ax)
    if not isinstance(schedules, Mapping):
        schedules = {"lr": schedules}
    for name, lrs in schedules.items():
        ax.plot(np.arange(len(lrs)), lrs, label=str(name), drawstyle="steps-post")
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="learning rate", title=title)
    if len(schedules) > 1:
        ax.legend(fontsize="small")
    return ax
