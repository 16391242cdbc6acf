"""Right values, but NumPy floats returned instead of Python floats."""
import numpy as np


def f_score(precision, recall, beta=1.0):
    b2 = np.float64(beta) ** 2
    d = b2 * precision + recall
    return np.float64(0.0) if d == 0 else (1 + b2) * np.float64(precision) * recall / d


def binary_scores(y_true, y_pred):
    t, p = np.asarray(y_true), np.asarray(y_pred)
    tp = ((t == 1) & (p == 1)).sum()
    pp, ap = (p == 1).sum(), (t == 1).sum()
    precision = tp / pp if pp else np.float64(0.0)
    recall = tp / ap if ap else np.float64(0.0)
    return precision, recall, f_score(precision, recall)
