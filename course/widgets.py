"""ipywidgets explorers for the notebooks.

Each explorer returns a widget to display; the notebook shows a static figure beside it, so
a headless run (papermill, nbgrader, CI) still makes the point.
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = ["threshold_metrics", "threshold_view", "threshold_explorer",
                      "lr_path", "lr_view", "lr_explorer"]


def threshold_metrics(y_true, scores, threshold: float) -> dict:
    """Counts and metrics when every score ``>= threshold`` is called positive (label 1).

    Returns a dict of Python numbers: tp, fp, fn, tn (ints) and precision, recall,
    specificity, f1 (floats; 0.0 where a denominator is 0, as scikit-learn's zero_division=0).

    >>> threshold_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], 0.5)["precision"]
    0.5
    """
    y_true = np.asarray(y_true).astype(int)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(predicted & (y_true == 1)))
    fp = int(np.sum(predicted & (y_true != 1)))
    fn = int(np.sum(~predicted & (y_true == 1)))
    tn = int(np.sum(~predicted & (y_true != 1)))

    def ratio(num, den):
        return num / den if den else 0.0

    p, r = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": p, "recall": r,
            "specificity": ratio(tn, tn + fp), "f1": ratio(2 * p * r, p + r)}


def threshold_view(y_true, scores, threshold: float, *, axes=None, n_thresholds: int = 101):
    """Two panels for one decision threshold: where it sits on the precision-recall curve
    (left), and precision and recall as the threshold moves (right). Returns the two Axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    # every score is a threshold where the curve can turn; add a grid for the flat stretches
    grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, n_thresholds), np.asarray(scores)]))
    curve = [threshold_metrics(y_true, scores, t) for t in grid]
    # precision is 0/0 where nothing is called positive: leave those points out of the plot
    precisions = [m["precision"] if m["tp"] + m["fp"] else np.nan for m in curve]
    recalls = [m["recall"] for m in curve]
    now = threshold_metrics(y_true, scores, threshold)
    ax_pr, ax_t = axes
    ax_pr.plot(recalls, precisions, color="tab:blue")
    ax_pr.plot([now["recall"]], [now["precision"]], "o", color="tab:red", ms=8)
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
              title=f"threshold {threshold:.2f}: p={now['precision']:.2f}, r={now['recall']:.2f}")
    ax_t.plot(grid, precisions, label="precision")
    ax_t.plot(grid, recalls, label="recall")
    ax_t.axvline(threshold, color="tab:red", ls="--")
    ax_t.set(xlabel="decision threshold", ylim=(0, 1.02),
             title=f"TP={now['tp']} FP={now['fp']} FN={now['fn']} TN={now['tn']}")
    ax_t.legend(loc="best", fontsize="small")
    return axes


def threshold_explorer(y_true, scores, *, threshold: float = 0.5, step: float = 0.01):
    """A decision-threshold slider redrawing :func:`threshold_view` for 0/1 labels and scores
    in [0, 1] (e.g. the predicted probability of class 1). Returns the widget to display."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    slider = widgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=step,
                                 description="threshold", continuous_update=False,
                                 readout_format=".2f")
    output = widgets.Output()

    def draw(change=None):
        with output:
            output.clear_output(wait=True)
            threshold_view(y_true, scores, slider.value)
            plt.show()

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, output])


def lr_path(loss, w0, *, lr: float, momentum: float = 0.0, steps: int = 30) -> dict:
    """SGD (with ``momentum``) for ``steps`` steps on a 2-weight ``loss`` from ``w0``.

    ``loss`` follows :mod:`course.landscape` (a torch function of ``w[..., :2]``). Returns a dict:
    path (points visited, ending early if the run blew up), losses (the loss at each point, a
    NumPy array), diverged (bool: the run blew up or ended above its starting loss) and summary
    (a sentence for a title).
    """
    import torch

    from course.landscape import optimizer_path

    path = optimizer_path(loss, w0, lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum),
                          steps=steps)
    with torch.no_grad():
        losses = np.asarray(loss(torch.as_tensor(path)), dtype=np.float64)
    diverged = len(path) < steps + 1 or not np.isfinite(losses[-1]) or losses[-1] > losses[0]
    if diverged:
        summary = f"lr={lr:.3g}: diverges (loss {losses[0]:.3g} -> {losses[-1]:.3g})"
    else:
        summary = f"lr={lr:.3g}: loss {losses[0]:.3g} -> {losses[-1]:.3g} in {steps} steps"
    return {"path": path, "losses": losses, "diverged": bool(diverged), "summary": summary}


def lr_view(loss, w0, *, lr: float, momentum: float = 0.0, steps: int = 30, xlim=(-10, 10),
            ylim=(-3, 3), axes=None):
    """Two panels for one learning rate: the SGD path over the contours of ``loss`` (first)
    and the loss at every step on a log scale (second). Returns the two Axes."""
    import matplotlib.pyplot as plt

    from course.landscape import loss_contours

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    run = lr_path(loss, w0, lr=lr, momentum=momentum, steps=steps)
    label = f"lr={lr:.3g}" + (f", momentum={momentum:.2f}" if momentum else "")
    ax_path, ax_loss = axes
    loss_contours(loss, xlim=xlim, ylim=ylim, paths={label: run["path"]}, ax=ax_path,
                  title=label)
    ax_loss.plot(np.arange(len(run["losses"])), run["losses"], marker="o", ms=3,
                 color="tab:red" if run["diverged"] else "tab:blue")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="loss", xlim=(0, steps), title=run["summary"])
    ax_loss.title.set_fontsize("small")
    return axes


def lr_explorer(loss, w0, *, lr: float = 0.1, momentum: float = 0.0, steps: int = 30,
                xlim=(-10, 10), ylim=(-3, 3)):
    """Sliders for the learning rate (log scale) and momentum redrawing :func:`lr_view`.

    Returns the widget to display: a VBox of the two sliders, a one-line summary
    (``children[2].value``) and the figure's Output.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    lr_slider = widgets.FloatLogSlider(value=lr, base=10, min=-3, max=0.5, step=0.05,
                                       description="lr", continuous_update=False,
                                       readout_format=".3g")
    momentum_slider = widgets.FloatSlider(value=momentum, min=0.0, max=0.99, step=0.01,
                                          description="momentum", continuous_update=False)
    summary = widgets.HTML()
    output = widgets.Output()

    def draw(change=None):
        run = lr_path(loss, w0, lr=lr_slider.value, momentum=momentum_slider.value, steps=steps)
        summary.value = run["summary"]
        with output:
            output.clear_output(wait=True)
            lr_view(loss, w0, lr=lr_slider.value, momentum=momentum_slider.value, steps=steps,
                    xlim=xlim, ylim=ylim)
            plt.show()

    lr_slider.observe(draw, names="value")
    momentum_slider.observe(draw, names="value")
    draw()
    return widgets.VBox([lr_slider, momentum_slider, summary, output])
