"""The claims mechanism: a stated result is printed with its numbers, fails the run when it does
not hold and is enforced, and never fails a CI-configuration or nbgrader run."""

import pytest

from course.claims import ClaimFailed, Claims, spread


@pytest.fixture
def not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


def test_a_claim_that_holds_prints_a_tick_and_its_numbers(not_grading, capsys):
    claim = Claims(enforce=True)
    assert claim.greater("dropout beats no regularization on validation accuracy", 0.912, 0.874)
    out, err = capsys.readouterr()
    assert out == "✓ dropout beats no regularization on validation accuracy: 0.912 vs 0.874\n"
    assert err == ""


@pytest.mark.parametrize("call", [
    lambda c: c.greater("a beats b", 0.5, 0.7),
    lambda c: c.greater("a beats b by 0.1", 0.75, 0.7, margin=0.1),
    lambda c: c.less("a below b", 2.0, 1.0),
    lambda c: c.between("a in range", 1.5, 0.0, 1.0),
    lambda c: c.between("a NaN is in no range", float("nan"), 0.0, 1.0),
    lambda c: c.close("a near b", 1.0, 1.2, tol=0.1),
    lambda c: c.check("a flag", False, "detail"),
    lambda c: c.greater_over_seeds("a beats b in every seed", [3, 1, 3], [2, 2, 2]),
    lambda c: c.less_over_seeds("a below b in every seed", [1, 3], [2, 2]),
])
def test_an_enforced_claim_that_fails_raises_naming_the_claim(not_grading, capsys, call):
    claim = Claims(enforce=True)
    with pytest.raises(ClaimFailed, match="claim does not hold: a"):
        call(claim)
    out, err = capsys.readouterr()
    assert out.startswith("✗ a") and err == ""
    assert claim.results[-1].holds is False


def test_unenforced_claims_report_without_failing_and_say_so(not_grading, capsys):
    claim = Claims(enforce=False)
    assert claim.less("the loss falls", 2.0, 1.0) is False
    assert claim.less("the loss falls", 0.5, 1.0) is True
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert "not enforced" in lines[0]  # the banner
    assert lines[1] == "✗ the loss falls: 2 vs 1  (does not hold here; reported, not enforced)"
    assert lines[2] == "✓ the loss falls: 0.500 vs 1"
    assert err == ""
    assert [r.holds for r in claim.results] == [False, True]


def test_claims_never_fail_under_nbgrader(monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    claim = Claims(enforce=True)
    assert claim.enforce is False
    assert claim.greater("a beats b", 0.0, 1.0) is False  # no exception
    assert "not enforced" in capsys.readouterr().out


def test_seed_claims_state_the_spread(not_grading, capsys):
    claim = Claims(enforce=True)
    assert claim.less_over_seeds("lower loss", [0.18, 0.20, 0.22], [0.27, 0.29, 0.31])
    out = capsys.readouterr().out
    assert "0.200 ± 0.020 vs 0.290 ± 0.020 (mean ± sd over 3 seeds; holds in 3 of 3)" in out
    with pytest.raises(ValueError, match="one value per seed"):
        claim.greater_over_seeds("mismatched", [1, 2], [1])


def test_margins_and_tolerances_are_strict_where_stated(not_grading):
    claim = Claims(enforce=False)
    assert claim.greater("edge", 1.0, 1.0) is False
    assert claim.close("edge", 1.0, 1.1, tol=0.1 + 1e-12) is True
    assert claim.between("edge", 1.0, 1.0, 1.0) is True


def test_spread():
    assert spread([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert spread([5]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        spread([])
