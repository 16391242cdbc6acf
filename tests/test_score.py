"""`course score`: predictions CSVs scored against the CIFAR-10 test labels, checked against
scikit-learn; every malformed file gets one line of error and the others are still scored."""

import csv

import numpy as np
import pytest
from sklearn import metrics as skm

from autograder.cli import main
from course.cifar import read_cifar10
from course.data import CIFAR10_CLASSES
from course.notebooks import CI_CELL_LIMIT, ci_parameters, find_root, run_notebook
from course.project import write_predictions
from course.score import (
    MAX_BYTES,
    PredictionsError,
    leaderboard,
    read_predictions,
    score_file,
    score_folder,
)

ROOT = find_root()
CHAPTER_7 = ROOT / "source" / "07_cifar10_project" / "07_cifar10_project.ipynb"


@pytest.fixture
def test_labels(fake_cifar10):
    return read_cifar10(fake_cifar10, train=False, verify=False)[1].numpy()  # 40 images


def _write(path, y_pred, *, order=None, names=True):
    order = range(len(y_pred)) if order is None else order
    lines = ["id,label"] + [f"{i},{CIFAR10_CLASSES[y_pred[i]] if names else y_pred[i]}"
                            for i in order]
    path.write_text("\n".join(lines) + "\n")
    return path


def _noisy(y_true, p_correct, seed):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(y_true)) < p_correct, y_true, rng.integers(0, 10, len(y_true)))


def _score(*args):
    return main(["score", *map(str, args)])


# --- good files, against scikit-learn ---------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_scikit_learn(tmp_path, test_labels, seed):
    y_pred = _noisy(test_labels, 0.6, seed)
    order = np.random.default_rng(seed).permutation(len(y_pred))  # rows in any order
    score = score_file(_write(tmp_path / "ann.csv", y_pred, order=order), test_labels)
    assert score.student == "ann"
    assert score.accuracy == pytest.approx(skm.accuracy_score(test_labels, y_pred))
    labels = list(range(10))
    p, r, f, support = skm.precision_recall_fscore_support(test_labels, y_pred, labels=labels,
                                                           zero_division=0)
    per_class = score.table.loc[list(CIFAR10_CLASSES)]
    np.testing.assert_allclose(per_class["precision"], p)
    np.testing.assert_allclose(per_class["recall"], r)
    np.testing.assert_allclose(per_class["f"], f)
    np.testing.assert_array_equal(per_class["support"], support)
    macro = skm.precision_recall_fscore_support(test_labels, y_pred, labels=labels,
                                                average="macro", zero_division=0)
    np.testing.assert_allclose(score.table.loc["macro avg", ["precision", "recall", "f"]],
                               macro[:3])
    assert score.macro_f1 == pytest.approx(skm.f1_score(test_labels, y_pred, labels=labels,
                                                        average="macro", zero_division=0))
    np.testing.assert_array_equal(score.confusion,
                                  skm.confusion_matrix(test_labels, y_pred, labels=labels))


def test_lenient_where_harmless(tmp_path, test_labels):
    """Excel's byte-order mark, CRLF line ends, spaces, upper case and a trailing blank line."""
    rows = [f" {i} , {CIFAR10_CLASSES[c].upper()} " for i, c in enumerate(test_labels)]
    path = tmp_path / "bob.csv"
    path.write_bytes(("\ufeffID,Label\r\n" + "\r\n".join(rows) + "\r\n\r\n").encode("utf-8"))
    assert score_file(path, test_labels).accuracy == 1.0


