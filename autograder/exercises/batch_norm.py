"""Chapter 6: ``batch_norm`` by hand, checked against ``torch.nn.functional.batch_norm``.

Each probe calls the student's function once on grader-chosen tensors; the output and the
running statistics afterwards (the very tensors passed in: the update is in place) are compared
with what ``F.batch_norm`` does to copies of the same tensors, in this process.
"""

from __future__ import annotations

import numpy as np

from autograder.exercises import Exercise, known
from autograder.protocol import Check, Fail, Plan, assert_close, call_results, py, tensor

# What batch_norm may not call: F.batch_norm (nn.BatchNorm* call it) and the ops beneath it.
LIBRARY = ["torch.nn.functional.batch_norm", "torch.batch_norm", "torch.native_batch_norm"]
_TORCH_DTYPE = {"float64": "torch.float64", "float32": "torch.float32"}


class Case:
    """One call: the input tensors, the keyword arguments, and the reference results."""

    def __init__(self, plan: Plan, pid: str, shape, dtype, forbid=False, **kwargs):
        rng = plan.rng
        c = shape[1]
        self.pid, self.kwargs, self.shape = pid, kwargs, tuple(shape)
        self.dtype = _TORCH_DTYPE[np.dtype(dtype).name]
        scale, shift = rng.uniform(0.5, 4.0), rng.uniform(-3.0, 3.0)
        self.arrays = [(rng.standard_normal(shape) * scale + shift).astype(dtype),
                       (rng.random(c) + 0.5).astype(dtype), rng.standard_normal(c).astype(dtype),
                       rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)]
        fields = {"forbid": LIBRARY} if forbid else {}
        plan.add("call", pid, func="batch_norm",
                 args=[plan.inp(a, "tensor") for a in self.arrays],
                 kwargs={k: py(v) for k, v in kwargs.items()}, inputs_after=True, **fields)

    def what(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"batch_norm(x of shape {self.shape}, {self.dtype}{', ' + args if args else ''})"

    def reference(self):
        """(output, running_mean, running_var) of F.batch_norm on copies of the inputs."""
        import torch
        import torch.nn.functional as F

        x, gamma, beta, rm, rv = (torch.from_numpy(a.copy()) for a in self.arrays)
        kw = {"training": True, "momentum": 0.1, "eps": 1e-5, **self.kwargs}
        out = F.batch_norm(x, rm, rv, gamma, beta, training=kw["training"],
                           momentum=kw["momentum"], eps=kw["eps"])
        return out, rm, rv

    def check(self, R, running: bool = True) -> None:
        """The output, the input left alone, and (``running``) the running statistics."""
        import torch

        want, rm, rv = self.reference()
        what = self.what()
        out = tensor(R, call_results(R, self.pid, 1)[0], what, self.dtype, self.shape)
        assert_close(out, want, f"{what} differs from torch.nn.functional.batch_norm")
        after = R.record(self.pid).get("inputs_after")
        if not isinstance(after, list) or len(after) != 5:
            raise Fail(f"{self.pid}: malformed result")
        x_after = tensor(R, after[0], f"{what}: x afterwards", self.dtype, self.shape)
        assert_close(x_after, torch.from_numpy(self.arrays[0]), f"{what} must not modify x",
                     rtol=0, atol=0)
        if not running:
            return
        c = (self.shape[1],)
        rm_after = tensor(R, after[3], f"{what}: running_mean afterwards", self.dtype, c)
        rv_after = tensor(R, after[4], f"{what}: running_var afterwards", self.dtype, c)
        if not self.kwargs.get("training", True):
            assert_close(rm_after, rm, f"{what}: evaluation must leave running_mean unchanged",
                         rtol=0, atol=0)
            assert_close(rv_after, rv, f"{what}: evaluation must leave running_var unchanged",
                         rtol=0, atol=0)
            return
        assert_close(rm_after, rm, f"{what}: running_mean must become (1 - momentum) * "
                     "running_mean + momentum * batch mean, in place")
        assert_close(rv_after, rv, f"{what}: running_var must become (1 - momentum) * "
                     "running_var + momentum * unbiased batch variance (m - 1), in place")


def _results(R, case: Case):
    """(output, running_mean, running_var) the student's call left, as float64 tensors."""
    out = tensor(R, call_results(R, case.pid, 1)[0], case.pid, None, case.shape)
    after = R.record(case.pid).get("inputs_after")
    if not isinstance(after, list) or len(after) != 5:
        raise Fail(f"{case.pid}: malformed result")
    return out.double(), tensor(R, after[3], "rm").double(), tensor(R, after[4], "rv").double()


def _normalised(case: Case, mean, var, eps=None):
    """x normalised with the given per-channel statistics, scaled and shifted."""
    import torch

    x, gamma, beta = (torch.from_numpy(a).double() for a in case.arrays[:3])
    shape = [1, -1] + [1] * (x.dim() - 2)
    eps = case.kwargs.get("eps", 1e-5) if eps is None else eps
    return (gamma.reshape(shape) * (x - mean.reshape(shape)) / (var.reshape(shape) + eps).sqrt()
            + beta.reshape(shape))


def _batch_stats(case: Case, correction: int):
    import torch

    x = torch.from_numpy(case.arrays[0]).double()
    dims = [0, *range(2, x.dim())]
    return x.mean(dim=dims), x.var(dim=dims, correction=correction)


def _near(a, b, rtol=1e-5) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b.double(), rtol=rtol, atol=1e-6))


def _running_update(case: Case, mean, var, swapped=False):
    import torch

    m = case.kwargs.get("momentum", 0.1)
    m = 1 - m if swapped else m
    rm, rv = (torch.from_numpy(a).double() for a in case.arrays[3:])
    return (1 - m) * rm + m * mean, (1 - m) * rv + m * var


