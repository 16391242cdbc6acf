"""0/0 gives NaN (NumPy float division) instead of 0.0."""
import numpy as np


def f_score(precision, recall, beta=1.0):
    b2 = float(beta) ** 2
    with np.errstate(all="ignore"):
        return float(np.float64((1 + b2) * float(precision) * float(recall))
                     / np.float64(b2 * float(precision) + float(recall)))


def binary_scores(y_true, y_pred):
    t, p = np.asarray(y_true), np.asarray(y_pred)
    tp = float(((t == 1) & (p == 1)).sum())
    with np.errstate(all="ignore"):
        precision = float(np.float64(tp) / ((p == 1).sum()))
        recall = float(np.float64(tp) / ((t == 1).sum()))
    return precision, recall, f_score(precision, recall)
