"""binary_scores counts with tensor operations and returns what they give: 0-d tensors when
the labels are tensors (Python floats for lists and arrays)."""
import numpy as np
import torch


def f_score(precision, recall, beta=1.0):
    p, r, b2 = float(precision), float(recall), float(beta) ** 2
    if b2 * p + r == 0:
        return 0.0
    return (1 + b2) * p * r / (b2 * p + r)


def binary_scores(y_true, y_pred):
    if not isinstance(y_true, torch.Tensor):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = ((y_true == 1) & (y_pred == 1)).sum()
    fp = ((y_true != 1) & (y_pred == 1)).sum()
    fn = ((y_true == 1) & (y_pred != 1)).sum()
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    if not isinstance(y_true, torch.Tensor):
        precision, recall = float(precision), float(recall)
    return precision, recall, f_score(precision, recall)
