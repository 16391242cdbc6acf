"""Name the known mistake when a visible test of a graded exercise fails.

The visible test cells of chapters 1, 4, 5 and 6 run inside :func:`diagnosed`::

    with diagnosed(f_score_mistakes, f_score, binary_scores):
        ...the visible tests...

A check that fails inside the block fails as before; when the student's code behaves as a
known mistake (course/mistakes.py) on the small inputs of the ``*_mistakes`` functions below,
the message opens with what the code does, why that is wrong and where the chapter explains
it: the words the grader's feedback page uses. Nothing here is a hidden test: every input is
in this file, and each function only asks the student's code what it does.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from course.mistakes import KNOWN

__all__ = ["diagnosed", "f_score_mistakes", "momentum_mistakes", "dropout_mistakes",
           "batch_norm_mistakes"]


@contextmanager
def diagnosed(find, *solution):
    """Run the block; if it fails, name the known mistakes ``find(*solution)`` sees in the
    student's code before the check's own message (a check that passes is left alone)."""
    try:
        yield
    except Exception as exc:
        try:
            names = find(*solution)
        except Exception:  # noqa: BLE001 - the code broke on these inputs too: say nothing more
            names = []
        if not names:
            raise
        told = "\n".join(f"What your code does: {KNOWN[n].text()}" for n in names)
        raise AssertionError(f"{told}\n(the check that failed: {exc})") from exc


def _close(a, b) -> bool:
    return isinstance(a, float) and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def _f_zero(f_score) -> str | None:
    """What f_score does when precision and recall are both 0."""
    try:
        value = f_score(0.0, 0.0)
    except ZeroDivisionError:
        return "f_no_zero_division"
    if type(value) is float and math.isnan(value):
        return "f_nan_on_zero_division"
    if type(value) is int and value == 0:
        return "f_int_zero_on_zero_division"
    return None


def f_score_mistakes(f_score, binary_scores) -> list[str]:
    """The known mistakes of chapter 1's exercise that ``f_score`` and ``binary_scores`` show."""
    import numpy as np
    import torch

    found = []
    a, b = f_score(0.95, 0.90), f_score(0.5, 1.0, beta=2.0)
    if type(a) is float:
        formulas = {"f_all_zeros": (0.0, 0.0), "f_arithmetic_mean": (0.925, 0.75),
                    "f_beta_not_squared": (2 * 0.95 * 0.9 / 1.85, 1.5 / 2.0),
                    "f_beta_weights_precision": (2 * 0.95 * 0.9 / 1.85, 2.5 / 4.5)}
        found += [n for n, (fa, fb) in formulas.items() if _close(a, fa) and _close(b, fb)]
    found += [n for n in [_f_zero(f_score)] if n]
    if isinstance(a, np.floating):
        found.append("f_numpy_floats")
    y_true = [1] * 130 + [0] * 870
    y_pred = [1] * 100 + [0] * 30 + [1] * 70 + [0] * 800
    p, r, _ = binary_scores(y_true, y_pred)
    if _close(p, 100 / 130) and _close(r, 100 / 170):
        found.append("f_precision_recall_swapped")
    scores = binary_scores(torch.tensor([1, 0, 1, 1]), torch.tensor([1, 1, 0, 1]))
    if any(isinstance(s, torch.Tensor) for s in scores):
        found.append("f_tensor_scores")
    return found


def _two_steps(MomentumSGD, torch, grads, **kwargs):
    """A parameter at 0 after two steps with the gradients ``grads``; (w1, w2, v1, v2)."""
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = MomentumSGD([w], lr=0.1, momentum=0.5)
    seen = []
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        seen.append((w.detach().clone(), opt.state[w]["velocity"].detach().clone()))
    return seen


def _moves_as(seen, torch, rule) -> bool:
    """Does the parameter follow ``rule(v, g) -> (v, step)`` with lr 0.1, momentum 0.5?"""
    w, v = torch.zeros(2, dtype=torch.float64), None
    for (got, _), g in zip(seen, ([1.0, 2.0], [-3.0, 0.5]), strict=True):
        v, step = rule(v, torch.tensor(g, dtype=torch.float64))
        w = w - 0.1 * step
        if not torch.allclose(got, w):
            return False
    return True


def _own_velocity(MomentumSGD, torch) -> bool:
    """Does zeroing the gradient in place leave the velocity alone?"""
    w = torch.zeros(2, requires_grad=True)
    opt = MomentumSGD([w], lr=1.0, momentum=0.5)
    w.grad = torch.ones(2)
    opt.step()
    before = w.detach().clone()
    w.grad.zero_()
    opt.step()
    return not torch.equal(w.detach(), before)


