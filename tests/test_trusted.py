"""The trusted grader (course.grading.trusted) scores exactly like the notebooks' test cells.

For each graded chapter, the correct solution and the wrong implementations students really
write are scored twice: by ``trusted_grade`` (student code in the sandbox, comparison here) and
by the chapter's own test cells, visible and hidden, executed as nbgrader's kernel would (one
namespace, the solution cell then every test cell, a cell fails when it raises). Both must fail
the same cells; the solution must get full marks; regrading gives identical scores.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from course.grading import samples
from course.grading.trusted import GRADED, CellScore, max_score, trusted_grade

ROOT = Path(__file__).resolve().parents[1]
ISOLATE = sys.platform.startswith("linux")  # as tests/test_grade.py

pytestmark = pytest.mark.slow


def source_notebook(assignment: str) -> Path:
    return ROOT / "source" / assignment / GRADED[assignment].notebook


def released_notebook(assignment: str) -> Path:
    release = ROOT / "release" / assignment / GRADED[assignment].notebook
    return release if release.exists() else source_notebook(assignment)


def solution_code(assignment: str) -> str:
    """The instructor's solution cell with the nbgrader markers taken out."""
    return samples.solution_code(ROOT, assignment)


def make_submission(tmp_path: Path, assignment: str, code: str, name: str = "student") -> Path:
    """The released notebook with ``code`` in the exercise's solution cell."""
    nb = samples.released_with(ROOT, assignment, code)
    path = tmp_path / name / GRADED[assignment].notebook
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def notebook_test_failures(assignment: str, code: str) -> set[str]:
    """The graded cells that fail when the source notebook's own tests run against ``code``."""
    nb = nbformat.read(source_notebook(assignment), as_version=4)
    namespace: dict = {"__name__": "__main__"}
    try:
        exec(compile(code, "<solution>", "exec"), namespace)
    except Exception:  # noqa: BLE001 - a broken cell, as in the kernel: go on
        pass
    failed = set()
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in GRADED[assignment].cells:
            try:
                exec(compile(cell.source, f"<{gid}>", "exec"), namespace)
            except Exception:  # noqa: BLE001
                failed.add(gid)
    return failed


def failures(scores: dict[str, CellScore]) -> set[str]:
    return {gid for gid, s in scores.items() if not s.passed}


def grade(tmp_path, assignment, code, **kw):
    nb = make_submission(tmp_path, assignment, code)
    return trusted_grade(assignment, nb, tmp_path / "work", isolate=ISOLATE, **kw)


# --------------------------------------------------------------------------- wrong solutions

