"""Chapter 1: ``f_score`` and ``binary_scores``, checked against formulas and scikit-learn."""

from __future__ import annotations

import math
import warnings

import numpy as np

from autograder.exercises import Exercise, known
from autograder.protocol import (
    Check,
    Fail,
    Plan,
    as_float,
    call_results,
    close,
    py,
    type_name,
)


def _recognise_formulas(plan: Plan, table: list, random_cases: list) -> None:
    """The wrong formulas, by the values f_score gives on the random cases; NumPy numbers."""
    def behaves_as(formula):
        def recognise(R):
            res = call_results(R, "fv_random", 2 * len(random_cases))
            return all(math.isclose(as_float(res[2 * i], "F"), formula(p, r, b), rel_tol=1e-6,
                                    abs_tol=1e-12)
                       for i, (p, r, b) in enumerate(random_cases))
        return recognise

    plan.recognise("f_arithmetic_mean", behaves_as(lambda p, r, b: (p + r) / 2))
    plan.recognise("f_all_zeros", behaves_as(lambda p, r, b: 0.0))
    plan.recognise("f_beta_not_squared",
                   behaves_as(lambda p, r, b: (1 + b) * p * r / (b * p + r)))
    plan.recognise("f_beta_weights_precision",
                   behaves_as(lambda p, r, b: (1 + b**2) * p * r / (p + b**2 * r)))
    plan.recognise("f_numpy_floats", lambda R: all(
        str(enc.get("t", "")).startswith("numpy.float")
        for enc in call_results(R, "fv_table", len(table))))


def f_score_values(plan: Plan) -> Check:
    """test_f_score_values: the notes' table, random inputs (beta by name and position), sklearn."""
    rng = plan.rng
    table = [((0.95, 0.90), 2 * 0.95 * 0.90 / 1.85), ((0.98, 0.85), 2 * 0.98 * 0.85 / 1.83),
             ((0.5, 0.5), 0.5), ((1.0, 1.0), 1.0)]
    plan.add("call", "fv_table", func="f_score",
             calls=[{"args": [py(p), py(r)]} for (p, r), _ in table])
    random_cases = []
    for _ in range(100):
        p, r = float(rng.random()), float(rng.random())
        beta = float(rng.choice([0.25, 0.5, 1.0, 2.0, 3.0, float(rng.uniform(0.1, 5.0))]))
        random_cases.append((p, r, beta))
    calls = []
    for p, r, beta in random_cases:
        calls.append({"args": [py(p), py(r)], "kwargs": {"beta": py(beta)}})
        calls.append({"args": [py(p), py(r), py(beta)]})
    plan.add("call", "fv_random", func="f_score", calls=calls)
    sk_cases = []
    for _ in range(40):
        tp, fp, fn, tn = (int(rng.integers(1, 41)), int(rng.integers(0, 41)),
                          int(rng.integers(0, 41)), int(rng.integers(0, 41)))
        sk_cases.append((tp, fp, fn, tn, float(rng.choice([0.5, 1.0, 2.0]))))
    plan.add("call", "fv_sklearn", func="f_score",
             calls=[{"args": [py(tp / (tp + fp)), py(tp / (tp + fn))],
                     "kwargs": {"beta": py(beta)}} for tp, fp, fn, tn, beta in sk_cases])

    _recognise_formulas(plan, table, random_cases)

    def check(R):
        res = call_results(R, "fv_table", len(table))
        found = []
        for enc, ((p, r), want) in zip(res, table, strict=True):
            v = as_float(enc, f"f_score({p}, {r})")
            close(v, want, f"f_score({p}, {r})")
            found.append(v)
        if not (round(found[0], 3) == 0.924 and round(found[1], 3) == 0.910):
            raise Fail("the notes' table: F(A) must be 0.924 and F(B) 0.910")
        res = call_results(R, "fv_random", 2 * len(random_cases))
        for i, (p, r, beta) in enumerate(random_cases):
            want = (1 + beta**2) * p * r / (beta**2 * p + r)
            for enc, how in ((res[2 * i], "beta="), (res[2 * i + 1], "positional beta ")):
                what = f"f_score({p:.4f}, {r:.4f}, {how}{beta:.3f})"
                close(as_float(enc, what), want, what)
        _against_sklearn(call_results(R, "fv_sklearn", len(sk_cases)), sk_cases)

    return check


def _against_sklearn(res: list, cases: list) -> None:
    from sklearn.metrics import fbeta_score

    for enc, (tp, fp, fn, tn, beta) in zip(res, cases, strict=True):
        yt = np.array([1] * tp + [0] * fp + [1] * fn + [0] * tn)
        yp = np.array([1] * tp + [1] * fp + [0] * fn + [0] * tn)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = float(fbeta_score(yt, yp, beta=beta, zero_division=0))
        v = as_float(enc, f"f_score for TP={tp} FP={fp} FN={fn}, beta={beta}")
        close(v, want, f"f_score vs scikit-learn (TP={tp} FP={fp} FN={fn}, beta={beta})")


