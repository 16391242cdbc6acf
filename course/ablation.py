"""Chapter 7's ablation table: one change at a time, each over several seeds, the spread stated.

One training run gives one validation accuracy, and a second seed gives a different one. So a
change is run for a few seeds (``run_seeds``), and ``ablation_table`` puts its mean ± standard
deviation beside the baseline's, with the difference and whether it is larger than the noise.
``BUDGET`` is the project's compute budget: what one run and the whole table may cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from course.project import Recipe, run_recipe

__all__ = ["Budget", "BUDGET", "budget_problems", "SeedRuns", "run_seeds", "ablation_table",
           "combine"]


@dataclass(frozen=True)
class Budget:
    """The compute a project may spend: per run (the notes' baseline) and in runs overall."""

    max_epochs: int = 3  # the notes' baseline: 3 epochs ...
    max_image_size: int = 224  # ... at 224x224 ...
    archs: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")  # ... of a ResNet50 or smaller
    max_runs: int = 24  # every run of the table counts, each seed of each row


BUDGET = Budget()


def budget_problems(recipe: Recipe, budget: Budget = BUDGET) -> list[str]:
    """What makes one run of ``recipe`` cost more than ``budget`` allows (empty: it fits).

    >>> budget_problems(Recipe(epochs=6))
    ['6 epochs (at most 3)']
    """
    problems = []
    if recipe.epochs > budget.max_epochs:
        problems.append(f"{recipe.epochs} epochs (at most {budget.max_epochs})")
    if recipe.image_size > budget.max_image_size:
        problems.append(f"{recipe.image_size}x{recipe.image_size} images "
                        f"(at most {budget.max_image_size})")
    if recipe.arch not in budget.archs:
        problems.append(f"backbone {recipe.arch} (one of {', '.join(budget.archs)})")
    return problems


@dataclass
class SeedRuns:
    """One recipe trained with several seeds: the last validation accuracy of each run."""

    name: str
    recipe: Recipe
    seeds: list[int] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    model: object = None  # the model of the first seed, when run_seeds(keep_model=True)

    @property
    def mean(self) -> float:
        return float(np.mean(self.val_accuracy))

    @property
    def std(self) -> float:
        """The sample standard deviation (ddof=1) over the seeds; NaN for a single seed."""
        return float(np.std(self.val_accuracy, ddof=1)) if len(self.val_accuracy) > 1 else math.nan


def run_seeds(name: str, recipe: Recipe, seeds, train_images, train_labels, val_images,
              val_labels, *, keep_model: bool = False, **run_options) -> SeedRuns:
    """Train ``recipe`` once per seed with ``course.project.run_recipe`` on the same split.

    The seed changes the new head's initial weights, the batch order and the augmentations;
    ``run_options`` (device, amp, channels_last, ...) go to ``run_recipe``. Each model is freed
    after its run, except the first seed's when ``keep_model`` (to evaluate it on the test set).
    """
    runs = SeedRuns(name, recipe)
    for seed in seeds:
        model, history, seconds = run_recipe(recipe, train_images, train_labels, val_images,
                                             val_labels, seed=seed, **run_options)
        runs.seeds.append(seed)
        runs.val_accuracy.append(history["val_accuracy"][-1])
        runs.seconds.append(seconds)
        if keep_model and runs.model is None:
            runs.model = model
        del model  # free the device memory before the next run
    return runs


def ablation_table(rows: list[SeedRuns], *, baseline: str | None = None, budget: Budget = BUDGET):
    """A DataFrame, one row per recipe: validation accuracy mean and std over the seeds, the
    difference to the baseline row in percentage points, and a verdict.

    ``baseline`` names the reference row (default: the first). The verdict is "better" or
    "worse" when the difference exceeds two standard errors of a difference of two means,
    2·sqrt(s_a²/n_a + s_b²/n_b), else "within noise"; "one seed" when a spread is missing. With
    3 seeds a row this is a rough screen, not a significance test.
    """
    import pandas as pd

    ref = next(r for r in rows if r.name == baseline) if baseline else rows[0]
    records = []
    for r in rows:
        diff = 100 * (r.mean - ref.mean)
        noise = 200 * math.sqrt(r.std**2 / len(r.seeds) + ref.std**2 / len(ref.seeds))
        if r is ref:
            verdict, noise = "reference", math.nan
        elif math.isnan(noise):
            verdict = "one seed"
        else:
            verdict = "better" if diff > noise else "worse" if diff < -noise else "within noise"
        records.append({"experiment": r.name, "val_accuracy": r.mean, "std": r.std,
                        "seeds": len(r.seeds), "vs baseline (pp)": diff, "noise (pp)": noise,
                        "verdict": verdict, "in budget": not budget_problems(r.recipe, budget),
                        "seconds per run": float(np.mean(r.seconds))})
    return pd.DataFrame(records).set_index("experiment")


def combine(baseline: Recipe, *recipes: Recipe) -> Recipe:
    """The baseline with the changes of every recipe (the fields where it differs from the
    baseline), taken in order; a recipe that sets a field an earlier one set differently is
    skipped whole (two learning rates cannot both be kept).

    >>> combine(Recipe(), Recipe(label_smoothing=0.1), Recipe(lr=0.01, momentum=0.9),
    ...         Recipe(lr=5e-4, optimizer="adamw")) == Recipe(label_smoothing=0.1, lr=0.01,
    ...                                                       momentum=0.9)
    True
    """
    changed: dict[str, object] = {}
    for recipe in recipes:
        diff = {f.name: getattr(recipe, f.name) for f in fields(recipe)
                if getattr(recipe, f.name) != getattr(baseline, f.name)}
        if all(changed.get(name, value) == value for name, value in diff.items()):
            changed.update(diff)
    return replace(baseline, **changed)
