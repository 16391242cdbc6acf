"""0/0 handled, but with `return 0`: an int, not the float 0.0."""


def f_score(precision, recall, beta=1.0):
    p, r, b2 = float(precision), float(recall), float(beta) ** 2
    if b2 * p + r == 0:
        return 0
    return (1 + b2) * p * r / (b2 * p + r)


def binary_scores(y_true, y_pred):
    y_true = [int(t) for t in y_true]
    y_pred = [int(p) for p in y_pred]
    tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == 1 and p == 1)
    fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == 0 and p == 1)
    fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == 1 and p == 0)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return float(precision), float(recall), f_score(precision, recall)