def _group_lr_used(MomentumSGD, torch) -> bool:
    """Does a param group's own lr (0 here) count?"""
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = MomentumSGD([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=0.1, momentum=0.5)
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    return bool((b.detach() == 0).all())


def _shares_velocity(MomentumSGD, torch) -> bool:
    """Does a second parameter's first step use the first one's velocity?"""
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = MomentumSGD([a, b], lr=1.0, momentum=0.5)
    a.grad, b.grad = torch.ones(3), -2 * torch.ones(3)
    opt.step()
    return torch.allclose(b.detach(), torch.full((3,), 1.5))


def _fails_without_grad(MomentumSGD, torch) -> bool:
    """Does step() break on a parameter whose .grad is None?"""
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = MomentumSGD([a, b], lr=0.1)
    a.grad = torch.ones(2)
    try:
        opt.step()
    except Exception:  # noqa: BLE001 - whichever error: None has no arithmetic
        return True
    return False


def momentum_mistakes(MomentumSGD) -> list[str]:
    """The known mistakes of chapter 4's exercise that ``MomentumSGD`` shows."""
    import torch

    seen = _two_steps(MomentumSGD, torch, ([1.0, 2.0], [-3.0, 0.5]))
    rules = {
        "torch": lambda v, g: (g if v is None else 0.5 * v + g,) * 2,
        "momentum_dampened": lambda v, g: (g if v is None else 0.5 * v + 0.5 * g,) * 2,
        "gradient": lambda v, g: (g, g),
        "momentum_sign_flipped": lambda v, g: (g if v is None else 0.5 * v - g,) * 2,
    }
    moves = {name: _moves_as(seen, torch, rule) for name, rule in rules.items()}
    found = [n for n in ("momentum_dampened", "momentum_sign_flipped") if moves[n]]
    v2 = seen[1][1]
    if moves["gradient"]:
        steps_with_g = torch.allclose(v2, torch.tensor([-2.5, 1.5], dtype=torch.float64))
        found.append("momentum_steps_with_gradient" if steps_with_g else "momentum_forgotten")
    if torch.allclose(seen[0][1], torch.tensor([0.1, 0.2], dtype=torch.float64)):
        found.append("momentum_lr_in_velocity")
    checks = {"momentum_velocity_aliases_grad": lambda: not _own_velocity(MomentumSGD, torch),
              "momentum_one_velocity_for_all": lambda: _shares_velocity(MomentumSGD, torch),
              "momentum_no_grad_check": lambda: _fails_without_grad(MomentumSGD, torch),
              "momentum_defaults_not_groups": lambda: not _group_lr_used(MomentumSGD, torch)}
    if moves["torch"]:
        found += [name for name, shows in checks.items() if _quietly(shows)]
    return found


def _quietly(shows) -> bool:
    """``shows()``, False when the student's code raises on the way."""
    try:
        return bool(shows())
    except Exception:  # noqa: BLE001
        return False


def dropout_mistakes(dropout, Dropout) -> list[str]:
    """The known mistakes of chapter 5's exercise that ``dropout`` and ``Dropout`` show."""
    import torch

    x = torch.rand(200, 500, dtype=torch.float64) + 0.5  # no zeros: 0 means dropped
    before = x.clone()

    def fresh():
        return before.clone()  # each call its own copy: one that works in place changes it

    out = dropout(x, 0.3)
    dropped = (out == 0).double().mean().item()
    kept = out != 0
    shows = {
        "dropout_keeps_with_probability_p": lambda: abs(dropped - 0.7) < 0.02,
        "dropout_no_scaling": lambda: torch.allclose(out[kept].double(), before[kept]),
        "dropout_divides_by_p": lambda: torch.allclose(out[kept].double(), before[kept] / 0.3),
        "dropout_scaling_at_eval": lambda: torch.allclose(
            dropout(fresh(), 0.5, training=False).double(), before * 0.5),
        "dropout_active_at_eval": lambda: bool((dropout(fresh(), 0.5, training=False) == 0).any()),
        "dropout_module_ignores_training": lambda: _layer_drops_at_eval(dropout, Dropout, before),
        "dropout_nan_at_p1": lambda: bool(dropout(fresh(), 1.0).isnan().all()),
        "dropout_same_mask_every_call": lambda: torch.equal(dropout(fresh(), 0.5) == 0,
                                                            dropout(fresh(), 0.5) == 0),
        "dropout_one_mask_per_batch": lambda: bool(((out == 0) == (out[0] == 0)).all()),
        "dropout_in_place": lambda: not torch.equal(x, before),
        "dropout_float32_output": lambda: out.dtype == torch.float32,
        "dropout_numpy_round_trip": lambda: _no_gradient(dropout, torch),
    }
    return [name for name, test in shows.items() if _quietly(test)]


def _layer_drops_at_eval(dropout, Dropout, x) -> bool:
    layer = Dropout(0.5)
    layer.eval()
    function_eval = dropout(x.clone(), 0.5, training=False)
    return bool((layer(x.clone()) == 0).any()) and not bool((function_eval == 0).any())


def _no_gradient(dropout, torch) -> bool:
    x = (torch.rand(100, dtype=torch.float64) + 0.5).requires_grad_()
    try:
        dropout(x, 0.5).sum().backward()
    except RuntimeError as exc:
        return "does not require grad" in str(exc)
    return False


def _bn_case(torch, shape):
    """x, gamma, beta, running_mean, running_var of ``shape`` (float64), and copies of them."""
    c = shape[1]
    gen = torch.Generator().manual_seed(31)
    made = [torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1,
            torch.rand(c, generator=gen, dtype=torch.float64) + 0.5,
            torch.randn(c, generator=gen, dtype=torch.float64),
            torch.randn(c, generator=gen, dtype=torch.float64),
            torch.rand(c, generator=gen, dtype=torch.float64) + 0.5]
    return made, [t.clone() for t in made]


def _normalised(x, gamma, beta, mean, var, eps=1e-5):
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (gamma.reshape(shape) * (x - mean.reshape(shape)) / (var.reshape(shape) + eps).sqrt()
            + beta.reshape(shape))


def batch_norm_mistakes(batch_norm) -> list[str]:
    """The known mistakes of chapter 6's exercise that ``batch_norm`` shows (momentum 0.1)."""
    import torch
    import torch.nn.functional as F

    (x, gamma, beta, rm, rv), (_, _, _, rm0, rv0) = _bn_case(torch, (32, 4))
    out = batch_norm(x, gamma, beta, rm, rv)
    mean, biased, unbiased = x.mean(0), x.var(0, correction=0), x.var(0)
    want = F.batch_norm(x, rm0.clone(), rv0.clone(), gamma, beta, training=True)
    (xe, ge, be, rme, rve), _ = _bn_case(torch, (16, 4))
    (x4, g4, b4, rm4, rv4), (_, _, _, rm40, _) = _bn_case(torch, (4, 3, 2, 5))
    rows = x4.reshape(-1, 3)
    shows = {
        "bn_calls_library": lambda: _uses_library(batch_norm, torch, F),
        "bn_biased_running_var": lambda: torch.allclose(out, want)
        and torch.allclose(rv, 0.9 * rv0 + 0.1 * biased),
        "bn_unbiased_normalisation": lambda: torch.allclose(
            out, _normalised(x, gamma, beta, mean, unbiased)),
        "bn_running_momentum_swapped": lambda: torch.allclose(rm, 0.1 * rm0 + 0.9 * mean),
        "bn_batch_stats_at_eval": lambda: torch.allclose(
            batch_norm(xe, ge, be, rme, rve, training=False),
            _normalised(xe, ge, be, xe.mean(0), xe.var(0, correction=0))),
        "bn_wrong_axes_4d": lambda: batch_norm(x4, g4, b4, rm4, rv4) is not None
        and torch.allclose(rm4, 0.9 * rm40 + 0.1 * rows.mean(0)),
    }
    return [name for name, test in shows.items() if _quietly(test)]


def _uses_library(batch_norm, torch, F) -> bool:
    """Does batch_norm call the library's batch norm? (switched off while it runs)"""
    (x, gamma, beta, rm, rv), _ = _bn_case(torch, (8, 3))
    library = (F.batch_norm, torch.batch_norm, torch.native_batch_norm)

    class Called(Exception):
        pass

    def called(*args, **kwargs):
        raise Called

    F.batch_norm = torch.batch_norm = torch.native_batch_norm = called
    try:
        batch_norm(x, gamma, beta, rm, rv)
    except Called:
        return True
    except Exception:  # noqa: BLE001 - another error is not this mistake
        return False
    finally:
        F.batch_norm, torch.batch_norm, torch.native_batch_norm = library
    return False