def f_score_edge_cases(plan: Plan) -> Check:
    """test_f_score_edge_cases: 0/0 -> 0.0, extreme betas, NumPy and torch scalars."""
    zero_args = [(0.0, 0.0), (0, 0), (0.0, 0.0, 2.0), (0.0, 0.7), (0.7, 0.0)]
    plan.add("call", "fe_zero", func="f_score",
             calls=[{"args": [py(a) for a in args]} for args in zero_args])
    beta_cases = [((0.5, 1.0, 2.0), 5 * 0.5 / (4 * 0.5 + 1.0)),
                  ((1.0, 0.5, 2.0), 5 * 0.5 / (4 * 1.0 + 0.5)),
                  ((1.0, 0.5, 0.5), None), ((0.5, 1.0, 0.5), None),
                  ((0.3, 0.9, 0.0), 0.3), ((0.3, 0.9, 1e4), 0.9),
                  ((0.0, 0.0, 0.5), 0.0), ((0.0, 0.0, 1.0), 0.0), ((0.0, 0.0, 3.0), 0.0)]
    plan.add("call", "fe_beta", func="f_score",
             calls=[{"args": [py(p), py(r)], "kwargs": {"beta": py(b)}}
                    for (p, r, b), _ in beta_cases])
    scalar_cases = [("np_scalar", np.float64, 0.8, 0.6), ("np_scalar", np.float32, 0.8, 0.6),
                    ("torch_scalar", np.float32, 0.8, 0.6), ("np_scalar", np.float64, 0.0, 0.0),
                    ("torch_scalar", np.float64, 0.25, 0.75)]
    plan.add("call", "fe_scalars", func="f_score",
             calls=[{"args": [plan.inp(np.array(p, dtype=dt), kind),
                              plan.inp(np.array(r, dtype=dt), kind)]}
                    for kind, dt, p, r in scalar_cases])

    def zero_gives(what):
        def recognise(R):
            res = call_results(R, "fe_zero", len(zero_args))
            return what(res[0]) and what(res[2])  # f_score(0.0, 0.0) and with beta=2
        return recognise

    plan.recognise("f_no_zero_division", zero_gives(
        lambda enc: enc.get("t") == "exception" and enc.get("name") == "ZeroDivisionError"))
    plan.recognise("f_nan_on_zero_division", zero_gives(
        lambda enc: enc.get("t") == "float" and isinstance(enc.get("v"), float)
        and math.isnan(enc["v"])))
    plan.recognise("f_int_zero_on_zero_division", zero_gives(
        lambda enc: enc.get("t") == "int" and enc.get("v") == 0))

    def check(R):
        for enc, args in zip(call_results(R, "fe_zero", len(zero_args)), zero_args, strict=True):
            if as_float(enc, f"f_score{args}") != 0.0:
                raise Fail(f"f_score{args} must be 0.0 (0/0 -> 0.0)")
        res = call_results(R, "fe_beta", len(beta_cases))
        found = [as_float(enc, f"f_score({p}, {r}, beta={b})")
                 for enc, ((p, r, b), _) in zip(res, beta_cases, strict=True)]
        for v, ((p, r, b), want) in zip(found, beta_cases, strict=True):
            if want is not None:
                close(v, want, f"f_score({p}, {r}, beta={b})", rel=1e-6 if b > 100 else 1e-9)
        if not found[0] > found[1]:
            raise Fail("beta > 1 must weigh recall more than precision")
        if not found[2] > found[3]:
            raise Fail("beta < 1 must weigh precision more than recall")
        res = call_results(R, "fe_scalars", len(scalar_cases))
        for enc, (kind, dt, p, r) in zip(res, scalar_cases, strict=True):
            what = f"f_score of {kind} {np.dtype(dt).name} numbers"
            p32, r32 = float(dt(p)), float(dt(r))
            want = 0.0 if p32 == 0 else 2 * p32 * r32 / (p32 + r32)
            close(as_float(enc, what), want, what, rel=1e-6)

    return check


def _label_spec(plan: Plan, arr: np.ndarray, kind: str) -> dict:
    if kind == "int32":
        return plan.inp(arr.astype(np.int32), "ndarray")
    return plan.inp(arr.astype(np.int64), kind)


def _check_triple(enc, expected, what: str) -> None:
    if not isinstance(enc, dict) or enc.get("t") != "tuple":
        raise Fail(f"{what}: return a tuple (precision, recall, f1), got {type_name(enc)}")
    items = enc.get("items")
    if enc.get("n") != 3 or not isinstance(items, list) or len(items) != 3:
        raise Fail(f"{what}: return exactly 3 values (precision, recall, f1)")
    for name, item, want in zip(("precision", "recall", "f1"), items, expected, strict=True):
        close(as_float(item, f"{what}: {name}"), want, f"{what}: {name}")


def _sklearn_triple(yt, yp) -> tuple[float, float, float]:
    from sklearn.metrics import precision_recall_fscore_support

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, _ = precision_recall_fscore_support(yt, yp, average="binary", zero_division=0)
    return float(p), float(r), float(f)


