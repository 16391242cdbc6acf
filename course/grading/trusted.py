"""The integrity check: score each graded exercise outside the student's process.

nbgrader runs the test cells in the student's own kernel, where the student's code can switch
them off. ``trusted_grade`` decides the score another way:

1. here (the trusted process) the notebook JSON is read and only the source of the exercise's
   solution cell is taken (by grade_id); nothing else of the submission is used;
2. the grader chooses the inputs (seeded from ``COURSE_GRADING_SECRET``, never from the
   student) and writes them, the solution source and a plan into a fresh folder;
3. ``course/grading/harness.py`` runs in the sandbox (``python -I``), executes only that cell,
   calls the student's functions on those inputs and writes plain results (JSON, ``.npy``
   without pickle);
4. here again, the results are loaded strictly (no links followed, size caps,
   ``allow_pickle=False``, exact types and shapes) and compared with references computed in
   this process: scikit-learn for F-scores, ``torch.optim.SGD`` trajectories for momentum,
   binomial bounds and exact scaling for dropout.

Each test cell of the notebook has a trusted twin that checks the same behaviours and is worth
the same points (all or nothing, as nbgrader scores a cell). Regrading a submission gives the
same scores: the inputs and the harness's random seeds depend only on the secret.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import stat
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from course.grading.sandbox import run_sandboxed

__all__ = ["CellScore", "GradedAssignment", "GRADED", "trusted_grade", "solution_source",
           "max_score"]

HARNESS = Path(__file__).resolve().with_name("harness.py")
_MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
_MAX_RESULT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class CellScore:
    """The trusted score of one nbgrader test cell."""

    points: float
    max_points: float
    passed: bool
    message: str


@dataclass(frozen=True)
class GradedAssignment:
    notebook: str
    solution_id: str
    cells: dict  # grade_id -> points, in notebook order
    names: tuple = ()  # what the solution cell defines (to find it when its metadata is gone)


GRADED: dict[str, GradedAssignment] = {
    "01_metrics": GradedAssignment("01_metrics.ipynb", "f_score_solution", {
        "test_f_score_values": 2, "test_f_score_edge_cases": 1,
        "test_binary_scores": 2, "test_binary_scores_zero_division": 1},
        ("f_score", "binary_scores")),
    "04_learning_rate": GradedAssignment("04_learning_rate.ipynb", "momentum_solution", {
        "test_momentum_single_step": 1, "test_momentum_trajectory": 2,
        "test_momentum_param_groups": 1}, ("MomentumSGD",)),
    "05_regularization": GradedAssignment("05_regularization.ipynb", "dropout_solution", {
        "test_dropout_basics": 1, "test_dropout_statistics": 2, "test_dropout_gradient": 1,
        "test_dropout_module": 1}, ("dropout", "Dropout")),
}


def max_score(assignment: str) -> float:
    """Total points of an assignment's graded test cells."""
    return float(sum(GRADED[assignment].cells.values()))


class Fail(Exception):
    """A trusted check failed (the message says which and why)."""


# --------------------------------------------------------------------------- notebook


