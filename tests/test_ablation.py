"""Chapter 7's ablation helpers: the budget, several seeds per recipe, the table's verdicts."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from course.ablation import BUDGET, SeedRuns, ablation_table, budget_problems, combine, run_seeds
from course.cifar import read_cifar10
from course.project import BASELINE


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_budget_is_the_baselines_compute():
    assert budget_problems(BASELINE) == []
    assert budget_problems(replace(BASELINE, arch="resnet18", epochs=1, image_size=32)) == []
    assert budget_problems(replace(BASELINE, epochs=6, image_size=256, arch="resnet101")) == [
        "6 epochs (at most 3)", "256x256 images (at most 224)",
        "backbone resnet101 (one of resnet18, resnet34, resnet50)"]
    assert BUDGET.max_runs == 24


def test_combine_merges_the_changes_and_skips_conflicts():
    momentum = replace(BASELINE, lr=0.01, momentum=0.9, nesterov=True)
    smoothing = replace(BASELINE, label_smoothing=0.1)
    adamw = replace(BASELINE, optimizer="adamw", lr=5e-4, weight_decay=0.05)
    assert combine(BASELINE) == BASELINE
    assert combine(BASELINE, momentum, smoothing) == replace(momentum, label_smoothing=0.1)
    assert combine(BASELINE, momentum, adamw, smoothing) == replace(momentum, label_smoothing=0.1)
    assert combine(BASELINE, adamw, momentum) == adamw  # the first one wins
    same_lr = replace(BASELINE, lr=0.01)
    assert combine(BASELINE, momentum, same_lr) == momentum  # agreeing fields are no conflict


def _runs(name, accuracies, recipe=BASELINE):
    return SeedRuns(name, recipe, list(range(len(accuracies))), list(accuracies),
                    [1.0] * len(accuracies))


def test_table_states_mean_spread_and_verdict():
    rows = [_runs("baseline", [0.80, 0.82, 0.81]),
            _runs("clearly better", [0.90, 0.91, 0.89]),
            _runs("noise", [0.79, 0.83, 0.82]),
            _runs("clearly worse", [0.50, 0.52, 0.51]),
            _runs("one seed", [0.95]),
            _runs("over budget", [0.81, 0.82, 0.80], replace(BASELINE, epochs=6))]
    table = ablation_table(rows)
    assert list(table.index) == [r.name for r in rows]
    for r in rows:
        assert table.loc[r.name, "val_accuracy"] == pytest.approx(np.mean(r.val_accuracy))
        assert table.loc[r.name, "seeds"] == len(r.seeds)
    assert table.loc["noise", "std"] == pytest.approx(np.std([0.79, 0.83, 0.82], ddof=1))
    assert math.isnan(table.loc["one seed", "std"])
    assert table.loc["clearly better", "vs baseline (pp)"] == pytest.approx(9.0)
    se = math.sqrt(np.var([0.79, 0.83, 0.82], ddof=1) / 3 + np.var([0.80, 0.82, 0.81], ddof=1) / 3)
    assert table.loc["noise", "noise (pp)"] == pytest.approx(200 * se)
    assert table["verdict"].to_dict() == {
        "baseline": "reference", "clearly better": "better", "noise": "within noise",
        "clearly worse": "worse", "one seed": "one seed", "over budget": "within noise"}
    assert table["in budget"].tolist() == [True] * 5 + [False]
    assert ablation_table(rows, baseline="noise").loc["noise", "verdict"] == "reference"


@pytest.mark.slow  # trains a small network once per seed
def test_run_seeds_trains_once_per_seed(fake_cifar10):
    images, labels = read_cifar10(fake_cifar10, verify=False)
    recipe = replace(BASELINE, arch="resnet18", weights=None, epochs=1, batch_size=25,
                     image_size=32, lr=0.01)
    data = (images[:60], labels[:60], images[60:], labels[60:])
    runs = run_seeds("tiny", recipe, [0, 1, 0], *data, device="cpu", progress=False,
                     keep_model=True)
    assert runs.seeds == [0, 1, 0] and len(runs.val_accuracy) == 3 and len(runs.seconds) == 3
    assert all(0 <= a <= 1 for a in runs.val_accuracy)
    assert runs.val_accuracy[0] == runs.val_accuracy[2]  # the same seed, the same run
    assert isinstance(runs.model, torch.nn.Module)
    assert run_seeds("tiny", recipe, [1], *data, device="cpu", progress=False).model is None



@pytest.mark.slow
def test_the_students_copy_runs_before_anything_is_filled_in(tmp_path):
    """nbgrader's release of chapter 7 has no solution, and still runs top to bottom at CI size:
    the table holds the baseline only, the final recipe is the baseline."""
    import nbformat

    from autograder.store.release import prepare_course
    from course.notebooks import CI_CELL_LIMIT, ci_parameters, find_root, run_notebook

    root = find_root()
    name = "07_cifar10_project"
    course_dir = prepare_course(root, [name], tmp_path / "course")
    released = course_dir / "release" / name / f"{name}.ipynb"
    assert "BEGIN SOLUTION" not in released.read_text()
    params = {**ci_parameters(root)[f"source/{name}/{name}.ipynb"],
              "DATA_ROOT": str(tmp_path / "data"), "OUT_DIR": str(tmp_path / "out")}
    result = run_notebook(released, tmp_path / "executed", params, timeout=CI_CELL_LIMIT,
                          html=False)
    assert result.status == "ok", result.detail
    executed = nbformat.read(tmp_path / "executed" / released.name, as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "my_changes is not filled in yet" in printed
    assert "my_recipe is not filled in yet" in printed
    assert "predictions_final.csv passes the scorer" in printed
