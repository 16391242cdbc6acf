"""Score chapter 7's predictions files against the CIFAR-10 test labels (``course score``).

A predictions file is a CSV: the header ``id,label``, then one row per test image, ``id`` its
index in the test set (0 to 9,999 for the official ``test_batch``) and ``label`` its predicted
class *name* (``airplane``, ``automobile``, ... ``truck``, as ``course.project.write_predictions``
writes them). Rows may come in any order.

The files are student-made, so they are read as hostile: at most ``MAX_BYTES`` are read, a file
that is not UTF-8 text is refused, and the first problem found is reported as one line saying
what to fix (``PredictionsError``). One student's bad file never stops the others from being
scored (``score_folder``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from course.data import CIFAR10_CLASSES
from course.metrics import accuracy, confusion_matrix, precision_recall_fscore

__all__ = ["MAX_BYTES", "PredictionsError", "Score", "read_predictions", "score_predictions",
           "score_file", "score_folder", "leaderboard", "save_confusion_figure"]

MAX_BYTES = 1 << 20  # 10,000 rows of "9999,automobile" take about 160 KB
HEADER = ("id", "label")


class PredictionsError(ValueError):
    """A predictions file the scorer cannot read; the message says what to fix, on one line."""


@dataclass
class Score:
    """The scores of one predictions file."""

    student: str
    accuracy: float
    table: object  # pandas DataFrame: precision, recall, f, support per class, then "macro avg"
    confusion: np.ndarray  # C[i, j] = test images of true class i predicted as class j

    @property
    def macro_f1(self) -> float:
        return float(self.table.loc["macro avg", "f"])


def _decode(path: Path) -> str:
    if not path.is_file():
        raise PredictionsError(f"{path} is not a file: hand in one CSV file")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if not data:
        raise PredictionsError("the file is empty: write the header id,label and one row per "
                               "test image")
    if len(data) > MAX_BYTES:
        raise PredictionsError(f"the file is larger than {MAX_BYTES / 2**20:g} MiB: a predictions "
                               "file holds only id,label rows (about 160 KB for 10,000 images)")
    if b"\0" in data:
        raise PredictionsError("this is a binary file, not a CSV: save the predictions as plain "
                               "text, header id,label")
    try:
        return data.decode("utf-8-sig")  # -sig: Excel's byte-order mark is fine
    except UnicodeDecodeError as err:
        raise PredictionsError(f"not UTF-8 text (byte {err.start}): save the predictions as a "
                               "UTF-8 CSV, header id,label") from None


def _rows(text: str):
    """(line number, id, label) of each data row, after checking the header; blank lines skipped."""
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(rows, [])
        if tuple(h.strip().lower() for h in header) != HEADER:
            shown = ",".join(header)[:60]
            raise PredictionsError(f"the first line is {shown!r}, not the header id,label: "
                                   "make the first line exactly id,label")
        for row in rows:
            if not row or all(not f.strip() for f in row):
                continue  # blank lines, e.g. at the end
            if len(row) != 2:
                raise PredictionsError(f"line {rows.line_num} has {len(row)} fields, expected 2 "
                                       "(id,label)")
            yield rows.line_num, row[0].strip(), row[1].strip()
    except csv.Error as err:  # e.g. an unterminated quote
        raise PredictionsError(f"line {rows.line_num}: not valid CSV ({err})") from None


def read_predictions(path: str | Path, n_test: int, classes=CIFAR10_CLASSES) -> np.ndarray:
    """The predicted class index of test images 0..n_test-1, from an ``id,label`` CSV file.

    Raises ``PredictionsError`` with a one-line message at the first problem: empty, too large
    or binary file, wrong header, a row without two fields, an id that is not an integer in
    0..n_test-1, a duplicate id, an unknown class name, missing ids.
    """
    index = {name.lower(): i for i, name in enumerate(classes)}
    pred = np.full(n_test, -1, dtype=np.int64)
    first_line = np.zeros(n_test, dtype=np.int64)
    for line, raw_id, raw_label in _rows(_decode(Path(path))):
        if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 9
                and int(raw_id) < n_test):
            raise PredictionsError(f"line {line}: id {raw_id[:20]!r} is not a test image "
                                   f"index 0..{n_test - 1}")
        i = int(raw_id)
        if pred[i] >= 0:
            raise PredictionsError(f"line {line}: id {i} appears twice (first on line "
                                   f"{first_line[i]}): write one row per test image")
        label = index.get(raw_label.lower())
        if label is None:
            raise PredictionsError(f"line {line}: unknown label {raw_label[:30]!r}: labels "
                                   f"are class names ({', '.join(classes)})")
        pred[i], first_line[i] = label, line
    missing = np.flatnonzero(pred < 0)
    if len(missing):
        shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise PredictionsError(f"{len(missing)} of the {n_test} test ids have no row (ids "
                               f"{shown}): write one row per test image, ids 0..{n_test - 1}")
    return pred


def score_predictions(y_true, y_pred, *, student: str = "", classes=CIFAR10_CLASSES) -> Score:
    """Accuracy, per-class precision/recall/F1 (a DataFrame) and the confusion matrix."""
    import pandas as pd

    labels = list(range(len(classes)))
    per_class = precision_recall_fscore(y_true, y_pred, labels=labels)
    table = pd.DataFrame({k: per_class[k] for k in ("precision", "recall", "f", "support")},
                         index=list(classes))
    macro = precision_recall_fscore(y_true, y_pred, labels=labels, average="macro")
    table.loc["macro avg"] = [macro[k] for k in table.columns]
    table["support"] = table["support"].astype(int)
    return Score(student, accuracy(y_true, y_pred), table,
                 confusion_matrix(y_true, y_pred, labels=labels))


def score_file(path: str | Path, y_true, *, classes=CIFAR10_CLASSES) -> Score:
    """Read one predictions file (``read_predictions``) and score it against ``y_true``."""
    y_true = np.asarray(y_true)
    pred = read_predictions(path, len(y_true), classes)
    return score_predictions(y_true, pred, student=Path(path).stem, classes=classes)


def score_folder(folder: str | Path, y_true, *, classes=CIFAR10_CLASSES
                 ) -> tuple[list[Score], dict[str, str]]:
    """Score every ``<student>.csv`` in ``folder`` (not its subfolders).

    Returns (the scores, {student: error message} for the files that could not be scored).
    """
    scores, errors = [], {}
    for path in sorted(Path(folder).glob("*.csv")):
        try:
            scores.append(score_file(path, y_true, classes=classes))
        except PredictionsError as err:
            errors[path.stem] = str(err)
    return scores, errors


def leaderboard(scores: list[Score], errors: dict[str, str] | None = None):
    """A DataFrame ranked by accuracy (ties share a rank, then macro F1 breaks the order),
    followed by one row per file that could not be scored, with its error."""
    import pandas as pd

    ranked = sorted(scores, key=lambda s: (-s.accuracy, -s.macro_f1, s.student))
    rows = [{"student": s.student, "accuracy": s.accuracy, "macro_f1": s.macro_f1, "error": ""}
            for s in ranked]
    rows += [{"student": name, "accuracy": np.nan, "macro_f1": np.nan, "error": message}
             for name, message in sorted((errors or {}).items())]
    frame = pd.DataFrame(rows, columns=["student", "accuracy", "macro_f1", "error"])
    frame.insert(0, "rank", frame["accuracy"].rank(method="min", ascending=False).astype("Int64"))
    return frame


def save_confusion_figure(score: Score, path: str | Path, *, classes=CIFAR10_CLASSES) -> Path:
    """Write the row-normalized confusion matrix of ``score`` as a PNG (seaborn heatmap)."""
    from matplotlib.figure import Figure

    from course.plots import confusion_matrix_heatmap

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7.5, 7))  # not pyplot: nothing is shown, no backend is needed
    confusion_matrix_heatmap(score.confusion, labels=classes, normalize=True, ax=fig.subplots(),
                             title=f"{score.student}: accuracy {score.accuracy:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