def _defines(source: str, names) -> bool:
    import ast

    try:
        tree = ast.parse(_to_python(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    defined = {node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return bool(names) and set(names) <= defined


def solution_source(notebook_path, solution_id: str, names=()) -> str:
    """The source of the code cell whose nbgrader grade_id is ``solution_id``.

    Reads the JSON directly (no nbformat validation, which would log to stderr). When no cell
    carries that grade_id (metadata stripped, e.g. cells pasted into a new notebook), the last
    code cell that defines all of ``names`` at top level is taken instead. Raises Fail when the
    file is unreadable, not a notebook, or has no such cell.
    """
    path = Path(notebook_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Fail(f"cannot open the notebook: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise Fail("the notebook is not a regular file")
        data = fh.read(_MAX_NOTEBOOK_BYTES + 1)
    if len(data) > _MAX_NOTEBOOK_BYTES:
        raise Fail("the notebook is larger than 64 MB")
    try:
        nb = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Fail(f"the notebook is not valid JSON: {exc}") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise Fail("the notebook has no list of cells")
    fallback = None
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        meta = cell.get("metadata")
        nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
        if isinstance(nbg, dict) and nbg.get("grade_id") == solution_id:
            if not isinstance(source, str):
                raise Fail(f"the cell {solution_id!r} has no source text")
            return source
        if isinstance(source, str) and _defines(source, names):
            fallback = source
    if fallback is not None:
        return fallback
    raise Fail(f"no code cell with grade_id {solution_id!r} (the exercise's solution cell)")


def _to_python(source: str) -> str:
    """IPython syntax (magics, ``!cmd``) -> plain Python, as the kernel would see it."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - a cell IPython cannot parse runs as it is
        return source


# --------------------------------------------------------------------------- plans


def _secret_seed(assignment: str, salt: str = "") -> int:
    secret = os.environ.get("COURSE_GRADING_SECRET", "dl-tuning-course/trusted-grader/v1")
    digest = hashlib.sha256(f"{secret}\0{assignment}\0{salt}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


class Plan:
    """The probes the harness will run, and the input arrays they use."""

    def __init__(self, assignment: str):
        self.assignment = assignment
        self.probes: list[dict] = []
        self.inputs: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(_secret_seed(assignment))

    def inp(self, array, as_: str = "ndarray", **extra) -> dict:
        name = f"in{len(self.inputs)}.npy"
        self.inputs[name] = np.array(array, order="C")
        return {"npy": name, "as": as_, **extra}

    def add(self, kind: str, pid: str, **fields) -> str:
        assert pid not in {p["id"] for p in self.probes}, pid
        seed = _secret_seed(self.assignment, pid) % 2**31
        self.probes.append({"kind": kind, "id": pid, "seed": seed, **fields})
        return pid


def _py(value) -> dict:
    return {"py": value}


class Results:
    """Strict, read-only access to what the harness wrote (all of it untrusted)."""

    def __init__(self, results_fd: int | None, exec_status: dict | None, reason: str):
        self.fd = results_fd
        self.exec_status = exec_status
        self.reason = reason
        self.cache: dict[str, dict] = {}

    def _read(self, name: str, cap: int = _MAX_RESULT_BYTES) -> bytes:
        if self.fd is None:
            raise Fail(f"no results ({self.reason or 'the harness did not run'})")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError:
            raise Fail(f"result {name} is missing ({self.reason or 'the code stopped early'})"
                       ) from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise Fail(f"result {name} is not a regular file")
            data = fh.read(cap + 1)
        if len(data) > cap:
            raise Fail(f"result {name} is too large")
        return data

    def record(self, pid: str) -> dict:
        if pid not in self.cache:
            try:
                rec = json.loads(self._read(f"{pid}.json", 4 * 1024 * 1024).decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise Fail(f"result {pid} is malformed") from None
            if not isinstance(rec, dict):
                raise Fail(f"result {pid} is malformed")
            status = rec.get("status")
            if status == "timeout":
                raise Fail(f"{pid}: the code ran too long (probe timeout)")
            if status != "ok":
                err = rec.get("error")
                raise Fail(f"{pid}: {err if isinstance(err, str) else 'failed'}")
            self.cache[pid] = rec
        return self.cache[pid]

    def array(self, enc: dict, what: str) -> np.ndarray:
        name = enc.get("npy")
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise Fail(f"{what}: no array data")
        try:
            arr = np.load(io.BytesIO(self._read(name)), allow_pickle=False)
        except Fail:
            raise
        except Exception:  # noqa: BLE001 - malformed .npy
            raise Fail(f"{what}: malformed array data") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise Fail(f"{what}: not a numeric array")
        shape = enc.get("shape")
        if not isinstance(shape, list) or tuple(arr.shape) != tuple(shape):
            raise Fail(f"{what}: array shape does not match its description")
        return arr


_TORCH_DTYPES = {"torch.float64": "float64", "torch.float32": "float32",
                 "torch.float16": "float32", "torch.bfloat16": "float32", "torch.int64": "int64",
                 "torch.int32": "int32", "torch.bool": "bool", "torch.uint8": "uint8"}


def _float(enc, what: str) -> float:
    if not isinstance(enc, dict) or enc.get("t") != "float":
        raise Fail(f"{what} must be a Python float, got {_tname(enc)}")
    v = enc.get("v")
    if type(v) is not float:
        if type(v) is int:
            v = float(v)
        else:
            raise Fail(f"{what}: malformed value")
    if not math.isfinite(v):
        raise Fail(f"{what} is {v}, not a finite number")
    return v


def _tname(enc) -> str:
    if not isinstance(enc, dict):
        return "nothing"
    t = enc.get("t")
    if t == "exception":
        return f"an exception ({enc.get('name')})"
    if t == "other":
        return str(enc.get("name", "an object"))[:60]
    return str(t)[:60]


def _close(value: float, expected: float, what: str, rel: float = 1e-9, abs_: float = 1e-12):
    if not math.isclose(value, expected, rel_tol=rel, abs_tol=abs_):
        raise Fail(f"{what} = {value!r}, expected {expected!r}")


def _tensor(R: Results, enc, what: str, dtype: str | None = None, shape=None):
    import torch

    if not isinstance(enc, dict) or enc.get("t") != "torch.Tensor":
        raise Fail(f"{what} must be a torch.Tensor, got {_tname(enc)}")
    tdtype = enc.get("dtype")
    if tdtype not in _TORCH_DTYPES:
        raise Fail(f"{what}: unexpected dtype {str(tdtype)[:40]}")
    if dtype is not None and tdtype != dtype:
        raise Fail(f"{what}: dtype must be {dtype}, got {tdtype}")
    if enc.get("device") != "cpu":
        raise Fail(f"{what}: device must be kept (cpu), got {str(enc.get('device'))[:20]}")
    arr = R.array(enc, what)
    if str(arr.dtype) != _TORCH_DTYPES[tdtype]:
        raise Fail(f"{what}: array data does not match its dtype")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise Fail(f"{what}: shape must be {tuple(shape)}, got {tuple(arr.shape)}")
    return torch.from_numpy(arr.copy())


def _assert_close(actual, expected, what: str, **kw):
    import torch

    try:
        torch.testing.assert_close(actual, expected, **kw)
    except AssertionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "values differ"
        raise Fail(f"{what}: {first}") from None


def _is_value_error(enc) -> bool:
    return isinstance(enc, dict) and enc.get("t") == "exception" and enc.get(
        "is_value_error") is True


def _results(R: Results, pid: str, n: int | None = None) -> list:
    rec = R.record(pid)
    res = rec.get("results")
    if not isinstance(res, list) or (n is not None and len(res) != n):
        raise Fail(f"{pid}: malformed result")
    return res


# --------------------------------------------------------------------------- chapter 1


def _metrics_plan(plan: Plan):
    rng = plan.rng
    checks = {}

    # test_f_score_values -------------------------------------------------------------------
    table = [((0.95, 0.90), 2 * 0.95 * 0.90 / 1.85), ((0.98, 0.85), 2 * 0.98 * 0.85 / 1.83),
             ((0.5, 0.5), 0.5), ((1.0, 1.0), 1.0)]
    plan.add("call", "fv_table", func="f_score",
             calls=[{"args": [_py(p), _py(r)]} for (p, r), _ in table])
    random_cases = []
    for _ in range(100):
        p, r = float(rng.random()), float(rng.random())
        beta = float(rng.choice([0.25, 0.5, 1.0, 2.0, 3.0, float(rng.uniform(0.1, 5.0))]))
        random_cases.append((p, r, beta))
    calls = []
    for p, r, beta in random_cases:
        calls.append({"args": [_py(p), _py(r)], "kwargs": {"beta": _py(beta)}})
        calls.append({"args": [_py(p), _py(r), _py(beta)]})
    plan.add("call", "fv_random", func="f_score", calls=calls)
    sk_cases = []
    for _ in range(40):
        tp, fp, fn, tn = (int(rng.integers(1, 41)), int(rng.integers(0, 41)),
                          int(rng.integers(0, 41)), int(rng.integers(0, 41)))
        sk_cases.append((tp, fp, fn, tn, float(rng.choice([0.5, 1.0, 2.0]))))
    plan.add("call", "fv_sklearn", func="f_score",
             calls=[{"args": [_py(tp / (tp + fp)), _py(tp / (tp + fn))],
                     "kwargs": {"beta": _py(beta)}} for tp, fp, fn, tn, beta in sk_cases])

    def f_score_values(R):
        res = _results(R, "fv_table", len(table))
        values = []
        for enc, ((p, r), want) in zip(res, table, strict=True):
            v = _float(enc, f"f_score({p}, {r})")
            _close(v, want, f"f_score({p}, {r})")
            values.append(v)
        if not (round(values[0], 3) == 0.924 and round(values[1], 3) == 0.910):
            raise Fail("the notes' table: F(A) must be 0.924 and F(B) 0.910")
        res = _results(R, "fv_random", 2 * len(random_cases))
        for i, (p, r, beta) in enumerate(random_cases):
            want = (1 + beta**2) * p * r / (beta**2 * p + r)
            for enc, how in ((res[2 * i], "beta="), (res[2 * i + 1], "positional beta ")):
                v = _float(enc, f"f_score({p:.4f}, {r:.4f}, {how}{beta:.3f})")
                _close(v, want, f"f_score({p:.4f}, {r:.4f}, {how}{beta:.3f})")
        from sklearn.metrics import fbeta_score

        res = _results(R, "fv_sklearn", len(sk_cases))
        for enc, (tp, fp, fn, tn, beta) in zip(res, sk_cases, strict=True):
            yt = np.array([1] * tp + [0] * fp + [1] * fn + [0] * tn)
            yp = np.array([1] * tp + [1] * fp + [0] * fn + [0] * tn)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = float(fbeta_score(yt, yp, beta=beta, zero_division=0))
            v = _float(enc, f"f_score for TP={tp} FP={fp} FN={fn}, beta={beta}")
            _close(v, want, f"f_score vs scikit-learn (TP={tp} FP={fp} FN={fn}, beta={beta})")

    checks["test_f_score_values"] = f_score_values

    # test_f_score_edge_cases ---------------------------------------------------------------
    zero_args = [(0.0, 0.0), (0, 0), (0.0, 0.0, 2.0), (0.0, 0.7), (0.7, 0.0)]
    plan.add("call", "fe_zero", func="f_score", calls=[{"args": [_py(a) for a in args]}
                                                       for args in zero_args])
    beta_cases = [((0.5, 1.0, 2.0), 5 * 0.5 / (4 * 0.5 + 1.0)),
                  ((1.0, 0.5, 2.0), 5 * 0.5 / (4 * 1.0 + 0.5)),
                  ((1.0, 0.5, 0.5), None), ((0.5, 1.0, 0.5), None),
                  ((0.3, 0.9, 0.0), 0.3), ((0.3, 0.9, 1e4), 0.9),
                  ((0.0, 0.0, 0.5), 0.0), ((0.0, 0.0, 1.0), 0.0), ((0.0, 0.0, 3.0), 0.0)]
    plan.add("call", "fe_beta", func="f_score",
             calls=[{"args": [_py(p), _py(r)], "kwargs": {"beta": _py(b)}}
                    for (p, r, b), _ in beta_cases])
    scalar_cases = [("np_scalar", np.float64, 0.8, 0.6), ("np_scalar", np.float32, 0.8, 0.6),
                    ("torch_scalar", np.float32, 0.8, 0.6), ("np_scalar", np.float64, 0.0, 0.0),
                    ("torch_scalar", np.float64, 0.25, 0.75)]
    plan.add("call", "fe_scalars", func="f_score",
             calls=[{"args": [plan.inp(np.array(p, dtype=dt), kind),
                              plan.inp(np.array(r, dtype=dt), kind)]}
                    for kind, dt, p, r in scalar_cases])

    def f_score_edge_cases(R):
        for enc, args in zip(_results(R, "fe_zero", len(zero_args)), zero_args, strict=True):
            if _float(enc, f"f_score{args}") != 0.0:
                raise Fail(f"f_score{args} must be 0.0 (0/0 -> 0.0)")
        res = _results(R, "fe_beta", len(beta_cases))
        values = [_float(enc, f"f_score({p}, {r}, beta={b})")
                  for enc, ((p, r, b), _) in zip(res, beta_cases, strict=True)]
        for v, ((p, r, b), want) in zip(values, beta_cases, strict=True):
            if want is not None:
                _close(v, want, f"f_score({p}, {r}, beta={b})", rel=1e-6 if b > 100 else 1e-9)
        if not values[0] > values[1]:
            raise Fail("beta > 1 must weigh recall more than precision")
        if not values[2] > values[3]:
            raise Fail("beta < 1 must weigh precision more than recall")
        res = _results(R, "fe_scalars", len(scalar_cases))
        for enc, (kind, dt, p, r) in zip(res, scalar_cases, strict=True):
            what = f"f_score of {kind} {np.dtype(dt).name} numbers"
            v = _float(enc, what)
            p32, r32 = float(dt(p)), float(dt(r))
            want = 0.0 if p32 == 0 else 2 * p32 * r32 / (p32 + r32)
            _close(v, want, what, rel=1e-6)

    checks["test_f_score_edge_cases"] = f_score_edge_cases

    # test_binary_scores --------------------------------------------------------------------
    def labels(n, rate_true, rate_pred):
        yt = (rng.random(n) < rate_true).astype(np.int64)
        yp = (rng.random(n) < rate_pred).astype(np.int64)
        return yt, yp

    bs_cases = []  # (y_true, y_pred, kinds)
    notes_t = np.array([1] * 130 + [0] * 870, dtype=np.int64)
    notes_p = np.array([1] * 100 + [0] * 30 + [1] * 70 + [0] * 800, dtype=np.int64)
    bs_cases.append((notes_t, notes_p, "list"))
    bs_cases.append((np.array([1, 1, 0, 0, 0, 0, 0, 0]), np.array([1, 1, 1, 1, 1, 1, 0, 0]),
                     "list"))
    for trial in range(40):
        n = int(rng.integers(5, 300))
        yt, yp = labels(n, *rng.uniform(0.05, 0.95, size=2))
        kind = ("list", "ndarray", "int32", "tensor")[trial % 4]
        bs_cases.append((yt, yp, kind))
    # small random samples hit the zero divisions sooner or later: here they always do
    for kind in ("list", "ndarray", "tensor"):
        bs_cases.append((np.array([1, 0, 1, 0, 1]), np.zeros(5, dtype=np.int64), kind))
        bs_cases.append((np.zeros(5, dtype=np.int64), np.array([0, 1, 1, 0, 0]), kind))

    def spec(arr, kind):
        if kind == "int32":
            return plan.inp(arr.astype(np.int32), "ndarray")
        return plan.inp(arr.astype(np.int64), kind)

    plan.add("call", "bs", func="binary_scores",
             calls=[{"args": [spec(yt, k), spec(yp, k)]} for yt, yp, k in bs_cases])

    def reference(yt, yp):
        from sklearn.metrics import precision_recall_fscore_support

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, r, f, _ = precision_recall_fscore_support(yt, yp, average="binary",
                                                         zero_division=0)
        return float(p), float(r), float(f)

    def check_triple(enc, expected, what, rel=1e-9):
        if not isinstance(enc, dict) or enc.get("t") != "tuple":
            raise Fail(f"{what}: return a tuple (precision, recall, f1), got {_tname(enc)}")
        items = enc.get("items")
        if enc.get("n") != 3 or not isinstance(items, list) or len(items) != 3:
            raise Fail(f"{what}: return exactly 3 values (precision, recall, f1)")
        for name, item, want in zip(("precision", "recall", "f1"), items, expected, strict=True):
            _close(_float(item, f"{what}: {name}"), want, f"{what}: {name}", rel=rel)

    def binary_scores_check(R):
        res = _results(R, "bs", len(bs_cases))
        for i, (enc, (yt, yp, kind)) in enumerate(zip(res, bs_cases, strict=True)):
            check_triple(enc, reference(yt, yp), f"binary_scores case {i} ({kind})")

    checks["test_binary_scores"] = binary_scores_check

    # test_binary_scores_zero_division ------------------------------------------------------
    zd_cases = [([1, 0, 1, 0], [0, 0, 0, 0], "list", (0.0, 0.0, 0.0)),
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
             calls=[{"args": [spec(np.array(t), k), spec(np.array(p), k)]}
                    for t, p, k, _ in zd_cases])

    def zero_division(R):
        res = _results(R, "zd", len(zd_cases))
        for enc, (t, p, k, want) in zip(res, zd_cases, strict=True):
            check_triple(enc, want, f"binary_scores({t}, {p}) as {k}")

    checks["test_binary_scores_zero_division"] = zero_division
    return checks


# --------------------------------------------------------------------------- chapter 5


def _dropout_plan(plan: Plan):
    rng = plan.rng
    checks = {}

    def uniform(shape, dtype=np.float64):
        return (rng.random(shape) + 0.5).astype(dtype)

    def tin(arr, **extra):
        return plan.inp(arr, "tensor", **extra)

    # test_dropout_basics ---------------------------------------------------------------------
    x = rng.standard_normal((4, 5))
    plan.add("call", "db_eval", func="dropout", args=[tin(x), _py(0.5)],
             kwargs={"training": _py(False)}, inputs_after=True)
    plan.add("call", "db_p0", func="dropout", args=[tin(x), _py(0.0)], inputs_after=True)
    plan.add("call", "db_p1", func="dropout", args=[tin(x), _py(1.0)], inputs_after=True)
    bad_ps = [-0.1, 1.5, -1e-6, 1.000001, 2.0, -3]
    xb = tin(x)
    plan.add("call", "db_bad", func="dropout", calls=[{"args": [xb, _py(b)]} for b in bad_ps])
    shapes = [(np.float32, "torch.float32"), (np.float64, "torch.float64")]
    for dt, _ in shapes:
        plan.add("call", f"db_dtype_{np.dtype(dt).name}", func="dropout",
                 args=[tin(rng.standard_normal((3, 7, 2)).astype(dt)), _py(0.3)])
    eval_ps = [0.1, 0.2, 0.5, 0.8, 0.95]
    zs = [uniform((50, 40)) for _ in eval_ps]
    plan.add("call", "db_eval_many", func="dropout",
             calls=[{"args": [tin(z), _py(p)], "kwargs": {"training": _py(False)}}
                    for z, p in zip(zs, eval_ps, strict=True)])
    z64 = uniform(10_000)
    plan.add("call", "db_f64", func="dropout", args=[tin(z64), _py(0.3)], inputs_after=True)
    plan.add("call", "db_f64_eval", func="dropout", args=[tin(z64), _py(0.3)],
             kwargs={"training": _py(False)}, inputs_after=True)
    w = rng.standard_normal((6, 3))
    plan.add("call", "db_p1_w", func="dropout", args=[tin(w), _py(1.0)])
    plan.add("call", "db_p0_w", func="dropout", args=[tin(w), _py(0.0)],
             kwargs={"training": _py(True)})

    def unchanged(R, pid, original, what):
        after = R.record(pid).get("inputs_after")
        if not isinstance(after, list) or not after:
            raise Fail(f"{what}: malformed result")
        _assert_close(_tensor(R, after[0], what), torch_of(original), what, rtol=0, atol=0)

    def torch_of(arr):
        import torch

        return torch.from_numpy(np.array(arr))

    def basics(R):
        import torch

        xt = torch_of(x)
        out = _tensor(R, _results(R, "db_eval", 1)[0], "dropout(x, 0.5, training=False)",
                      "torch.float64", x.shape)
        _assert_close(out, xt, "training=False must return the input unchanged", rtol=0, atol=0)
        out = _tensor(R, _results(R, "db_p0", 1)[0], "dropout(x, 0.0)", "torch.float64", x.shape)
        _assert_close(out, xt, "p=0 must be the identity", rtol=0, atol=0)
        out = _tensor(R, _results(R, "db_p1", 1)[0], "dropout(x, 1.0)", "torch.float64", x.shape)
        _assert_close(out, torch.zeros_like(xt), "p=1 must drop every element", rtol=0, atol=0)
        for pid, what in (("db_eval", "eval"), ("db_p0", "p=0"), ("db_p1", "p=1")):
            unchanged(R, pid, x, f"dropout must not modify its input ({what})")
        for enc, b in zip(_results(R, "db_bad", len(bad_ps)), bad_ps, strict=True):
            if not _is_value_error(enc):
                raise Fail(f"dropout(x, {b}) must raise ValueError, got {_tname(enc)}")
        for dt, tname in shapes:
            _tensor(R, _results(R, f"db_dtype_{np.dtype(dt).name}", 1)[0],
                    f"dropout of a {tname} input", tname, (3, 7, 2))
        res = _results(R, "db_eval_many", len(eval_ps))
        for enc, z, p in zip(res, zs, eval_ps, strict=True):
            out = _tensor(R, enc, f"dropout(z, {p}, training=False)", "torch.float64", z.shape)
            _assert_close(out, torch_of(z), f"eval must be the identity for p={p}", rtol=0,
                          atol=0)
        out = _tensor(R, _results(R, "db_f64", 1)[0], "dropout of float64 (training)",
                      "torch.float64", z64.shape)
        kept = out != 0
        _assert_close(out[kept], torch_of(z64)[kept] / 0.7, "survivors must equal x / (1-p)")
        unchanged(R, "db_f64", z64, "dropout must not modify its input in place (training)")
        unchanged(R, "db_f64_eval", z64, "dropout must not modify its input in place (eval)")
        out = _tensor(R, _results(R, "db_p1_w", 1)[0], "dropout(w, 1.0)", "torch.float64",
                      w.shape)
        if not bool((out == 0).all()):
            raise Fail("p=1 must zero every element")
        out = _tensor(R, _results(R, "db_p0_w", 1)[0], "dropout(w, 0.0, training=True)",
                      "torch.float64", w.shape)
        _assert_close(out, torch_of(w), "p=0 must be the identity", rtol=0, atol=0)

    checks["test_dropout_basics"] = basics

    # test_dropout_statistics -----------------------------------------------------------------
    big = uniform(200_000)
    stat_cases = [("ds_big_0.2", big, 0.2), ("ds_big_0.5", big, 0.5)]
    for p in (0.1, 0.3, 0.7, 0.9):
        stat_cases.append((f"ds_grid_{p}", uniform((400, 500)), p))
    for pid, z, p in stat_cases:
        plan.add("call", pid, func="dropout", args=[tin(z), _py(p)])
    plan.add("call", "ds_two", func="dropout", args=[tin(big), _py(0.5)], repeat=2)
    z60 = uniform(2000)
    plan.add("call", "ds_60", func="dropout", args=[tin(z60), _py(0.5)], repeat=60)
    plan.add("call", "ds_ones", func="dropout", args=[tin(np.ones(1000)), _py(0.4)], repeat=20)
    z32 = uniform(100_000, np.float32)
    plan.add("call", "ds_f32", func="dropout", args=[tin(z32), _py(0.25)])

    def check_stats(out, z, p, what):

        zt = torch_of(z)
        m = zt.numel()
        dropped_mask = out == 0
        dropped = dropped_mask.double().mean().item()
        sigma = math.sqrt(p * (1 - p) / m)
        if not abs(dropped - p) < 5 * sigma:
            raise Fail(f"{what}: fraction dropped {dropped:.4f}, expected {p} "
                       "(each element dropped with probability p)")
        kept = ~dropped_mask
        _assert_close(out[kept], zt[kept] / (1 - p), f"{what}: survivors must equal x / (1-p)")
        mean_sigma = math.sqrt((zt.double() ** 2).sum().item() * p / (1 - p)) / m
        if not abs(out.double().mean().item() - zt.double().mean().item()) < 5 * mean_sigma:
            raise Fail(f"{what}: the mean must be preserved in expectation")
        if zt.dim() == 2:
            rows, cols = zt.shape
            row_frac = dropped_mask.double().mean(dim=1)
            col_frac = dropped_mask.double().mean(dim=0)
            if not bool(((row_frac - p).abs() < 6 * math.sqrt(p * (1 - p) / cols)).all()):
                raise Fail(f"{what}: rows are not dropped independently")
            if not bool(((col_frac - p).abs() < 6 * math.sqrt(p * (1 - p) / rows)).all()):
                raise Fail(f"{what}: columns are not dropped independently")

    def statistics(R):
        for pid, z, p in stat_cases:
            out = _tensor(R, _results(R, pid, 1)[0], f"dropout(x, {p})", "torch.float64",
                          z.shape)
            check_stats(out, z, p, f"p={p}")
        import torch

        a, b = (_tensor(R, enc, "dropout(x, 0.5)", "torch.float64", big.shape)
                for enc in _results(R, "ds_two", 2))
        if torch.equal(a == 0, b == 0):
            raise Fail("each call must draw a fresh random mask")
        masks = torch.stack([_tensor(R, enc, "dropout(z, 0.5)", "torch.float64", z60.shape) == 0
                             for enc in _results(R, "ds_60", 60)])
        per_element = masks.double().mean(dim=0)
        if not (bool((per_element > 0).all()) and bool((per_element < 1).all())):
            raise Fail("the same mask is reused across calls; draw a new one every call")
        if not abs(masks.double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / masks.numel()):
            raise Fail("over 60 calls the fraction dropped is not p")
        distinct = {tuple(mk.nonzero().flatten().tolist()[:50]) for mk in masks}
        if len(distinct) != 60:
            raise Fail("masks repeat between calls")
        for enc in _results(R, "ds_ones", 20):
            out = _tensor(R, enc, "dropout(ones, 0.4)", "torch.float64", (1000,))
            frac = (out == 0).double().mean().item()
            if not 0.25 < frac < 0.55:
                raise Fail(f"fraction dropped {frac} in one call: draw one Bernoulli per element")
        out = _tensor(R, _results(R, "ds_f32", 1)[0], "dropout of float32", "torch.float32",
                      z32.shape)
        kept = out != 0
        if not abs((~kept).float().mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 100_000):
            raise Fail("float32: fraction dropped is not p")
        _assert_close(out[kept], torch_of(z32)[kept] / 0.75, "float32: survivors must be x/(1-p)")

    checks["test_dropout_statistics"] = statistics

    # test_dropout_gradient ------------------------------------------------------------------
    grad_cases = [("dg_ones", uniform(1000), 0.3, np.ones(1000), True)]
    for p in (0.1, 0.6, 0.85):
        grad_cases.append((f"dg_{p}", uniform((300, 20)), p, rng.standard_normal((300, 20)),
                           True))
    grad_cases.append(("dg_eval", rng.standard_normal(50), 0.5, rng.standard_normal(50), False))
    grad_cases.append(("dg_p0", rng.standard_normal(50), 0.0, rng.standard_normal(50), True))
    for pid, z, p, up, training in grad_cases:
        plan.add("call", pid, func="dropout", args=[tin(z, requires_grad=True), _py(p)],
                 kwargs={"training": _py(training)}, upstream=tin(up))

    def gradient(R):

        for pid, z, p, up, training in grad_cases:
            what = f"dropout(x, {p}, training={training})"
            rec = R.record(pid)
            out = _tensor(R, _results(R, pid, 1)[0], what, None, z.shape)
            genc = rec.get("grad")
            if not isinstance(genc, dict) or genc.get("t") != "torch.Tensor":
                raise Fail(f"{what}: no gradient reached x: dropout must be differentiable "
                           "(no .detach(), no NumPy round trip)")
            grad = _tensor(R, genc, f"{what}: x.grad", "torch.float64", z.shape)
            upt = torch_of(up)
            if training and p > 0:
                mask = (out != 0).double()
                if pid == "dg_ones" and not 0 < int(mask.sum()) < mask.numel():
                    raise Fail(f"{what}: everything or nothing dropped")
                _assert_close(grad, upt * mask / (1 - p),
                              f"{what}: gradient must be upstream * mask / (1-p)")
            else:
                _assert_close(grad, upt, f"{what}: the gradient must pass unchanged")

    checks["test_dropout_gradient"] = gradient

    # test_dropout_module -----------------------------------------------------------------------
    xm = uniform((300, 200))
    plan.add("module", "dm_04", cls="Dropout", args=[_py(0.4)], x=tin(xm), modes=["train",
                                                                              "eval"])
    zm = uniform((500, 400))
    plan.add("module", "dm_025", cls="Dropout", args=[_py(0.25)], x=tin(zm),
             modes=["train", "eval", "train", "eval"])
    plan.add("module", "dm_p0", cls="Dropout", args=[_py(0.0)], x=tin(zm), modes=["train"])
    plan.add("module", "dm_p1", cls="Dropout", args=[_py(1.0)], x=tin(zm), modes=["train"])
    nets = []
    for pid, sizes, p, n in (("dm_seq_a", (20, 30, 3), 0.5, 8), ("dm_seq_b", (10, 64, 2), 0.3, 16)):
        d_in, hidden, d_out = sizes
        bound1, bound2 = 1 / math.sqrt(d_in), 1 / math.sqrt(hidden)
        ws = [rng.uniform(-bound1, bound1, (hidden, d_in)).astype(np.float32),
              rng.uniform(-bound1, bound1, hidden).astype(np.float32),
              rng.uniform(-bound2, bound2, (d_out, hidden)).astype(np.float32),
              rng.uniform(-bound2, bound2, d_out).astype(np.float32)]
        xin = rng.standard_normal((n, d_in)).astype(np.float32)
        plan.add("sequential", pid, cls="Dropout", weights=[plan.inp(a) for a in ws],
                 p=_py(p), x=plan.inp(xin))
        nets.append((pid, ws, xin, d_out))

    def module_check(R):
        import torch

        def outputs(pid, n):
            rec = R.record(pid)
            if rec.get("is_module") is not True:
                raise Fail("Dropout must subclass nn.Module")
            if rec.get("n_parameters") != 0 or rec.get("n_state") != 0:
                raise Fail("Dropout must hold no parameters or buffers")
            outs = rec.get("outputs")
            if not isinstance(outs, list) or len(outs) != n:
                raise Fail(f"{pid}: malformed result")
            return rec, outs

        rec, outs = outputs("dm_04", 2)
        for key, want, what in (("p", 0.4, "Dropout(0.4).p"), ("default_p", 0.5, "Dropout().p")):
            enc = rec.get(key)
            if not (isinstance(enc, dict) and enc.get("t") in ("float", "int")
                    and enc.get("v") == want):
                raise Fail(f"{what} must be {want} (Dropout(p) stores p; the default is 0.5)")
        for pid, z, p, modes in (("dm_04", xm, 0.4, ["train", "eval"]),
                                 ("dm_025", zm, 0.25, ["train", "eval", "train", "eval"])):
            _, outs = outputs(pid, len(modes))
            for enc, mode in zip(outs, modes, strict=True):
                out = _tensor(R, enc, f"Dropout({p}) in {mode} mode", "torch.float64", z.shape)
                if mode == "eval":
                    _assert_close(out, torch_of(z), "eval mode must be the identity", rtol=0,
                                  atol=0)
                else:
                    frac = (out == 0).double().mean().item()
                    if not abs(frac - p) < 5 * math.sqrt(p * (1 - p) / z.size):
                        raise Fail(f"Dropout({p}): train mode must drop with probability p")
                    _assert_close(out[out != 0], torch_of(z)[out != 0] / (1 - p),
                                  f"Dropout({p}) survivors must be x/(1-p)")
        _, outs = outputs("dm_p0", 1)
        _assert_close(_tensor(R, outs[0], "Dropout(0.0)", "torch.float64", zm.shape),
                      torch_of(zm), "Dropout(0.0) must be the identity", rtol=0, atol=0)
        _, outs = outputs("dm_p1", 1)
        if not bool((_tensor(R, outs[0], "Dropout(1.0)", "torch.float64", zm.shape) == 0).all()):
            raise Fail("Dropout(1.0) must zero everything in train mode")
        for pid, ws, xin, d_out in nets:
            rec = R.record(pid)
            shape = (xin.shape[0], d_out)
            ev = rec.get("eval")
            tr = rec.get("train")
            if not (isinstance(ev, list) and len(ev) == 2 and isinstance(tr, list)
                    and len(tr) == 2):
                raise Fail(f"{pid}: malformed result")
            e1, e2 = (_tensor(R, e, "model output in eval mode", "torch.float32", shape)
                      for e in ev)
            _assert_close(e1, e2, "in eval mode the model must be deterministic", rtol=0, atol=0)
            w1, b1, w2, b2 = (torch.from_numpy(a) for a in ws)
            with torch.no_grad():
                want = torch.relu(torch.from_numpy(xin) @ w1.T + b1) @ w2.T + b2
            _assert_close(e1, want, "after model.eval() the Dropout layer must pass its input "
                          "unchanged", rtol=1e-4, atol=1e-5)
            after = _tensor(R, rec.get("eval_after"), "model output in eval mode", "torch.float32",
                            shape)
            _assert_close(after, want, "eval after train must be the identity again",
                          rtol=1e-4, atol=1e-5)
            t1, t2 = (_tensor(R, t, "model output in train mode", "torch.float32", shape)
                      for t in tr)
            if torch.equal(t1, t2):
                raise Fail("in train mode each forward pass must drop differently")
            grad = _tensor(R, rec.get("grad_first"), "gradient of the first layer",
                           "torch.float32", ws[0].shape)
            if not bool(torch.isfinite(grad).all()):
                raise Fail("gradients through Dropout must be finite")

    checks["test_dropout_module"] = module_check
    return checks


# --------------------------------------------------------------------------- chapter 4


_REFERENCE_SGD = None


def _reference_sgd():
    """torch.optim.SGD behind MomentumSGD's signature, with its buffer exposed as "velocity"."""
    global _REFERENCE_SGD
    if _REFERENCE_SGD is None:
        import torch

        class ReferenceSGD(torch.optim.SGD):
            def __init__(self, params, lr, momentum=0.9):
                super().__init__(params, lr=lr, momentum=momentum)

            @torch.no_grad()
            def step(self, closure=None):
                loss = super().step(closure)
                for group in self.param_groups:
                    for p in group["params"]:
                        buf = self.state.get(p, {}).get("momentum_buffer")
                        if buf is not None:
                            self.state[p]["velocity"] = buf
                return loss

        _REFERENCE_SGD = ReferenceSGD
    return _REFERENCE_SGD


def _momentum_plan(plan: Plan):
    rng = plan.rng
    checks = {}
    scenarios = {}  # pid -> (scenario name, data spec)

    def scenario(pid, name, **data):
        plan.add("scenario", pid, scenario=name, cls="MomentumSGD", data=data)
        scenarios[pid] = (name, data)

    def arr(a):
        return plan.inp(np.asarray(a), "ndarray")

    def f32(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def linear_init(sizes, dtype):
        out = []
        for d_in, d_out in sizes:
            bound = 1 / math.sqrt(d_in)
            out.append(arr(rng.uniform(-bound, bound, (d_out, d_in)).astype(dtype)))
            out.append(arr(rng.uniform(-bound, bound, d_out).astype(dtype)))
        return out

    # test_momentum_single_step ---------------------------------------------------------------
    bad_args = [{"lr": -0.1}, {"lr": 0.1, "momentum": 1.0}, {"lr": 0.1, "momentum": -0.5},
                {"lr": -1e-3, "momentum": 0.5}, {"lr": 0.1, "momentum": 1.5}]
    for i, kwargs in enumerate(bad_args):
        plan.add("construct", f"ms_bad{i}", cls="MomentumSGD", kwargs=kwargs)
    scenario("ms_basic", "basic", w0=arr(f32(2)), g=arr(f32(2)),
             lr=float(rng.uniform(0.05, 0.3)), momentum=float(rng.uniform(0.5, 0.95)))
    scenario("ms_two", "two_params", a0=arr(f32(3)), b0=arr(f32(3)), ga=arr(f32(3)),
             gb=arr(f32(3)), lr=1.0, momentum=0.5)
    scenario("ms_closure", "default_and_closure", x0=arr(f32(1) + 2.0),
             lr=float(rng.uniform(0.05, 0.2)))
    for dtype in (np.float32, np.float64):
        for shape in ((5,), (3, 4), (2, 3, 2)):
            scenario(f"ms_grads_{np.dtype(dtype).name}_{len(shape)}", "given_grads",
                     init=arr(rng.standard_normal(shape).astype(dtype)),
                     grads=arr(rng.standard_normal((3, *shape)).astype(dtype)),
                     lr=0.03, momentum=0.8)
    scenario("ms_lr0", "given_grads", init=arr(np.ones(4, np.float32)),
             grads=arr(np.ones((1, 4), np.float32)), lr=0.0, momentum=0.5)
    scenario("ms_mom0", "given_grads", init=arr(np.ones(4, np.float32)),
             grads=arr(np.ones((3, 4), np.float32)), lr=0.5, momentum=0.0)
    scenario("ms_own_velocity", "given_grads", init=arr(np.zeros(2, np.float32)),
             grads=arr(np.ones((2, 2), np.float32)), lr=1.0, momentum=0.5, zero_inplace=True)

    def single_step(R):
        for i, kwargs in enumerate(bad_args):
            res = R.record(f"ms_bad{i}").get("result")
            if not _is_value_error(res):
                raise Fail(f"MomentumSGD(..., **{kwargs}) must raise ValueError")
        values = compare(R, "ms_basic")
        if values["is_optimizer"].get("v") is not True:
            raise Fail("MomentumSGD must subclass torch.optim.Optimizer")
        enc = _check_values(R, "ms_closure")["momentum"]
        if not (enc.get("t") in ("float", "int") and enc.get("v") == 0.9):
            raise Fail("the default momentum must be 0.9")
        for pid in scenarios:
            if pid.startswith("ms_") and pid not in ("ms_basic",):
                compare(R, pid)

    checks["test_momentum_single_step"] = single_step

    # test_momentum_trajectory ----------------------------------------------------------------
    def trajectory(pid, layers, sizes, momentum, *, lr=0.05, steps=60, lr_changes=None,
                   set_to_none=True, dtype=np.float64, n=32, step_lr=None):
        d_in = layers[0][1]
        data = dict(layers=layers, dtype=np.dtype(dtype).name, init=linear_init(sizes, dtype),
                    x=arr(rng.standard_normal((n, d_in)).astype(dtype)),
                    y=arr(rng.integers(0, 3, n).astype(np.int64)), lr=lr, momentum=momentum,
                    steps=steps, set_to_none=set_to_none,
                    lr_changes={str(k): v for k, v in (lr_changes or {}).items()})
        if step_lr:
            data["step_lr"] = list(step_lr)
        scenario(pid, "trajectory", **data)

    small = [["linear", 4, 3]]
    mlp = [["linear", 6, 16], ["tanh"], ["linear", 16, 8], ["relu"], ["linear", 8, 3]]
    mlp_sizes = [(6, 16), (16, 8), (8, 3)]
    trajectory("mt_small", small, [(4, 3)], 0.9)
    for mu in (0.0, 0.5, 0.99):
        trajectory(f"mt_small_{mu}", small, [(4, 3)], mu)
    trajectory("mt_mlp", mlp, mlp_sizes, 0.9, steps=80)
    trajectory("mt_lr_changes", mlp, mlp_sizes, 0.9, lr_changes={20: 0.2, 40: 0.01})
    trajectory("mt_lr_changes_small", small, [(4, 3)], 0.7, steps=50,
               lr_changes={10: 0.5, 30: 0.02})
    trajectory("mt_zero_inplace", mlp, mlp_sizes, 0.8, steps=50, set_to_none=False)
    trajectory("mt_steplr", [["linear", 5, 10], ["relu"], ["linear", 10, 3]], [(5, 10), (10, 3)],
               0.9, lr=0.2, steps=50, dtype=np.float32, n=40, step_lr=(10, 0.3))

    def trajectories(R):
        for pid in scenarios:
            if pid.startswith("mt_"):
                compare(R, pid)

    checks["test_momentum_trajectory"] = trajectories

    # test_momentum_param_groups --------------------------------------------------------------
    scenario("mg_two", "two_groups", layers=[["linear", 4, 8], ["relu"], ["linear", 8, 3]],
             dtype="float64", init=linear_init([(4, 8), (8, 3)], np.float64),
             frozen=arr(np.ones(3)), x=arr(rng.standard_normal((16, 4))),
             y=arr(rng.integers(0, 3, 16).astype(np.int64)), lr=0.1, momentum=0.9, lr2=0.02,
             mom2=0.5, steps=30)
    scenario("mg_three", "three_groups", i1=linear_init([(3, 6)], np.float64),
             i2=linear_init([(6, 4)], np.float64), i3=linear_init([(4, 2)], np.float64),
             extra=arr(rng.standard_normal(2)), x=arr(rng.standard_normal((20, 3))),
             y=arr(rng.integers(0, 2, 20).astype(np.int64)), lr=0.05, momentum=0.9, m1=0.99,
             lr2=0.3, lr3=0.01, steps=60, change1=15, new_lr0=0.2, change2=35, new_lr1=0.02,
             new_lr2=0.4, unused=arr(rng.standard_normal(4).astype(np.float32)),
             used=arr(rng.standard_normal(4).astype(np.float32)))

    def param_groups(R):
        values = compare(R, "mg_two", exact_keys=("frozen_grad_is_none",))
        if values["frozen_grad_is_none"].get("v") is not True:
            raise Fail("a tensor without a gradient must be left alone (its .grad stays None)")
        values = compare(R, "mg_three", exact_keys=("unused_grad_is_none",))
        if values["unused_grad_is_none"].get("v") is not True:
            raise Fail("a parameter never used by the loss must keep .grad None")

    checks["test_momentum_param_groups"] = param_groups

    # comparison with torch.optim.SGD run on the same data in this process -------------------
    reference_cache: dict[str, dict] = {}

    def resolve(value):
        if isinstance(value, dict):
            if "npy" in value:
                return plan.inputs[value["npy"]]
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    def reference(pid):
        if pid not in reference_cache:
            import torch

            from course.grading.harness import SCENARIOS

            name, data = scenarios[pid]
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the harness's setting: bit-identical forward passes
            try:
                reference_cache[pid] = SCENARIOS[name](_reference_sgd(), resolve(data), torch)
            finally:
                torch.set_num_threads(threads)
        return reference_cache[pid]

    def compare(R, pid, exact_keys=()):
        import torch

        values = _check_values(R, pid)
        for key, want in reference(pid).items():
            enc = values.get(key)
            what = f"{pid}: {key}"
            if enc is None:
                raise Fail(f"{what} missing")
            if key in exact_keys:
                continue
            if isinstance(want, torch.Tensor):
                got = _tensor(R, enc, what, str(want.dtype), tuple(want.shape))
                _assert_close(got, want, f"{what} differs from torch.optim.SGD")
            elif want is None:
                if enc.get("t") != "NoneType":
                    raise Fail(f"{what}: step() without a closure must return None")
            elif isinstance(want, bool):
                if enc.get("t") != "bool" or enc.get("v") is not want:
                    raise Fail(f"{what} must be {want}")
            elif isinstance(want, float):
                if enc.get("t") not in ("float", "int") or enc.get("v") != want:
                    raise Fail(f"{what} must be {want}")
        return values

    return checks


def _check_values(R: Results, pid: str) -> dict:
    values = R.record(pid).get("values")
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise Fail(f"{pid}: malformed result")
    return values


_PLANS = {"01_metrics": _metrics_plan, "04_learning_rate": _momentum_plan,
          "05_regularization": _dropout_plan}


# --------------------------------------------------------------------------- running


def _fresh_dir(path: Path) -> Path:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    path.mkdir(parents=True)
    return path


def _all(assignment: str, message: str) -> dict[str, CellScore]:
    return {gid: CellScore(0.0, float(pts), False, message)
            for gid, pts in GRADED[assignment].cells.items()}


def trusted_grade(assignment: str, notebook_path, workdir, *, timeout: float = 300,
                  isolate: bool = True, memory_mb: int = 4096,
                  probe_seconds: float = 30) -> dict[str, CellScore]:
    """Score ``notebook_path``'s exercise of ``assignment`` outside the student's process.

    Returns ``{grade_id: CellScore}`` for every graded test cell of the assignment (see
    GRADED). Never raises for a bad submission: a missing solution cell, code that crashes,
    loops or floods scores 0 on the affected cells with the reason in ``message``. Raises
    KeyError for an assignment without trusted checks, and SandboxUnavailableError when
    ``isolate`` is True and this machine cannot isolate. ``timeout`` bounds the whole sandboxed
    run, ``probe_seconds`` each call of the student's code (an endless loop in one function
    only fails the cells that need it).
    """
    spec = GRADED[assignment]
    try:
        source = _to_python(solution_source(notebook_path, spec.solution_id, spec.names))
    except Fail as exc:
        return _all(assignment, str(exc))
    plan = Plan(assignment)
    checks = _PLANS[assignment](plan)
    base = _fresh_dir(Path(workdir) / "trusted")
    (base / "solution.py").write_text(source, encoding="utf-8")
    (base / "inputs").mkdir()
    for name, arr in plan.inputs.items():
        np.save(base / "inputs" / name, arr, allow_pickle=False)
    (base / "plan.json").write_text(json.dumps({
        "solution": "solution.py", "probes": plan.probes, "probe_seconds": probe_seconds,
        "exec_seconds": 60}), encoding="utf-8")
    result = run_sandboxed([sys.executable, "-I", "-B", str(HARNESS), "plan.json"],
                           workdir=base, timeout=timeout, memory_mb=memory_mb,
                           max_output_bytes=64 * 1024, isolate=isolate)
    reason = result.reason or ("" if result.returncode == 0 else
                               f"the harness exited with status {result.returncode}")
    try:
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return _all(assignment, "the grading folder disappeared")
    try:
        try:
            results_fd = os.open("results", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                 dir_fd=dir_fd)
        except OSError:
            results_fd = None
        R = Results(results_fd, None, reason)
        try:
            exec_rec = json.loads(R._read("exec.json", 65536).decode("utf-8"))
        except (Fail, ValueError, UnicodeDecodeError):
            exec_rec = None
        prefix = ""
        if isinstance(exec_rec, dict) and exec_rec.get("t") == "exception":
            prefix = f"the solution cell raised {str(exec_rec.get('name'))[:40]}; "
        elif isinstance(exec_rec, dict) and exec_rec.get("t") == "timeout":
            prefix = "the solution cell ran too long; "
        scores = {}
        for gid, pts in spec.cells.items():
            try:
                checks[gid](R)
            except Fail as exc:
                scores[gid] = CellScore(0.0, float(pts), False, (prefix + str(exc))[:500])
            except Exception as exc:  # noqa: BLE001 - malformed data in a way not foreseen
                scores[gid] = CellScore(0.0, float(pts), False,
                                        (prefix + f"malformed result ({type(exc).__name__})")
                                        [:500])
            else:
                scores[gid] = CellScore(float(pts), float(pts), True, "passed")
        return scores
    finally:
        if "results_fd" in locals() and results_fd is not None:
            os.close(results_fd)
        os.close(dir_fd)