METRICS = {
    "arithmetic_mean": '''
        def f_score(precision, recall, beta=1.0):
            return float((precision + recall) / 2)

        def binary_scores(y_true, y_pred):
            y_true, y_pred = list(map(int, y_true)), list(map(int, y_pred))
            tp = sum(t == 1 and p == 1 for t, p in zip(y_true, y_pred))
            fp = sum(t == 0 and p == 1 for t, p in zip(y_true, y_pred))
            fn = sum(t == 1 and p == 0 for t, p in zip(y_true, y_pred))
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            return float(precision), float(recall), f_score(precision, recall)
    ''',
    "no_zero_division": '''
        def f_score(precision, recall, beta=1.0):
            b2 = beta ** 2
            return float((1 + b2) * precision * recall / (b2 * precision + recall))

        def binary_scores(y_true, y_pred):
            y_true, y_pred = list(map(int, y_true)), list(map(int, y_pred))
            tp = sum(t == 1 and p == 1 for t, p in zip(y_true, y_pred))
            fp = sum(t == 0 and p == 1 for t, p in zip(y_true, y_pred))
            fn = sum(t == 1 and p == 0 for t, p in zip(y_true, y_pred))
            precision, recall = tp / (tp + fp), tp / (tp + fn)
            return float(precision), float(recall), f_score(precision, recall)
    ''',
    "nan_on_zero_division": '''
        import numpy as np

        def f_score(precision, recall, beta=1.0):
            b2 = float(beta) ** 2
            with np.errstate(all="ignore"):
                return float(np.float64((1 + b2) * float(precision) * float(recall))
                             / np.float64(b2 * float(precision) + float(recall)))

        def binary_scores(y_true, y_pred):
            t, p = np.asarray(y_true), np.asarray(y_pred)
            tp = float(((t == 1) & (p == 1)).sum())
            with np.errstate(all="ignore"):
                precision = float(np.float64(tp) / ((p == 1).sum()))
                recall = float(np.float64(tp) / ((t == 1).sum()))
            return precision, recall, f_score(precision, recall)
    ''',
    "numpy_floats": '''
        import numpy as np

        def f_score(precision, recall, beta=1.0):
            b2 = np.float64(beta) ** 2
            d = b2 * precision + recall
            return np.float64(0.0) if d == 0 else (1 + b2) * np.float64(precision) * recall / d

        def binary_scores(y_true, y_pred):
            t, p = np.asarray(y_true), np.asarray(y_pred)
            tp = ((t == 1) & (p == 1)).sum()
            pp, ap = (p == 1).sum(), (t == 1).sum()
            precision = tp / pp if pp else np.float64(0.0)
            recall = tp / ap if ap else np.float64(0.0)
            return precision, recall, f_score(precision, recall)
    ''',
    "precision_recall_swapped": '''
        def f_score(precision, recall, beta=1.0):
            p, r, b2 = float(precision), float(recall), float(beta) ** 2
            d = b2 * p + r
            return 0.0 if d == 0 else (1 + b2) * p * r / d

        def binary_scores(y_true, y_pred):
            y_pred, y_true = list(map(int, y_true)), list(map(int, y_pred))
            tp = sum(t == 1 and p == 1 for t, p in zip(y_true, y_pred))
            fp = sum(t == 0 and p == 1 for t, p in zip(y_true, y_pred))
            fn = sum(t == 1 and p == 0 for t, p in zip(y_true, y_pred))
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            return float(precision), float(recall), f_score(precision, recall)
    ''',
    "beta_not_squared": '''
        def f_score(precision, recall, beta=1.0):
            p, r, b = float(precision), float(recall), float(beta)
            d = b * p + r
            return 0.0 if d == 0 else (1 + b) * p * r / d

        def binary_scores(y_true, y_pred):
            y_true, y_pred = list(map(int, y_true)), list(map(int, y_pred))
            tp = sum(t == 1 and p == 1 for t, p in zip(y_true, y_pred))
            fp = sum(t == 0 and p == 1 for t, p in zip(y_true, y_pred))
            fn = sum(t == 1 and p == 0 for t, p in zip(y_true, y_pred))
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            return float(precision), float(recall), f_score(precision, recall)
    ''',
}

_MOMENTUM_HEAD = '''
    import torch

    class MomentumSGD(torch.optim.Optimizer):
        def __init__(self, params, lr, momentum=0.9):
            if lr < 0.0:
                raise ValueError("lr")
            if not 0.0 <= momentum < 1.0:
                raise ValueError("momentum")
            super().__init__(params, {"lr": lr, "momentum": momentum})

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                lr, mu = group["lr"], group["momentum"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
'''
_MOMENTUM_TAIL = '''
            return loss
'''


def _momentum(body: str) -> str:
    return _MOMENTUM_HEAD + textwrap.indent(textwrap.dedent(body), " " * 20) + _MOMENTUM_TAIL


MOMENTUM = {
    "sign_flipped": _momentum('''
        v = state.get("velocity")
        state["velocity"] = -p.grad.clone() if v is None else v.mul_(mu).sub_(p.grad)
        p.add_(state["velocity"], alpha=-lr)
    '''),
    "lr_in_velocity": _momentum('''
        v = state.get("velocity")
        state["velocity"] = lr * p.grad.clone() if v is None else v.mul_(mu).add_(lr * p.grad)
        p.sub_(state["velocity"])
    '''),
    "dampened": _momentum('''
        v = state.get("velocity")
        state["velocity"] = p.grad.clone() if v is None else v.mul_(mu).add_((1 - mu) * p.grad)
        p.add_(state["velocity"], alpha=-lr)
    '''),
    "momentum_forgotten": _momentum('''
        state["velocity"] = p.grad.clone()
        p.add_(state["velocity"], alpha=-lr)
    '''),
    "velocity_aliases_grad": _momentum('''
        if "velocity" not in state:
            state["velocity"] = p.grad
        else:
            state["velocity"].mul_(mu).add_(p.grad)
        p.add_(state["velocity"], alpha=-lr)
    '''),
    "defaults_not_groups": _momentum('''
        lr, mu = self.defaults["lr"], self.defaults["momentum"]
        v = state.get("velocity")
        state["velocity"] = p.grad.clone() if v is None else v.mul_(mu).add_(p.grad)
        p.add_(state["velocity"], alpha=-lr)
    '''),
}