def recognise_training(plan: Plan, case: Case) -> None:
    """The mistakes a training-mode (N, C) call shows."""
    def biased_running_var(R):
        out, rm, rv = _results(R, case)
        mean, var = _batch_stats(case, 0)
        return _near(out, case.reference()[0]) and _near(rv, _running_update(case, mean, var)[1])

    def unbiased_normalisation(R):
        mean, var = _batch_stats(case, 1)
        return _near(_results(R, case)[0], _normalised(case, mean, var))

    def momentum_swapped(R):
        out, rm, rv = _results(R, case)
        mean, var = _batch_stats(case, 1)
        want_rm, want_rv = _running_update(case, mean, var, swapped=True)
        return _near(rm, want_rm) and _near(rv, want_rv)

    plan.recognise("bn_biased_running_var", biased_running_var)
    plan.recognise("bn_unbiased_normalisation", unbiased_normalisation)
    plan.recognise("bn_running_momentum_swapped", momentum_swapped)


def recognise_evaluation(plan: Plan, case: Case) -> None:
    """Evaluation that normalises with the batch's own statistics."""
    def batch_stats_at_eval(R):
        mean, var = _batch_stats(case, 0)
        return _near(_results(R, case)[0], _normalised(case, mean, var))

    plan.recognise("bn_batch_stats_at_eval", batch_stats_at_eval)


def recognise_four_d(plan: Plan, case: Case) -> None:
    """A 4-D input whose statistics are taken over x.reshape(-1, C), mixing the channels."""
    import torch

    def wrong_axes(R):
        rows = torch.from_numpy(case.arrays[0]).double().reshape(-1, case.shape[1])
        want_rm = _running_update(case, rows.mean(dim=0), rows.var(dim=0))[0]
        return _near(_results(R, case)[1], want_rm)

    plan.recognise("bn_wrong_axes_4d", wrong_axes)


def recognise_library(plan: Plan, case: Case, allowed: Case) -> None:
    """Right results (``allowed``, the library allowed), but from the library (``case``)."""
    def calls_library(R):
        try:
            R.record(case.pid)
        except Fail as exc:
            return "forbids" in str(exc) and _near(_results(R, allowed)[0],
                                                   allowed.reference()[0])
        return False

    plan.recognise("bn_calls_library", calls_library)


def _cases_check(cases: list[Case]) -> Check:
    def check(R):
        for case in cases:
            case.check(R)

    return check


def training(plan: Plan) -> Check:
    """test_batch_norm_training: (N, C) in training mode, defaults and other momentum/eps."""
    f64, f32 = np.float64, np.float32
    cases = [
        Case(plan, "bt_default", (32, 5), f64),
        Case(plan, "bt_f32", (7, 3), f32),
        Case(plan, "bt_momentum", (64, 8), f64, training=True, momentum=0.3, eps=1e-3),
        Case(plan, "bt_two", (2, 4), f64, momentum=0.01),
        Case(plan, "bt_one_channel", (50, 1), f32, momentum=0.5, eps=1e-4),
    ]
    recognise_training(plan, cases[2])  # float64, momentum 0.3
    return _cases_check(cases)


def evaluation(plan: Plan) -> Check:
    """test_batch_norm_eval: (N, C) in evaluation mode, a batch of one included."""
    f64, f32 = np.float64, np.float32
    cases = [
        Case(plan, "be_default", (16, 4), f64, training=False),
        Case(plan, "be_one", (1, 6), f64, training=False),
        Case(plan, "be_f32_eps", (10, 3), f32, training=False, eps=1e-3),
        Case(plan, "be_momentum", (20, 5), f64, training=False, momentum=0.5),
    ]
    recognise_evaluation(plan, cases[0])
    return _cases_check(cases)


def four_d(plan: Plan) -> Check:
    """test_batch_norm_4d: (N, C, H, W), per-channel statistics, training and evaluation."""
    f64, f32 = np.float64, np.float32
    cases = [
        Case(plan, "b4_train", (8, 3, 5, 5), f64),
        Case(plan, "b4_eval", (8, 3, 5, 5), f64, training=False),
        Case(plan, "b4_rect", (4, 6, 3, 7), f64, momentum=0.3),
        Case(plan, "b4_f32", (5, 2, 4, 6), f32, eps=1e-3),
        Case(plan, "b4_eval_f32", (3, 4, 2, 5), f32, training=False),
    ]
    recognise_four_d(plan, cases[0])
    return _cases_check(cases)


def own_code(plan: Plan) -> Check:
    """test_batch_norm_own_code: the output is right with the library's batch norm switched off."""
    cases = [Case(plan, "bo_train", (16, 4), np.float64, forbid=True),
             Case(plan, "bo_train_f32", (9, 3), np.float32, forbid=True, momentum=0.2)]
    allowed = Case(plan, "bo_allowed", (16, 4), np.float64)  # the same call, library allowed
    recognise_library(plan, cases[0], allowed)

    def check(R):
        for case in cases:
            case.check(R, running=False)

    return check


def plan(p: Plan) -> dict[str, Check]:
    checks = {"test_batch_norm_training": training(p), "test_batch_norm_eval": evaluation(p),
              "test_batch_norm_4d": four_d(p), "test_batch_norm_own_code": own_code(p)}
    return checks


MISTAKES = known(
    "bn_calls_library", "bn_biased_running_var", "bn_unbiased_normalisation",
    "bn_running_momentum_swapped", "bn_batch_stats_at_eval", "bn_wrong_axes_4d")

EXERCISE = Exercise("06_batch_norm", "batch_norm_solution", ("batch_norm",), plan,
                    mistakes=MISTAKES)
