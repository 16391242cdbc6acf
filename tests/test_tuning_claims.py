"""Each new section of issue 34 (the tuning process) states results that claims check; here each
section's experiment is broken on purpose, at its full-size defaults, and must stop at the claim
that names what broke. Only the chapter's preamble and the section run (tests/sections.py)."""

from pathlib import Path

import pytest
from sections import run_sections

ROOT = Path(__file__).resolve().parents[1]
CH2 = ROOT / "source/02_data_splits/02_data_splits.ipynb"
CH4 = ROOT / "source/04_learning_rate/04_learning_rate.ipynb"
CELL_LIMIT = 600

BROKEN = {
    # an output layer 30x its default scale: confident wrong answers before any training
    "sanity checks": (CH2, ["2.1:1", "2.9"], {"LAST_LAYER_GAIN": 30},
                      "1. the loss at initialisation is about ln K"),
    # "quasi-random" points that are random search's own: no more even than random search
    "quasi-random search": (CH4, ["9", "10", "10.2"], {"EXPLORE_SAMPLER": "random"},
                            "its points fill the space more evenly than random search's"),
    # a nuisance range far too low: every width's best rate sits on its upper edge
    "isolation plot": (CH4, ["10", "10.3"], {"NUISANCE_LR": [1e-3, 1e-2]},
                       "every width's best rate sits inside its range"),
    # widening that does not widen: the best trial stays on the edge
    "boundary check": (CH4, ["10", "10.4"], {"WIDEN_FACTOR": 1},
                       "after widening, the best trial sits inside the range"),
    # no retuning per batch size: the 'retuned' rate cannot grow
    "batch size": (CH4, ["10", "10.5"], {"RETUNE_LR": False},
                   "the retuned rate grows with the batch size"),
    # keeping every configuration at every rung is no halving: it spends random search's budget
    "successive halving": (CH4, ["10", "10.6"], {"HALVING_KEEP": 1.0, "N_SEEDS": 1},
                           "for the same epochs, successive halving looks at"),
    # a rate that SGD + momentum handles: nothing diverges, nothing to rescue
    "instability": (CH4, ["10", "10.7"], {"UNSTABLE_LR": 0.02},
                    "without help the run diverges"),
}


@pytest.mark.slow
@pytest.mark.fullsize
@pytest.mark.parametrize("section", list(BROKEN))
def test_a_broken_tuning_experiment_fails_its_claim(section, tmp_path):
    notebook, sections, parameters, claim = BROKEN[section]
    result = run_sections(notebook, sections, tmp_path, parameters, timeout=CELL_LIMIT)
    assert result.status == "failed", result
    assert f"claim does not hold: {claim}" in result.detail, result.detail