def test_cli_scores_one_file_and_writes_the_figure(tmp_path, fake_cifar10, test_labels, capsys):
    y_pred = _noisy(test_labels, 0.5, 3)
    path = write_predictions(tmp_path / "predictions_final.csv", y_pred)  # the notebook's writer
    out = tmp_path / "out"
    assert _score(path, "--data-root", fake_cifar10, "--no-verify", "--out", out) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    expected = skm.accuracy_score(test_labels, y_pred)
    assert f"accuracy {expected:.4f} on 40 test images" in printed.out
    assert "macro avg" in printed.out and "truck" in printed.out
    figure = out / "predictions_final.confusion.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_verifies_the_files_unless_told_not_to(tmp_path, fake_cifar10, test_labels, capsys):
    path = _write(tmp_path / "ann.csv", test_labels)
    assert _score(path, "--data-root", fake_cifar10, "--out", tmp_path / "out") == 2
    assert "cannot read the test labels" in capsys.readouterr().err  # generated files: bad MD5


def test_cli_missing_inputs(tmp_path, fake_cifar10, capsys):
    assert _score(tmp_path / "nope.csv", "--data-root", fake_cifar10, "--no-verify") == 2
    assert "does not exist" in capsys.readouterr().err
    path = _write(tmp_path / "ann.csv", [0] * 40)
    assert _score(path, "--data-root", tmp_path / "no-data", "--no-verify") == 2
    assert "cifar-10-batches-py" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _score(tmp_path / "empty", "--data-root", fake_cifar10, "--no-verify",
                  "--out", tmp_path / "out") == 1
    assert "no .csv files" in capsys.readouterr().err