_DROPOUT_MODULE = '''

    class Dropout(nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            self.p = p

        def forward(self, x):
            return dropout(x, self.p, self.training)
'''


def _dropout(body: str, module: str = _DROPOUT_MODULE) -> str:
    head = '''
    import numpy as np
    import torch
    from torch import nn

    def dropout(x, p, training=True):
        if not 0.0 <= p <= 1.0:
            raise ValueError(p)
'''
    return head + textwrap.indent(textwrap.dedent(body), " " * 8) + module


DROPOUT = {
    "no_scaling": _dropout('''
        if not training or p == 0:
            return x
        return x * (torch.rand(x.shape) >= p)
    '''),
    "scaling_at_eval": _dropout('''
        if not training:
            return x * (1 - p)
        if p == 1:
            return torch.zeros_like(x)
        return x * (torch.rand(x.shape) >= p) / (1 - p)
    '''),
    "active_at_eval": _dropout('''
        if p == 0:
            return x
        if p == 1:
            return torch.zeros_like(x)
        return x * (torch.rand(x.shape) >= p) / (1 - p)
    '''),
    "keeps_with_probability_p": _dropout('''
        if not training or p == 0:
            return x
        if p == 1:
            return torch.zeros_like(x)
        return x * (torch.rand(x.shape) < p) / (1 - p)
    '''),
    "in_place": _dropout('''
        if not training or p == 0:
            return x
        if p == 1:
            return x.zero_() if not x.requires_grad else x * 0
        if x.requires_grad:
            return x * (torch.rand(x.shape) >= p) / (1 - p)
        return x.mul_(torch.rand(x.shape) >= p).div_(1 - p)
    '''),
    "numpy_round_trip": _dropout('''
        if not training or p == 0:
            return x
        a = x.detach().numpy()
        keep = np.random.random_sample(a.shape) >= p
        return torch.from_numpy(a * keep / (1 - p) if p < 1 else a * 0)
    '''),
    "same_mask_every_call": _dropout('''
        if not training or p == 0:
            return x
        if p == 1:
            return torch.zeros_like(x)
        g = torch.Generator().manual_seed(0)
        return x * (torch.rand(x.shape, generator=g) >= p) / (1 - p)
    '''),
    "module_ignores_training": _dropout('''
        if not training or p == 0:
            return x
        if p == 1:
            return torch.zeros_like(x)
        return x * (torch.rand(x.shape) >= p) / (1 - p)
    ''', module='''

    class Dropout(nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            self.p = p

        def forward(self, x):
            return dropout(x, self.p)
'''),
    "float32_output": _dropout('''
        if not training or p == 0:
            return x
        return (x * (torch.rand(x.shape) >= p) / (1 - p)).float()
    '''),
}

WRONG = {"01_metrics": METRICS, "04_learning_rate": MOMENTUM, "05_regularization": DROPOUT}
CASES = [(a, name) for a, cases in WRONG.items() for name in cases]


@pytest.mark.parametrize("assignment", list(GRADED))
def test_the_solution_gets_full_marks_and_regrading_is_identical(tmp_path, assignment):
    code = solution_code(assignment)
    assert notebook_test_failures(assignment, code) == set()  # the notebook's own tests agree
    first = grade(tmp_path / "a", assignment, code)
    assert failures(first) == set(), {g: s.message for g, s in first.items() if not s.passed}
    assert sum(s.points for s in first.values()) == max_score(assignment)
    assert {g: s.max_points for g, s in first.items()} == \
        {g: float(p) for g, p in GRADED[assignment].cells.items()}
    again = grade(tmp_path / "b", assignment, code)
    assert again == first


@pytest.mark.parametrize(("assignment", "name"), CASES)
def test_wrong_implementations_lose_the_cells_the_notebook_tests_fail(tmp_path, assignment,
                                                                      name):
    code = textwrap.dedent(WRONG[assignment][name])
    expected = notebook_test_failures(assignment, code)
    assert expected, f"{name}: the notebook's tests should catch this mistake"
    scores = grade(tmp_path, assignment, code)
    assert failures(scores) == expected, {g: s.message for g, s in scores.items()}
    for gid, score in scores.items():
        assert score.points == (0.0 if gid in expected else score.max_points)
        assert score.message and (score.passed or score.message != "passed")


