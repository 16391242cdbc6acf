"""Every score is 0.0 (well typed, so only the values are wrong)."""


def f_score(precision, recall, beta=1.0):
    return 0.0


def binary_scores(y_true, y_pred):
    return 0.0, 0.0, 0.0
