"""``course report``: one static page about the class, for the instructor.

Read from nbgrader's gradebook (``export.read_gradebook``: scores, late penalties, flags,
written answers still to grade, and the known mistakes the trusted checks found, from the
comment ``course grade`` writes) and from the results of ``course grade`` (results.jsonl of
each ``--results`` folder: grader errors, which never reach the gradebook, and the time each
student took to grade). It writes, into one folder:

- ``index.html``: the page, with no script and a Content-Security-Policy that allows none;
  every name and text in it is escaped (student ids come from folder names students chose);
- one PNG per figure (seaborn): the score distribution of each assignment, each test cell's
  pass rate, the time to grade per student;
- ``report.json``: the numbers behind the page, for scripts (and the tests).
"""

from __future__ import annotations

import html
import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["AssignmentReport", "build_report", "write_report"]

CSP = ("default-src 'none'; script-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")


@dataclass
class AssignmentReport:
    """The numbers the page shows about one assignment."""

    assignment: str
    max_score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)  # student -> score after penalty
    pass_rates: dict[str, float] = field(default_factory=dict)  # test cell -> passed fraction
    mistakes: dict[str, list[str]] = field(default_factory=dict)  # mistake -> students, ranked
    late: dict[str, tuple[float, float]] = field(default_factory=dict)  # student -> (h, penalty)
    flagged: list[str] = field(default_factory=list)
    grader_errors: dict[str, str] = field(default_factory=dict)  # student -> reason
    ungraded: dict[str, list[str]] = field(default_factory=dict)  # student -> written answers
    seconds: dict[str, float] = field(default_factory=dict)  # student -> time to grade

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores.values()) if self.scores else float("nan")


def _from_gradebook(result, report: AssignmentReport, passed: dict) -> None:
    """One student's gradebook record into ``report`` (``passed``: cell -> [bool])."""
    student = result.student
    report.max_score = max(report.max_score, result.max_score)
    report.scores[student] = result.score
    for cell in result.cells:
        if not cell.written:
            passed[cell.name].append(cell.score >= cell.max_score)
    for name in result.diagnoses:
        report.mistakes.setdefault(name, []).append(student)
    if result.seconds_late > 0:
        report.late[student] = (round(result.seconds_late / 3600, 2), result.late_penalty)
    if result.flagged:
        report.flagged.append(student)
    written = [c.name for c in result.cells if c.written and c.ungraded]
    if written:
        report.ungraded[student] = written


def build_report(results, rows) -> dict[str, AssignmentReport]:
    """assignment -> its report, from the gradebook's ``results`` (export.StudentResult) and
    the ``rows`` of course grade (results.GradeRow, the latest per student)."""
    reports: dict[str, AssignmentReport] = {}
    passed: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        report = reports.setdefault(result.assignment, AssignmentReport(result.assignment))
        _from_gradebook(result, report, passed[result.assignment])
    latest = {(r.assignment, r.student_id): r for r in rows}
    for (assignment, student), row in sorted(latest.items()):
        report = reports.setdefault(assignment, AssignmentReport(assignment))
        if row.status == "grader-error":
            report.grader_errors[student] = row.reason
        report.seconds[student] = row.seconds
    for assignment, cells in passed.items():
        reports[assignment].pass_rates = {c: sum(v) / len(v) for c, v in cells.items()}
    for report in reports.values():
        report.mistakes = dict(sorted(report.mistakes.items(),
                                      key=lambda kv: (-len(kv[1]), kv[0])))
    return dict(sorted(reports.items()))


# ------------------------------------------------------------------------------ figures