def binary_scores(plan: Plan) -> Check:
    """test_binary_scores: the notes' example and random labels as lists, arrays and tensors."""
    rng = plan.rng
    cases = []  # (y_true, y_pred, kind)
    notes_t = np.array([1] * 130 + [0] * 870, dtype=np.int64)
    notes_p = np.array([1] * 100 + [0] * 30 + [1] * 70 + [0] * 800, dtype=np.int64)
    cases.append((notes_t, notes_p, "list"))
    cases.append((np.array([1, 1, 0, 0, 0, 0, 0, 0]), np.array([1, 1, 1, 1, 1, 1, 0, 0]),
                  "list"))
    for trial in range(40):
        n = int(rng.integers(5, 300))
        rate_true, rate_pred = rng.uniform(0.05, 0.95, size=2)
        yt = (rng.random(n) < rate_true).astype(np.int64)
        yp = (rng.random(n) < rate_pred).astype(np.int64)
        cases.append((yt, yp, ("list", "ndarray", "int32", "tensor")[trial % 4]))
    # small random samples hit the zero divisions sooner or later: here they always do
    for kind in ("list", "ndarray", "tensor"):
        cases.append((np.array([1, 0, 1, 0, 1]), np.zeros(5, dtype=np.int64), kind))
        cases.append((np.zeros(5, dtype=np.int64), np.array([0, 1, 1, 0, 0]), kind))
    plan.add("call", "bs", func="binary_scores",
             calls=[{"args": [_label_spec(plan, yt, k), _label_spec(plan, yp, k)]}
                    for yt, yp, k in cases])

    def swapped(R):
        res = call_results(R, "bs", len(cases))
        for enc, (yt, yp, _) in zip(res, cases, strict=True):
            p, r, f = _sklearn_triple(yt, yp)
            _check_triple(enc, (r, p, f), "swapped")
        return True

    def tensors_returned(R):
        res = call_results(R, "bs", len(cases))
        tensors = [enc for enc, (_, _, kind) in zip(res, cases, strict=True) if kind == "tensor"]
        return bool(tensors) and all(
            isinstance(enc, dict) and enc.get("t") == "tuple"
            and any(isinstance(i, dict) and i.get("t") == "torch.Tensor"
                    for i in enc.get("items") or [])
            for enc in tensors)

    plan.recognise("f_precision_recall_swapped", swapped)
    plan.recognise("f_tensor_scores", tensors_returned)

    def check(R):
        res = call_results(R, "bs", len(cases))
        for i, (enc, (yt, yp, kind)) in enumerate(zip(res, cases, strict=True)):
            _check_triple(enc, _sklearn_triple(yt, yp), f"binary_scores case {i} ({kind})")

    return check


def binary_scores_zero_division(plan: Plan) -> Check:
    """test_binary_scores_zero_division: no positive predicted or present -> 0.0, not an error."""
    cases = [([1, 0, 1, 0], [0, 0, 0, 0], "list", (0.0, 0.0, 0.0)),
             ([0, 0, 0, 0], [1, 0, 0, 0], "list", (0.0, 0.0, 0.0)),
             ([1, 0, 1, 1], [1, 0, 1, 1], "list", (1.0, 1.0, 1.0)),
             ([0, 0, 0], [0, 0, 0], "list", (0.0, 0.0, 0.0)),
             ([0] * 6, [0] * 6, "ndarray", (0.0, 0.0, 0.0)),
             ([1, 1, 0], [0, 0, 0], "tensor", (0.0, 0.0, 0.0)),
             ([0, 0, 0], [1, 1, 0], "tensor", (0.0, 0.0, 0.0)),
             ([0, 0, 0, 0], [0, 1, 1, 0], "ndarray", (0.0, 0.0, 0.0)),
             ([1] * 5, [1] * 5, "ndarray", (1.0, 1.0, 1.0)),
             ([1, 0, 0, 1], [1, 0, 0, 1], "tensor", (1.0, 1.0, 1.0)),
             ([1, 0, 1, 0], [0, 1, 0, 1], "list", (0.0, 0.0, 0.0))]
    plan.add("call", "zd", func="binary_scores",
             calls=[{"args": [_label_spec(plan, np.array(t), k),
                              _label_spec(plan, np.array(p), k)]} for t, p, k, _ in cases])

    def check(R):
        for enc, (t, p, k, want) in zip(call_results(R, "zd", len(cases)), cases, strict=True):
            _check_triple(enc, want, f"binary_scores({t}, {p}) as {k}")

    return check


def plan(p: Plan) -> dict[str, Check]:
    return {"test_f_score_values": f_score_values(p),
            "test_f_score_edge_cases": f_score_edge_cases(p),
            "test_binary_scores": binary_scores(p),
            "test_binary_scores_zero_division": binary_scores_zero_division(p)}


MISTAKES = known(
    "f_all_zeros", "f_arithmetic_mean", "f_beta_not_squared", "f_beta_weights_precision",
    "f_no_zero_division", "f_nan_on_zero_division", "f_int_zero_on_zero_division",
    "f_numpy_floats", "f_precision_recall_swapped", "f_tensor_scores")

EXERCISE = Exercise("01_metrics", "f_score_solution", ("f_score", "binary_scores"), plan,
                    forbidden=("sklearn.metrics",), mistakes=MISTAKES)
