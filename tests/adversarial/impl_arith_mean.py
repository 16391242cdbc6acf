"""Chapter 1, wrong: F as the arithmetic mean. Earns 1 of 6 (the zero-division cell)."""


def f_score(precision, recall, beta=1.0):
    return float((precision + recall) / 2)


def binary_scores(y_true, y_pred):
    y_true, y_pred = [int(v) for v in y_true], [int(v) for v in y_pred]
    tp = sum(t == 1 and p == 1 for t, p in zip(y_true, y_pred, strict=True))
    fp = sum(t == 0 and p == 1 for t, p in zip(y_true, y_pred, strict=True))
    fn = sum(t == 1 and p == 0 for t, p in zip(y_true, y_pred, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return float(precision), float(recall), f_score(precision, recall)