EXPECTED = {  # the mistakes of BRIEF.md, with the cells they must lose
    ("01_metrics", "arithmetic_mean"): {"test_f_score_values", "test_f_score_edge_cases",
                                        "test_binary_scores"},
    ("01_metrics", "no_zero_division"): {"test_f_score_edge_cases", "test_binary_scores",
                                         "test_binary_scores_zero_division"},
    ("04_learning_rate", "lr_in_velocity"): set(GRADED["04_learning_rate"].cells),
    ("05_regularization", "no_scaling"): set(GRADED["05_regularization"].cells),
    ("05_regularization", "active_at_eval"): {"test_dropout_basics", "test_dropout_gradient",
                                              "test_dropout_module"},
    ("05_regularization", "keeps_with_probability_p"): {"test_dropout_statistics",
                                                        "test_dropout_module"},
}


@pytest.mark.parametrize(("assignment", "name"), list(EXPECTED))
def test_the_mistakes_named_in_the_brief_fail_the_right_cells(assignment, name):
    code = textwrap.dedent(WRONG[assignment][name])
    assert notebook_test_failures(assignment, code) == EXPECTED[assignment, name]


def test_the_untouched_release_scores_zero(tmp_path):
    nb = released_notebook("05_regularization")
    scores = trusted_grade("05_regularization", nb, tmp_path, isolate=ISOLATE)
    assert all(s.points == 0 for s in scores.values())
    assert "NotImplementedError" in scores["test_dropout_basics"].message or \
        "raise" in scores["test_dropout_basics"].message


def test_missing_or_broken_notebooks_score_zero_with_a_reason(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{ not json")
    scores = trusted_grade("01_metrics", bad, tmp_path / "w1", isolate=ISOLATE)
    assert set(scores) == set(GRADED["01_metrics"].cells)
    assert all(s.points == 0 and "JSON" in s.message for s in scores.values())
    nb = json.loads(released_notebook("01_metrics").read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("nbgrader", None)
        if "def f_score" in "".join(cell["source"]):
            cell["source"] = "import math\n"  # the exercise is gone as well
    stripped = tmp_path / "stripped.ipynb"
    stripped.write_text(json.dumps(nb))
    scores = trusted_grade("01_metrics", stripped, tmp_path / "w2", isolate=ISOLATE)
    assert all(s.points == 0 and "f_score_solution" in s.message for s in scores.values())
    scores = trusted_grade("01_metrics", tmp_path / "absent.ipynb", tmp_path / "w3",
                           isolate=ISOLATE)
    assert all(s.points == 0 for s in scores.values())


def test_a_solution_cell_without_metadata_is_found_by_what_it_defines(tmp_path):
    nb = nbformat.read(make_submission(tmp_path, "01_metrics", solution_code("01_metrics")),
                       as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    path = tmp_path / "pasted.ipynb"
    nbformat.write(nb, path)
    scores = trusted_grade("01_metrics", path, tmp_path / "w", isolate=ISOLATE)
    assert failures(scores) == set()


def test_magics_in_the_solution_cell_are_tolerated(tmp_path):
    code = "%matplotlib inline\n!echo hi\n" + solution_code("01_metrics")
    scores = grade(tmp_path, "01_metrics", code)
    assert failures(scores) == set()


def test_an_endless_loop_costs_only_the_cells_that_call_it(tmp_path):
    code = solution_code("05_regularization").replace(
        "return dropout(x, self.p, self.training)", "while True:\n            pass")
    assert "while True" in code
    scores = grade(tmp_path, "05_regularization", code, probe_seconds=3)
    assert failures(scores) == {"test_dropout_module"}
    assert "too long" in scores["test_dropout_module"].message


def test_a_crash_while_defining_keeps_what_was_defined(tmp_path):
    code = solution_code("01_metrics") + "\nraise RuntimeError('oops')\n"
    scores = grade(tmp_path, "01_metrics", code)
    assert failures(scores) == set()  # as in the notebook: the names exist, the tests pass
    code = "raise RuntimeError('oops')\n" + solution_code("01_metrics")
    scores = grade(tmp_path, "01_metrics", code)
    assert failures(scores) == set(GRADED["01_metrics"].cells)
    assert "RuntimeError" in scores["test_f_score_values"].message
