"""Classification metrics computed from the confusion matrix.

Conventions follow scikit-learn: data positional, options keyword-only, and
``C[i, j]`` = number of samples whose true class is ``i`` and predicted class is ``j``.
A ratio whose denominator is 0 (no predicted positives, no actual positives) is
``zero_division`` (0.0 by default) instead of NaN, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "confusion_matrix", "precision_recall_fscore", "precision", "recall",
           "specificity", "fbeta_score", "classification_table"]

_AVERAGES = (None, "binary", "macro", "micro", "weighted")


def _as_labels(y) -> np.ndarray:
    if hasattr(y, "detach"):  # a torch tensor
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    return y


def accuracy(y_true, y_pred) -> float:
    """Fraction of predictions equal to the truth: correct / total."""
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and of one length, "
                         f"got {y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, *, labels=None, normalize: str | None = None) -> np.ndarray:
    """Confusion matrix ``C`` with ``C[i, j]`` = count of true class i predicted as class j.

    ``labels`` fixes the classes and their order (default: every label seen, sorted).
    ``normalize`` = "true" (rows sum to 1), "pred" (columns sum to 1), "all" or None.

    >>> confusion_matrix([1, 1, 0, 0], [1, 0, 0, 0])
    array([[2, 0],
           [1, 1]])
    """
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else np.asarray(labels)
    index = {label: i for i, label in enumerate(labels.tolist())}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist(), strict=True):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    if normalize is None:
        return cm
    axis = {"true": 1, "pred": 0, "all": None}
    if normalize not in axis:
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, not {normalize!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cm / cm.sum(axis=axis[normalize], keepdims=axis[normalize] is not None)
    return np.nan_to_num(out)


def _ratio(num, den, zero_division: float):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def _counts(cm: np.ndarray):
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    return tp, fp, fn, tn


def precision_recall_fscore(y_true, y_pred, *, beta: float = 1.0, labels=None,
                            average: str | None = None, pos_label=1,
                            zero_division: float = 0.0) -> dict:
    """Precision, recall, specificity, F-beta and support, per class or averaged.

    precision = TP/(TP+FP); recall (sensitivity) = TP/(TP+FN); specificity = TN/(TN+FP);
    F-beta = (1+β²)·p·r / (β²·p + r), the weighted harmonic mean of precision and recall.
    ``average``: None (one value per class, in ``labels`` order), "binary" (the class
    ``pos_label`` only), "macro" (unweighted mean over classes), "weighted" (mean weighted by
    support) or "micro" (from the summed counts). Returns a dict of floats or arrays.
    """
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, not {average!r}")
    if beta < 0:
        raise ValueError("beta must be >= 0")
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    if average == "binary":
        present = np.unique(np.concatenate([y_true, y_pred])).tolist()
        if len(present) > 2:
            raise ValueError("average='binary' needs two classes; use 'macro', 'micro' or "
                             "'weighted' for more")
        labels = sorted(set(present) | {pos_label})
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    labels_used = np.unique(np.concatenate([y_true, y_pred])) if labels is None else labels
    tp, fp, fn, tn = _counts(cm)
    if average == "binary":  # keep the positive class only
        i = labels.index(pos_label)
        tp, fp, fn, tn = (v[i:i + 1] for v in (tp, fp, fn, tn))
    support = tp + fn
    if average == "micro":
        tp, fp, fn, tn = (np.array([v.sum()]) for v in (tp, fp, fn, tn))
    p = _ratio(tp, tp + fp, zero_division)
    r = _ratio(tp, tp + fn, zero_division)
    s = _ratio(tn, tn + fp, zero_division)
    b2 = beta**2
    f = _ratio((1 + b2) * p * r, b2 * p + r, zero_division)
    out = {"precision": p, "recall": r, "specificity": s, "f": f, "support": support}
    if average is None:
        out["labels"] = np.asarray(labels_used)
        return out
    if average in ("binary", "micro"):
        return {k: float(v[0]) if k != "support" else int(support.sum())
                for k, v in out.items()}
    weights = support if average == "weighted" else np.ones_like(support)
    if weights.sum() == 0:
        return {k: float(zero_division) for k in ("precision", "recall", "specificity", "f")} | {
            "support": 0}
    return {k: float(np.average(v, weights=weights)) if k != "support" else int(support.sum())
            for k, v in out.items()}


def precision(y_true, y_pred, **kwargs):
    """TP / (TP + FP): of the samples predicted positive, the fraction that are positive."""
    return precision_recall_fscore(y_true, y_pred, **kwargs)["precision"]


def recall(y_true, y_pred, **kwargs):
    """TP / (TP + FN): of the actual positives, the fraction the model finds (sensitivity)."""
    return precision_recall_fscore(y_true, y_pred, **kwargs)["recall"]


def specificity(y_true, y_pred, **kwargs):
    """TN / (TN + FP): of the actual negatives, the fraction the model calls negative."""
    return precision_recall_fscore(y_true, y_pred, **kwargs)["specificity"]


def fbeta_score(y_true, y_pred, *, beta: float = 1.0, **kwargs):
    """The F-beta score; beta > 1 weighs recall more, beta < 1 precision more."""
    return precision_recall_fscore(y_true, y_pred, beta=beta, **kwargs)["f"]


def classification_table(y_true, y_pred, *, target_names=None, beta: float = 1.0,
                         zero_division: float = 0.0):
    """A pandas DataFrame with one row per class (precision, recall, specificity, F, support)
    and a macro-average row."""
    import pandas as pd

    per_class = precision_recall_fscore(y_true, y_pred, beta=beta, zero_division=zero_division)
    index = target_names if target_names is not None else [str(c) for c in per_class["labels"]]
    frame = pd.DataFrame({k: per_class[k] for k in
                          ("precision", "recall", "specificity", "f", "support")}, index=index)
    macro = precision_recall_fscore(y_true, y_pred, beta=beta, average="macro",
                                    zero_division=zero_division)
    frame.loc["macro avg"] = [macro[k] for k in frame.columns]
    frame["support"] = frame["support"].astype(int)
    return frame