def _figure(draw, path: Path, size=(6, 3.2)) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    if ax.get_ylabel() == "students":  # counts of students: whole numbers
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def _figures(report: AssignmentReport, folder: Path) -> dict[str, str]:
    """The PNGs of one assignment: {what it shows: file name}."""
    import seaborn as sns

    made = {}
    name = report.assignment
    if report.scores:
        made["score distribution"] = _figure(lambda ax: (
            sns.histplot(x=list(report.scores.values()), bins=min(10, len(report.scores) + 1),
                         binrange=(0, max(report.max_score, 1)), ax=ax),
            ax.set(xlabel=f"score (of {report.max_score:g})", ylabel="students",
                   title=f"{name}: scores")), folder / f"{name}-scores.png")
    if report.pass_rates:
        made["pass rate per test cell"] = _figure(lambda ax: (
            sns.barplot(x=[100 * r for r in report.pass_rates.values()],
                        y=list(report.pass_rates), orient="h", ax=ax),
            ax.set(xlabel="passed (% of students)", ylabel="", xlim=(0, 100),
                   title=f"{name}: test cells")), folder / f"{name}-pass-rates.png")
    if report.seconds:
        made["time to grade per student"] = _figure(lambda ax: (
            sns.histplot(x=list(report.seconds.values()), ax=ax),
            ax.set(xlabel="seconds to grade one student", ylabel="students",
                   title=f"{name}: grading time")), folder / f"{name}-seconds.png")
    return made


# ---------------------------------------------------------------------------------- page

def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """An HTML table; every cell escaped."""
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(report: AssignmentReport, pngs: dict[str, str]) -> str:
    esc = html.escape
    scores = list(report.scores.values())
    summary = (f"{len(scores)} submission(s) in the gradebook; mean {report.mean:.2f} of "
               f"{report.max_score:g}; median "
               f"{statistics.median(scores) if scores else float('nan'):g}")
    parts = [f"<h2>{esc(report.assignment)}</h2><p>{esc(summary)}</p>"]
    for what, png in pngs.items():
        parts.append(f'<figure><img src="{esc(png)}" alt="{esc(what)}">'
                     f"<figcaption>{esc(what)}</figcaption></figure>")
    parts += [
        "<h3>Pass rate per test cell</h3>",
        _table(("test cell", "passed"), [(c, f"{100 * r:.0f}%")
                                         for c, r in report.pass_rates.items()]),
        "<h3>Diagnosed mistakes, most frequent first</h3>",
        _table(("mistake", "students", "who"), [(m, len(s), ", ".join(s))
                                                 for m, s in report.mistakes.items()]),
        "<h3>Late submissions</h3>",
        _table(("student", "hours late", "penalty"), [(s, h, p) for s, (h, p)
                                                      in sorted(report.late.items())]),
        "<h3>Flagged for review</h3>",
        _table(("student",), [(s,) for s in sorted(report.flagged)]),
        "<h3>Grader faults (no score recorded)</h3>",
        _table(("student", "reason"), sorted(report.grader_errors.items())),
        "<h3>Written answers still to grade</h3>",
        _table(("student", "answers"), [(s, ", ".join(c)) for s, c
                                        in sorted(report.ungraded.items())]),
        "<h3>Time to grade per student</h3>",
        _table(("student", "seconds"), sorted(report.seconds.items())),
    ]
    return "".join(parts)


def _page(reports: dict[str, AssignmentReport], figures: dict[str, dict[str, str]]) -> str:
    body = "".join(_section(r, figures[a]) for a, r in reports.items()) or "<p>no grades</p>"
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            "<title>Class report</title><style>body{font-family:sans-serif;margin:2em;"
            "max-width:75em}table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px "
            "solid #999;padding:0.2em 0.6em;text-align:left}figure{display:inline-block;"
            "width:32%;margin:0 0.5% 0 0;vertical-align:top}img{width:100%}</style></head>"
            "<body><h1>Class report</h1>"
            f"{body}</body></html>")


def write_report(reports: dict[str, AssignmentReport], folder: Path) -> Path:
    """folder/index.html, its PNGs and report.json; returns the page's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {a: _figures(r, folder) for a, r in reports.items()}
    page = folder / "index.html"
    page.write_text(_page(reports, figures), encoding="utf-8")
    numbers = {a: {**asdict(r), "mean": r.mean, "figures": figures[a]}
               for a, r in reports.items()}
    (folder / "report.json").write_text(json.dumps(numbers, indent=1), encoding="utf-8")
    return page
