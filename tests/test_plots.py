"""Every plot renders with the Agg backend and returns its Axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course import plots  # noqa: E402
from course.training import History  # noqa: E402


@pytest.fixture
def history():
    h = History()
    for epoch, (loss, val) in enumerate([(1.0, 1.1), (0.6, 0.8), (0.4, 0.9)]):
        h.append(epoch, {"loss": loss, "accuracy": 0.5 + 0.1 * epoch, "val_loss": val,
                         "val_accuracy": 0.5, "lr": 0.1})
    return h


def test_learning_curves(history):
    ax = plots.learning_curves(history)
    assert [line.get_label() for line in ax.get_lines()] == ["train", "validation"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [1.1, 0.8, 0.9])
    _, given = plt.subplots()
    assert plots.learning_curves(history.history, metric="accuracy", ax=given) is given
    plt.close("all")


def test_confusion_matrix_heatmap():
    cm = np.array([[5, 1], [2, 7]])
    ax = plots.confusion_matrix_heatmap(cm, labels=["neg", "pos"])
    assert [t.get_text() for t in ax.texts] == ["5", "1", "2", "7"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    ax = plots.confusion_matrix_heatmap(cm, normalize=True)
    assert ax.texts[0].get_text() == "0.83"
    plt.close("all")


def test_compare_runs_and_lr_schedule(history):
    ax = plots.compare_runs({"a": history, "b": history}, metric="val_loss", logy=True)
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "log"
    ax = plots.lr_schedule({"step": [0.1, 0.1, 0.01], "exp": [0.1, 0.09, 0.081]})
    assert len(ax.get_lines()) == 2
    assert plots.lr_schedule([0.1, 0.05]).get_ylabel() == "learning rate"
    plt.close("all")
