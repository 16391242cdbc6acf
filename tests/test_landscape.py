"""Descent paths and loss contours (course.landscape), checked against closed forms."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course.landscape import loss_contours, loss_grid, optimizer_path  # noqa: E402


def bowl(w):
    return w[..., 0] ** 2 / 20 + w[..., 1] ** 2


@pytest.mark.parametrize("lr", [0.02, 0.3, 0.9])
def test_sgd_path_on_a_parabola_is_the_closed_form(lr):
    path = optimizer_path(lambda w: (w ** 2).sum(-1), [1.5, -2.0],
                          lambda p: torch.optim.SGD(p, lr=lr), steps=12)
    assert path.shape == (13, 2) and path.dtype == np.float64
    expected = np.array([1.5, -2.0]) * (1 - 2 * lr) ** np.arange(13)[:, None]
    np.testing.assert_allclose(path, expected, rtol=1e-12)


def test_momentum_path_matches_a_hand_written_loop():
    path = optimizer_path(bowl, [-7.0, 2.0], lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                          steps=20)
    w, v, want = np.array([-7.0, 2.0]), None, [np.array([-7.0, 2.0])]
    for _ in range(20):
        g = np.array([w[0] / 10, 2 * w[1]])
        v = g if v is None else 0.9 * v + g
        w = w - 0.1 * v
        want.append(w)
    np.testing.assert_allclose(path, np.array(want), rtol=1e-12, atol=1e-14)


def test_a_diverging_path_stops_before_the_first_non_finite_point():
    path = optimizer_path(lambda w: 1e300 * (w ** 2).sum(-1), [1.0, 1.0],
                          lambda p: torch.optim.SGD(p, lr=1.0), steps=10)
    assert len(path) < 11
    assert np.all(np.isfinite(path))
    np.testing.assert_array_equal(path[0], [1.0, 1.0])


def test_loss_grid_evaluates_the_loss_at_every_point():
    w1, w2, z = loss_grid(bowl, (-2, 2), (-1, 3), n=5)
    assert w1.shape == w2.shape == z.shape == (5, 5)
    np.testing.assert_allclose(z, w1 ** 2 / 20 + w2 ** 2)
    assert w1[0, 0] == -2 and w1[0, -1] == 2 and w2[0, 0] == -1 and w2[-1, 0] == 3


def test_loss_contours_draws_paths_and_the_minimum():
    path = optimizer_path(bowl, [-7.0, 2.0], lambda p: torch.optim.SGD(p, lr=0.5), steps=5)
    _, given = plt.subplots()
    ax = loss_contours(bowl, xlim=(-10, 10), ylim=(-3, 3), paths={"sgd": path},
                       minimum=(0, 0), ax=given, title="bowl")
    assert ax is given
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["sgd"].get_xydata(), path)
    np.testing.assert_allclose(lines["minimum"].get_xydata(), [[0, 0]])
    assert ax.get_xlim() == (-10, 10) and ax.get_title() == "bowl"
    assert loss_contours(bowl, xlim=(-1, 1), ylim=(-1, 1), log_levels=False) is not None
    plt.close("all")
