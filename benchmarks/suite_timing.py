"""Where the test suite's time goes: run a command that runs pytest, then report per test.

    python3 benchmarks/suite_timing.py --out /tmp/suite.md -- bash .ci/run
    python3 benchmarks/suite_timing.py --out /tmp/suite.md -- .venv/bin/python -m pytest -n auto

The command runs as given, with this file loaded into every pytest process it starts (pytest-xdist
workers included) as a plugin (``PYTHONPATH`` and ``PYTEST_ADDOPTS=-p suite_timing``). Each
test's start and end (setup, call and teardown together) go to one JSON-lines file per pytest
process; the machine's CPU use is sampled from /proc/stat every 2 s. The report (Markdown): the
command's own time and pytest's summary line, the share of both cores that was busy while tests
ran, worker-seconds by test file, the longest tests, and how long each worker sat idle at the
end. A script, not a test: what it measures depends on the machine and its load. Needs only
the standard library (it can drive ``.ci/run`` before any virtual environment exists).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LOG_DIR = "SUITE_TIMING_LOG"  # the environment variable naming the folder of the per-test logs


# --------------------------------------------------------------------------- the pytest plugin
# pytest imports this module in each of its processes (``-p suite_timing``); these hooks only
# write when the driver below set LOG_DIR.

def pytest_runtest_protocol(item, nextitem):  # noqa: ARG001 (pytest passes both by name)
    """Time the test where it runs (in a pytest-xdist worker, not in the controller, which
    only hears of it)."""
    start = time.time()
    try:
        return (yield)
    finally:
        folder = os.environ.get(LOG_DIR)
        if folder:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(Path(folder) / f"{worker}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"id": item.nodeid, "worker": worker, "start": start,
                                    "end": time.time()}) + "\n")


try:  # a hook wrapper when pytest imports this file; the driver below needs no pytest
    import pytest

    pytest_runtest_protocol = pytest.hookimpl(wrapper=True)(pytest_runtest_protocol)
except ImportError:
    pass


# --------------------------------------------------------------------------- the driver

def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CpuSampler:
    """Samples /proc/stat every ``every`` seconds on a thread: (time, busy, total)."""

    def __init__(self, every: float = 2.0):
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.samples.append((time.time(), *_cpu_times()))
            if self._stop.wait(self._every):
                self.samples.append((time.time(), *_cpu_times()))
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def busy_between(self, start: float, end: float) -> float | None:
        """Share of all CPUs busy between the samples nearest ``start`` and ``end``."""
        inside = [s for s in self.samples if start - self._every <= s[0] <= end + self._every]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])


def read_log(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def report(rows: list[dict], *, command: list[str], rc: int, wall: float, summary: str,
           sampler: CpuSampler, started: float, top: int = 20) -> str:
    """The Markdown report of one run (see the module's docstring)."""
    cores = os.cpu_count() or 1
    lines = [f"# Test suite timing ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))})",
             "",
             f"`python3 benchmarks/suite_timing.py -- {' '.join(command)}` at commit "
             f"{_git('rev-parse', '--short', 'HEAD')}; {cores} CPU cores ({_cpu_model()}), "
             f"Python {platform.python_version()}.",
             "",
             f"- exit status {rc}; the command took **{wall:.0f} s** in all",
             f"- pytest: {summary or '(no summary line found)'}"]
    if not rows:
        lines.append("- no test was timed (did pytest run, with this plugin loaded?)")
        return "\n".join(lines) + "\n"
    first, last = min(r["start"] for r in rows), max(r["end"] for r in rows)
    busy = sampler.busy_between(first, last)
    total = sum(r["end"] - r["start"] for r in rows)
    lines += [f"- tests ran for {last - first:.0f} s (first start to last end), "
              f"{len(rows)} tests, {total:.0f} worker-seconds in all",
              f"- CPU busy while they ran: {busy:.0%} of {cores} cores" if busy is not None
              else "- CPU busy: not sampled", ""]

    by_file = collections.Counter()
    count = collections.Counter()
    for r in rows:
        name = r["id"].split("::", 1)[0]
        by_file[name] += r["end"] - r["start"]
        count[name] += 1
    lines += ["## Worker-seconds by test file", "",
              "| test file | tests | worker-seconds | share |", "|---|---|---|---|"]
    for name, seconds in by_file.most_common():
        if seconds >= 1:
            lines.append(f"| `{name}` | {count[name]} | {seconds:.0f} | {seconds / total:.1%} |")
    quick = [n for n, s in by_file.items() if s < 1]
    if quick:
        lines.append(f"| {len(quick)} files under 1 s each | {sum(count[n] for n in quick)} | "
                     f"{sum(by_file[n] for n in quick):.1f} | |")

    lines += ["", f"## The {top} longest tests (setup, call and teardown together)", "",
              "| seconds | worker | test |", "|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["start"] - r["end"])[:top]:
        lines.append(f"| {r['end'] - r['start']:.1f} | {r['worker']} | `{r['id']}` |")

    lines += ["", "## Each worker", "", "| worker | tests | busy (s) | idle at the end (s) |",
              "|---|---|---|---|"]
    for worker in sorted({r["worker"] for r in rows}):
        mine = [r for r in rows if r["worker"] == worker]
        lines.append(f"| {worker} | {len(mine)} | {sum(r['end'] - r['start'] for r in mine):.0f}"
                     f" | {last - max(r['end'] for r in mine):.0f} |")
    return "\n".join(lines) + "\n"


def summary_line(output: str) -> str:
    """pytest's last summary line ("== 676 passed, 10 skipped in 2066.90s (0:34:26) ==")."""
    found = re.findall(r"^=* ?(\d+ (?:passed|failed|skipped|error|deselected|xfailed|xpassed|"
                       r"warning|no tests ran).*? in [\d.]+s(?: \([\d:]+\))?) ?=*$",
                       output, flags=re.M)
    return found[-1] if found else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the Markdown report goes")
    parser.add_argument("--top", type=int, default=20, help="how many of the longest tests")
    parser.add_argument("command", nargs="+", help="the command, after --")
    args = parser.parse_args(argv)

    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="suite-timing-") as log:
        env = dict(os.environ)
        env[LOG_DIR] = log
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        env["PYTEST_ADDOPTS"] = f"-p suite_timing {env.get('PYTEST_ADDOPTS', '')}".strip()
        started = time.time()
        output = []
        with CpuSampler() as sampler:
            proc = subprocess.Popen(args.command, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in proc.stdout:  # shown as it comes, kept for pytest's summary line
                sys.stdout.write(line)
                output.append(line)
            rc = proc.wait()
        wall = time.time() - started
        text = report(read_log(Path(log)), command=args.command, rc=rc, wall=wall,
                      summary=summary_line("".join(output)), sampler=sampler,
                      started=started, top=args.top)
    args.out.write_text(text, encoding="utf-8")
    print(f"\nreport: {args.out}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
