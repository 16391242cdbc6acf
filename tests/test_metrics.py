"""course.metrics against scikit-learn, on random labels and on the edge cases."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from course import metrics

RNG = np.random.default_rng(0)


def random_labels(n, k, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n), rng.integers(0, k, n)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 7])
def test_confusion_matrix_matches_sklearn(seed, k):
    y_true, y_pred = random_labels(200, k, seed)
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred),
                                  skm.confusion_matrix(y_true, y_pred))
    for normalize in ("true", "pred", "all"):
        np.testing.assert_allclose(metrics.confusion_matrix(y_true, y_pred, normalize=normalize),
                                   skm.confusion_matrix(y_true, y_pred, normalize=normalize))


def test_confusion_matrix_axis_convention_and_labels():
    # C[i, j] = true i, predicted j: one true 1 predicted as 0 lands in row 1, column 0
    cm = metrics.confusion_matrix([1, 0, 0], [0, 0, 0])
    assert cm.tolist() == [[2, 0], [1, 0]]
    cm = metrics.confusion_matrix([0, 0], [0, 0], labels=[0, 1, 2])
    np.testing.assert_array_equal(cm, skm.confusion_matrix([0, 0], [0, 0], labels=[0, 1, 2]))


def test_accepts_tensors_and_lists():
    y_true, y_pred = random_labels(50, 3, 1)
    expected = skm.confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(metrics.confusion_matrix(torch.tensor(y_true), list(y_pred)),
                                  expected)
    assert metrics.accuracy(torch.tensor(y_true), y_pred) == pytest.approx(
        skm.accuracy_score(y_true, y_pred))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("average", [None, "macro", "micro", "weighted"])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_precision_recall_f_match_sklearn(seed, average, beta):
    y_true, y_pred = random_labels(120, 4, seed)
    ours = metrics.precision_recall_fscore(y_true, y_pred, beta=beta, average=average)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, beta=beta, average=average,
                                                     zero_division=0)
    np.testing.assert_allclose(ours["precision"], p)
    np.testing.assert_allclose(ours["recall"], r)
    np.testing.assert_allclose(ours["f"], f)


@pytest.mark.parametrize("seed", range(5))
def test_binary_and_specificity(seed):
    y_true, y_pred = random_labels(100, 2, seed)
    ours = metrics.precision_recall_fscore(y_true, y_pred, average="binary")
    assert ours["precision"] == pytest.approx(skm.precision_score(y_true, y_pred))
    assert ours["recall"] == pytest.approx(skm.recall_score(y_true, y_pred))
    assert ours["f"] == pytest.approx(skm.f1_score(y_true, y_pred))
    tn, fp, _, _ = skm.confusion_matrix(y_true, y_pred).ravel()
    assert ours["specificity"] == pytest.approx(tn / (tn + fp))
    # specificity of class 1 is the recall of class 0
    assert metrics.specificity(y_true, y_pred, average="binary") == pytest.approx(
        skm.recall_score(y_true, y_pred, pos_label=0))


def test_the_notes_table():
    # TP 100, FN 30, FP 70, TN 800 from the lecture notes
    y_true = np.array([1] * 130 + [0] * 870)
    y_pred = np.array([1] * 100 + [0] * 30 + [1] * 70 + [0] * 800)
    s = metrics.precision_recall_fscore(y_true, y_pred, average="binary")
    assert s["precision"] == pytest.approx(100 / 170)
    assert s["recall"] == pytest.approx(100 / 130)
    assert s["specificity"] == pytest.approx(800 / 870)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(0.9)


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_zero_division_no_positive_predictions(zero_division):
    y_true, y_pred = [1, 0, 1, 0], [0, 0, 0, 0]
    ours = metrics.precision_recall_fscore(y_true, y_pred, average="binary",
                                           zero_division=zero_division)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="binary",
                                                     zero_division=zero_division)
    assert (ours["precision"], ours["recall"], ours["f"]) == pytest.approx((p, r, f))
    assert not np.isnan(ours["f"])


def test_one_class_present():
    y = [1, 1, 1]
    per_class = metrics.precision_recall_fscore(y, y)
    p, r, f, s = skm.precision_recall_fscore_support(y, y, zero_division=0)
    np.testing.assert_allclose(per_class["precision"], p)
    np.testing.assert_allclose(per_class["f"], f)
    np.testing.assert_array_equal(per_class["support"], s)
    # binary with no actual positives: recall is 0/0 -> zero_division
    ours = metrics.precision_recall_fscore([0, 0, 0], [0, 0, 0], average="binary")
    assert ours["recall"] == 0.0 and ours["specificity"] == 1.0


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="average"):
        metrics.precision_recall_fscore([0, 1], [0, 1], average="mean")
    with pytest.raises(ValueError, match="length"):
        metrics.confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="two classes"):
        metrics.precision_recall_fscore([0, 1, 2], [0, 1, 2], average="binary")


def test_classification_table():
    y_true, y_pred = random_labels(90, 3, 3)
    table = metrics.classification_table(y_true, y_pred, target_names=["a", "b", "c"])
    assert list(table.index) == ["a", "b", "c", "macro avg"]
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred)
    np.testing.assert_allclose(table["f"].iloc[:3], f)
    assert table.loc["macro avg", "support"] == 90