def test_help_states_the_format(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = capsys.readouterr().out
    assert "id,label" in text and "class NAME" in text and "Exit status" in text


# --- malformed files ---------------------------------------------------------------------------

def _rows(n=40, label="cat"):
    return [f"{i},{label}" for i in range(n)]


def _text(*lines):
    return ("\n".join(lines) + "\n").encode()


MALFORMED = {  # student: (file content, part of the one-line error)
    "empty": (b"", "the file is empty"),
    "binary": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)), "binary file, not a CSV"),
    "latin1": ("id,label\n0,caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
    "wrong_header": (_text("image,prediction", *_rows()), "not the header id,label"),
    "no_header": (_text(*_rows()), "'0,cat', not the header id,label"),
    "three_fields": (_text("id,label", *_rows(5), "5,cat,0.9"),
                     "line 7 has 3 fields, expected 2"),
    "bad_id": (_text("id,label", "0,cat", "seven,dog"), "line 3: id 'seven' is not a test image"),
    "id_out_of_range": (_text("id,label", *_rows(39), "40,cat"),
                        "line 41: id '40' is not a test image index 0..39"),
    "negative_id": (_text("id,label", "-1,cat"), "id '-1' is not a test image"),
    "duplicate_id": (_text("id,label", *_rows(10), "3,dog"),
                     "line 12: id 3 appears twice (first on line 5)"),
    "unknown_label": (_text("id,label", "0,cat", "1,kitty"), "line 3: unknown label 'kitty'"),
    "numeric_label": (_text("id,label", "0,3"), "line 2: unknown label '3': labels are class"),
    "missing_ids": (_text("id,label", *_rows(37)),
                    "3 of the 40 test ids have no row (ids 37, 38, 39)"),
    "header_only": (_text("id,label"),
                    "40 of the 40 test ids have no row (ids 0, 1, 2, 3, 4, ...)"),
    "bad_quote": (b'id,label\n0,"cat\n1,dog\n', "not valid CSV"),
    "huge": (_text("id,label", *["0,cat"] * (MAX_BYTES // 6 + 10)), "larger than 1 MiB"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_file_gets_one_line_saying_what_to_fix(tmp_path, test_labels, case):
    content, expected = MALFORMED[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    with pytest.raises(PredictionsError) as err:
        read_predictions(path, len(test_labels))
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_a_folder_of_students_gives_a_leaderboard(tmp_path, fake_cifar10, test_labels, capsys):
    hand_ins = tmp_path / "hand-ins"
    hand_ins.mkdir()
    good = {"ann": test_labels, "bob": _noisy(test_labels, 0.5, 1),
            "cem": _noisy(test_labels, 0.5, 1), "dan": _noisy(test_labels, 0.2, 2)}
    for student, y_pred in good.items():
        _write(hand_ins / f"{student}.csv", y_pred)
    for case, (content, _) in MALFORMED.items():
        (hand_ins / f"{case}.csv").write_bytes(content)
    (hand_ins / "notes.txt").write_text("not a csv: ignored")
    (hand_ins / "subfolder.csv").mkdir()  # not a file: one error line, not a crash
    out = tmp_path / "scores"

    assert _score(hand_ins, "--data-root", fake_cifar10, "--no-verify", "--out", out) == 0
    printed = capsys.readouterr()
    errors = printed.err.strip().splitlines()
    assert sorted(line.split(":")[1].strip() for line in errors) == sorted(
        [*MALFORMED, "subfolder"])
    for line in errors:
        student = line.split(":")[1].strip()
        if student in MALFORMED:
            assert line == f"error: {student}: " + str(pytest.raises(
                PredictionsError, read_predictions, hand_ins / f"{student}.csv", 40).value)
    assert f"4/{4 + len(MALFORMED) + 1} scored on 40 test images" in printed.out

    with open(out / "leaderboard.csv") as f:
        board = list(csv.DictReader(f))
    ranked = [(r["rank"], r["student"]) for r in board if not r["error"]]
    assert ranked == [("1", "ann"), ("2", "bob"), ("2", "cem"), ("4", "dan")]  # ties share
    accuracy = {r["student"]: float(r["accuracy"]) for r in board if not r["error"]}
    for student, y_pred in good.items():
        assert accuracy[student] == pytest.approx(skm.accuracy_score(test_labels, y_pred))
    failed = {r["student"]: r["error"] for r in board if r["error"]}
    assert set(failed) == {*MALFORMED, "subfolder"} and failed["empty"].startswith("the file is")
    assert {p.name for p in out.glob("*.png")} == {f"{s}.confusion.png" for s in good}


def test_nothing_scorable_exits_non_zero(tmp_path, fake_cifar10, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "eve.csv").write_bytes(b"")
    assert _score(tmp_path / "in", "--data-root", fake_cifar10, "--no-verify",
                  "--out", tmp_path / "out") == 1
    assert capsys.readouterr().err.strip() == (
        "error: eve: the file is empty: write the header id,label and one row per test image")
    assert _score(tmp_path / "in" / "eve.csv", "--data-root", fake_cifar10, "--no-verify",
                  "--out", tmp_path / "out") == 1


def test_an_empty_folder_gives_an_empty_leaderboard(tmp_path, test_labels):
    scores, errors = score_folder(tmp_path, test_labels)
    assert scores == [] and errors == {} and leaderboard(scores).empty


# --- the notebook's own predictions file ---------------------------------------------------------

@pytest.mark.slow
def test_chapter_7_predictions_pass_the_scorer(tmp_path, capsys):
    """Chapter 7 at its CI size on generated files writes predictions that `course score` takes."""
    data, out = tmp_path / "data", tmp_path / "out"
    params = {**ci_parameters(ROOT)[CHAPTER_7.relative_to(ROOT).as_posix()],
              "DATA_ROOT": str(data), "OUT_DIR": str(out)}
    result = run_notebook(CHAPTER_7, tmp_path / "executed", params, timeout=CI_CELL_LIMIT,
                          html=False)
    assert result.status == "ok", result.detail
    y_true = read_cifar10(data, train=False, verify=False)[1].numpy()
    for name in ("predictions_baseline.csv", "predictions_final.csv"):
        assert _score(out / name, "--data-root", data, "--no-verify",
                      "--out", tmp_path / "scores") == 0
        assert f"on {len(y_true)} test images" in capsys.readouterr().out
        assert len(read_predictions(out / name, len(y_true))) == len(y_true)
