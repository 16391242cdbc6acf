"""State a result of a run as a check, right where the text claims it.

A notebook that writes "dropout beats no regularization on validation accuracy" backs the
sentence with one line computed from the run's own numbers::

    claim = Claims(enforce=CHECK_CLAIMS)
    claim.greater("dropout beats no regularization on validation accuracy", acc_drop, acc_base)

which prints, for the student::

    ✓ dropout beats no regularization on validation accuracy: 0.912 vs 0.874

At the full-size defaults (``CHECK_CLAIMS = True``) a claim that does not hold stops the run
with :class:`ClaimFailed`, whose message names the claim. The small CI configuration
(``tests/notebook_params.yaml`` sets ``CHECK_CLAIMS: false``) cannot show the effects, so
there the checks are reported, marked ✗ when they do not hold, and never fail; so does every
run under nbgrader (a student's notebook is never failed by a claim). Everything is printed
to stdout: nbgrader zeroes a test cell that writes to stderr.

Claims that depend on the noise of one run take one value per seed
(:meth:`Claims.greater_over_seeds`) and print the mean and spread over the seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from course.device import under_grading

__all__ = ["Claims", "ClaimFailed", "ClaimResult", "spread"]


class ClaimFailed(AssertionError):
    """A result the text states does not hold in this run."""


@dataclass
class ClaimResult:
    text: str
    holds: bool
    detail: str


def _num(x) -> str:
    """A number as a student reads it: 0.912, 2.303, 1.2e-07, nan."""
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3f}"


def spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``.

    >>> spread([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("spread() needs at least one value")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


class Claims:
    """Checks of the results a notebook's text states; ``enforce`` decides whether a failed
    check stops the run (it never does under nbgrader)."""

    def __init__(self, enforce: bool = True):
        self.enforce = bool(enforce) and not under_grading()
        self.results: list[ClaimResult] = []
        if not self.enforce:
            print("Claims are reported, not enforced, in this run (small CI configuration or "
                  "grading): a ✗ marks a result the text states that these settings are too "
                  "small to show; the full-size defaults check every one.")

    def check(self, text: str, holds: bool, detail: str = "") -> bool:
        """Record and print one claim; raise ClaimFailed when it fails and is enforced."""
        holds = bool(holds)
        self.results.append(ClaimResult(text, holds, detail))
        line = f"{'✓' if holds else '✗'} {text}" + (f": {detail}" if detail else "")
        if not holds and not self.enforce:
            line += "  (does not hold here; reported, not enforced)"
        print(line)
        if not holds and self.enforce:
            raise ClaimFailed(f"claim does not hold: {text}" + (f" ({detail})" if detail else ""))
        return holds

    def greater(self, text: str, a, b, *, margin: float = 0.0) -> bool:
        """Claim a > b + margin, e.g. one run's accuracy above another's."""
        lead = f" (needs a lead of {_num(margin)})" if margin else ""
        detail = f"{_num(a)} vs {_num(b)}{lead}"
        return self.check(text, float(a) > float(b) + margin, detail)

    def less(self, text: str, a, b, *, margin: float = 0.0) -> bool:
        """Claim a < b - margin, e.g. one run's loss below another's."""
        detail = f"{_num(a)} vs {_num(b)}" + (f" (needs a gap of {_num(margin)})" if margin else "")
        return self.check(text, float(a) < float(b) - margin, detail)

    def between(self, text: str, value, low, high) -> bool:
        """Claim low <= value <= high (NaN never is)."""
        value = float(value)
        return self.check(text, low <= value <= high,
                          f"{_num(value)} (expected {_num(low)} to {_num(high)})")

    def close(self, text: str, a, b, *, tol: float) -> bool:
        """Claim |a - b| <= tol."""
        a, b = float(a), float(b)
        return self.check(text, abs(a - b) <= tol,
                          f"{_num(a)} vs {_num(b)} (difference {_num(abs(a - b))}, "
                          f"tolerance {_num(tol)})")

    def greater_over_seeds(self, text: str, a, b, *, margin: float = 0.0) -> bool:
        """Claim a > b + margin in **every** seed; a[i] and b[i] come from the same seed.

        Prints each side's mean ± standard deviation over the seeds, so the text can state
        the spread; the claim holds only when no seed contradicts it.
        """
        return self._over_seeds(text, a, b, lambda x, y: x > y + margin)

    def less_over_seeds(self, text: str, a, b, *, margin: float = 0.0) -> bool:
        """Claim a < b - margin in every seed (see :meth:`greater_over_seeds`)."""
        return self._over_seeds(text, a, b, lambda x, y: x < y - margin)

    def _over_seeds(self, text, a, b, holds_in_seed) -> bool:
        a, b = [float(v) for v in a], [float(v) for v in b]
        if len(a) != len(b) or not a:
            raise ValueError(f"one value per seed on each side: got {len(a)} and {len(b)}")
        wins = sum(holds_in_seed(x, y) for x, y in zip(a, b, strict=True))
        (ma, sa), (mb, sb) = spread(a), spread(b)
        detail = (f"{_num(ma)} ± {_num(sa)} vs {_num(mb)} ± {_num(sb)} "
                  f"(mean ± sd over {len(a)} seeds; holds in {wins} of {len(a)})")
        return self.check(text, wins == len(a), detail)
