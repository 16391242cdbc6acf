"""binary_scores swaps y_true and y_pred, so precision and recall trade places."""
def f_score(precision, recall, beta=1.0):
    p, r, b2 = float(precision), float(recall), float(beta) ** 2
    d = b2 * p + r
    return 0.0 if d == 0 else (1 + b2) * p * r / d


def binary_scores(y_true, y_pred):
    y_pred, y_true = list(map(int, y_true)), list(map(int, y_pred))
    tp = sum(t == 1 and p == 1 for t, p in zip(y_true, y_pred, strict=True))
    fp = sum(t == 0 and p == 1 for t, p in zip(y_true, y_pred, strict=True))
    fn = sum(t == 1 and p == 0 for t, p in zip(y_true, y_pred, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return float(precision), float(recall), f_score(precision, recall)
