"""The ipywidgets explorers: their numbers are right and they redraw when a control moves."""

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import confusion_matrix as sk_confusion_matrix  # noqa: E402
from sklearn.metrics import precision_recall_fscore_support  # noqa: E402

from course import widgets  # noqa: E402


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y_true = (rng.random(200) < 0.3).astype(int)
    scores = np.clip(0.35 * y_true + rng.random(200) * 0.65, 0, 1)
    return y_true, scores


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_threshold_metrics_match_sklearn(scored, threshold):
    y_true, scores = scored
    y_pred = (scores >= threshold).astype(int)
    m = widgets.threshold_metrics(y_true, scores, threshold)
    tn, fp, fn, tp = sk_confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (tp, fp, fn, tn)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary",
                                                 zero_division=0)
    for key, want in (("precision", p), ("recall", r), ("f1", f),
                      ("specificity", tn / (tn + fp) if tn + fp else 0.0)):
        assert type(m[key]) is float
        assert m[key] == pytest.approx(float(want), abs=1e-12)


def test_threshold_metrics_zero_division():
    m = widgets.threshold_metrics([1, 0, 1], [0.2, 0.1, 0.3], 0.9)  # nothing called positive
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (0, 0, 2, 1)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == 1.0


def test_threshold_view_marks_the_threshold(scored):
    y_true, scores = scored
    axes = widgets.threshold_view(y_true, scores, 0.5)
    ax_pr, ax_t = axes
    now = widgets.threshold_metrics(y_true, scores, 0.5)
    curve, marker = ax_pr.get_lines()
    np.testing.assert_allclose(marker.get_xydata(), [[now["recall"], now["precision"]]])
    precisions = curve.get_ydata()
    assert np.isnan(precisions[-1])  # a threshold above every score: precision is undefined
    defined = precisions[~np.isnan(precisions)]
    assert np.all((defined >= 0) & (defined <= 1))
    assert ax_t.get_lines()[-1].get_xdata()[0] == 0.5  # the vertical line sits at the threshold
    _, given = plt.subplots(1, 2)
    assert widgets.threshold_view(y_true, scores, 0.3, axes=given) is given
    plt.close("all")


def test_threshold_explorer_redraws_on_slider_change(scored, monkeypatch):
    import ipywidgets

    y_true, scores = scored
    drawn = []
    real_view = widgets.threshold_view
    monkeypatch.setattr(widgets, "threshold_view",
                        lambda y, s, t, **kw: drawn.append(t) or real_view(y, s, t, **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Agg cannot show(): that is fine here
        box = widgets.threshold_explorer(y_true, scores, threshold=0.4)
        slider = box.children[0]
        assert isinstance(box, ipywidgets.VBox) and isinstance(slider, ipywidgets.FloatSlider)
        assert slider.value == pytest.approx(0.4)
        slider.value = 0.7
    assert drawn == [pytest.approx(0.4), pytest.approx(0.7)]
    plt.close("all")


def _bowl(w):
    return w[..., 0] ** 2 / 20 + w[..., 1] ** 2


@pytest.mark.parametrize("lr, diverges", [(0.05, False), (0.9, False), (1.05, True)])
def test_lr_path_flags_divergence(lr, diverges):
    run = widgets.lr_path(_bowl, [-7.0, 2.0], lr=lr, steps=30)
    assert run["diverged"] is diverges
    assert ("diverges" in run["summary"]) is diverges
    np.testing.assert_allclose(run["losses"], run["path"][:, 0] ** 2 / 20 + run["path"][:, 1] ** 2)
    if not diverges:
        assert run["losses"][-1] < run["losses"][0]
        assert len(run["path"]) == 31


def test_lr_view_plots_the_losses_of_the_path():
    _, given = plt.subplots(1, 2)
    axes = widgets.lr_view(_bowl, [-7.0, 2.0], lr=0.3, momentum=0.5, steps=15, axes=given)
    assert axes is given
    run = widgets.lr_path(_bowl, [-7.0, 2.0], lr=0.3, momentum=0.5, steps=15)
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), run["losses"])
    assert axes[1].get_title() == run["summary"]
    plt.close("all")


def test_lr_explorer_redraws_on_slider_change():
    import ipywidgets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Agg cannot show(): that is fine here
        box = widgets.lr_explorer(_bowl, [-7.0, 2.0], lr=0.1, steps=20)
        lr_slider, momentum_slider, summary, _ = box.children
        assert isinstance(lr_slider, ipywidgets.FloatLogSlider)
        assert lr_slider.value == pytest.approx(0.1)
        assert summary.value == widgets.lr_path(_bowl, [-7.0, 2.0], lr=0.1, steps=20)["summary"]
        lr_slider.value = 1.1
        assert "diverges" in summary.value
        momentum_slider.value = 0.5
        want = widgets.lr_path(_bowl, [-7.0, 2.0], lr=lr_slider.value, momentum=0.5, steps=20)
        assert summary.value == want["summary"]
    plt.close("all")
