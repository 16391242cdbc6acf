"""The probe protocol: what the trusted side asks the harness, and strict readers of its answers.

The trusted side builds a :class:`Plan` (probes plus grader-chosen input arrays) that the
sandboxed harness (``harness.py``) executes; the harness writes ``results/<probe id>.json``
and ``.npy`` arrays. Everything in ``results/`` was written by a process running student code,
so :class:`Results` and the decoders below read it as hostile: no links followed, sizes capped,
``allow_pickle=False``, exact types and shapes. A decoder that does not like what it reads
raises :class:`Fail`, whose message says which behaviour failed and why; the trusted check of a
test cell is a function ``check(results)`` that raises Fail or returns.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["Fail", "GraderFault", "Plan", "grader_fingerprint", "grading_secret", "secret_path",
           "secret_seed",
           "Results", "Check",
           "py", "as_float", "type_name", "close", "tensor", "assert_close", "is_value_error",
           "call_results", "values"]

MAX_RESULT_BYTES = 32 * 1024 * 1024
MAX_RECORD_BYTES = 4 * 1024 * 1024
SECRET_ENV = "COURSE_GRADING_SECRET"
_TORCH_DTYPES = {"torch.float64": "float64", "torch.float32": "float32",
                 "torch.float16": "float32", "torch.bfloat16": "float32", "torch.int64": "int64",
                 "torch.int32": "int32", "torch.bool": "bool", "torch.uint8": "uint8"}


class GraderFault(RuntimeError):
    """The grader itself failed (a trusted check raised something other than Fail): the
    student's row becomes ``grader-error``, never a score."""


class Fail(Exception):
    """A trusted check failed (the message says which and why)."""


def secret_path() -> Path:
    """Where the course's grading secret lives: with the instructor's grading data, never in
    the repository (``$COURSE_GRADING_HOME``, else ``$XDG_DATA_HOME/course-grading``, else
    ``~/.local/share/course-grading``), in a folder named by the nbgrader course id."""
    home = os.environ.get("COURSE_GRADING_HOME") or Path(
        os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "course-grading"
    from autograder.settings import course_id

    return Path(home).expanduser().resolve() / course_id() / "secret"


def _check_out_of_reach(path: Path) -> None:
    """The secret must not be in anything the sandbox mounts (the environment, /usr, /etc)."""
    from autograder.isolation.sandbox import visible_in_sandbox

    if visible_in_sandbox(path):
        raise ValueError(f"the grading secret {path} would be readable by student code (the "
                           "sandbox mounts that folder): set COURSE_GRADING_HOME to a folder of "
                           "your own, outside the repository and the Python environment")


@functools.lru_cache(maxsize=4)
def _secret_in(path: Path) -> str:
    _check_out_of_reach(path)
    if not path.exists():  # first use: a random secret, written whole or not at all
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".secret-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another grader made it first: then use theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < 32:
        raise ValueError(f"the grading secret {path} is shorter than 32 characters: delete it "
                           "only if no grades depend on it (a new one changes every input)")
    return secret


def grading_secret() -> str:
    """The secret the trusted inputs derive from: ``$COURSE_GRADING_SECRET`` if set, else the
    course's secret file (``secret_path()``), made with a random value on first use."""
    return os.environ.get(SECRET_ENV) or _secret_in(secret_path())


def grader_fingerprint() -> str:
    """A hash of the grading code and the trusted secret's hash: equal on every machine that
    would give the same scores (the secret itself never travels)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent  # the whole autograder package
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    secret = grading_secret()
    digest.update(hashlib.sha256(secret.encode()).digest())
    return digest.hexdigest()[:16]


def secret_seed(assignment: str, salt: str = "") -> int:
    """A seed that depends only on the grading secret, the assignment and ``salt``."""
    secret = grading_secret()
    digest = hashlib.sha256(f"{secret}\0{assignment}\0{salt}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


class Plan:
    """The probes the harness will run, and the input arrays they use.

    Probe kinds the harness knows: ``call`` (call a function of the solution cell, once, a
    batch of ``calls``, or ``repeat`` times) and ``scenario`` (run a function of the exercise's
    sandbox code, ``sandbox_code``, with a class or function of the solution cell). Any probe may
    list ``forbid``: dotted names of library functions that raise while the probe runs, and are
    reported in the record's ``forbidden_calls``.
    """

    def __init__(self, assignment: str):
        self.assignment = assignment
        self.probes: list[dict] = []
        self.inputs: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(secret_seed(assignment))
        # known mistake's name -> recogniser(results) -> bool, read on the trusted side only
        self.recognisers: dict[str, Callable[[Results], bool]] = {}

    def inp(self, array, as_: str = "ndarray", **extra) -> dict:
        """Register an input array; ``as_`` says what the harness turns it into."""
        name = f"in{len(self.inputs)}.npy"
        self.inputs[name] = np.array(array, order="C")
        return {"npy": name, "as": as_, **extra}

    def add(self, kind: str, pid: str, **fields) -> str:
        """Add a probe with a unique id; its random seed derives from the secret and the id."""
        if pid in {p["id"] for p in self.probes}:
            raise ValueError(f"probe id {pid!r} used twice")
        seed = secret_seed(self.assignment, pid) % 2**31
        self.probes.append({"kind": kind, "id": pid, "seed": seed, **fields})
        return pid

    def recognise(self, mistake: str, recogniser: Callable[[Results], bool]) -> None:
        """How the results of this plan's probes show the known mistake ``mistake``: a
        function of the results, True when the code behaves as that mistake does (a Fail it
        raises reads as False). It runs here, never in the sandbox."""
        if mistake in self.recognisers:
            raise ValueError(f"mistake {mistake!r} recognised twice")
        self.recognisers[mistake] = recogniser


Check = Callable[["Results"], None]


def py(value) -> dict:
    """A JSON value passed to the student's code as it is."""
    return {"py": value}


class Results:
    """Strict, read-only access to what the harness wrote (all of it untrusted)."""

    def __init__(self, results_fd: int | None, reason: str):
        self.fd = results_fd
        self.reason = reason
        self.cache: dict[str, dict] = {}

    def read(self, name: str, cap: int = MAX_RESULT_BYTES) -> bytes:
        if self.fd is None:
            raise Fail(f"no results ({self.reason or 'the harness did not run'})")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError:
            raise Fail(f"result {name} is missing ({self.reason or 'the code stopped early'})"
                       ) from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise Fail(f"result {name} is not a regular file")
            data = fh.read(cap + 1)
        if len(data) > cap:
            raise Fail(f"result {name} is too large")
        return data

    def json(self, name: str, cap: int = MAX_RECORD_BYTES):
        try:
            return json.loads(self.read(name, cap).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Fail(f"result {name} is malformed") from None

    def record(self, pid: str) -> dict:
        """The record of probe ``pid``; Fail when it timed out, failed or is malformed."""
        if pid not in self.cache:
            rec = self.json(f"{pid}.json")
            if not isinstance(rec, dict):
                raise Fail(f"result {pid} is malformed")
            called = rec.get("forbidden_calls")
            if called:  # first: the forbidden call may be what stopped the probe
                names = ", ".join(str(n)[:60] for n in called[:3]) if isinstance(
                    called, list) else "?"
                raise Fail(f"{pid}: the solution called {names}, which the exercise forbids")
            status = rec.get("status")
            if status == "timeout":
                raise Fail(f"{pid}: the code ran too long (probe timeout)")
            if status != "ok":
                err = rec.get("error")
                raise Fail(f"{pid}: {err if isinstance(err, str) else 'failed'}")
            self.cache[pid] = rec
        return self.cache[pid]

    def array(self, enc: dict, what: str) -> np.ndarray:
        name = enc.get("npy")
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise Fail(f"{what}: no array data")
        try:
            arr = np.load(io.BytesIO(self.read(name)), allow_pickle=False)
        except Fail:
            raise
        except Exception:  # noqa: BLE001 - malformed .npy
            raise Fail(f"{what}: malformed array data") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise Fail(f"{what}: not a numeric array")
        shape = enc.get("shape")
        if not isinstance(shape, list) or tuple(arr.shape) != tuple(shape):
            raise Fail(f"{what}: array shape does not match its description")
        return arr


# --------------------------------------------------------------------------- decoders


def type_name(enc) -> str:
    """What the harness said a value is, for a message."""
    if not isinstance(enc, dict):
        return "nothing"
    t = enc.get("t")
    if t == "exception":
        return f"an exception ({str(enc.get('name'))[:40]})"
    if t == "other":
        return str(enc.get("name", "an object"))[:60]
    return str(t)[:60]


def as_float(enc, what: str) -> float:
    """A finite Python float (an int is accepted as its float); Fail otherwise."""
    if not isinstance(enc, dict) or enc.get("t") != "float":
        raise Fail(f"{what} must be a Python float, got {type_name(enc)}")
    v = enc.get("v")
    if type(v) is not float:
        if type(v) is not int:
            raise Fail(f"{what}: malformed value")
        v = float(v)
    if not math.isfinite(v):
        raise Fail(f"{what} is {v}, not a finite number")
    return v


def close(value: float, expected: float, what: str, rel: float = 1e-9, abs_: float = 1e-12):
    if not math.isclose(value, expected, rel_tol=rel, abs_tol=abs_):
        raise Fail(f"{what} = {value!r}, expected {expected!r}")


def tensor(R: Results, enc, what: str, dtype: str | None = None, shape=None):
    """A CPU torch.Tensor of the exact type (optionally dtype and shape), as a fresh tensor."""
    import torch

    if not isinstance(enc, dict) or enc.get("t") != "torch.Tensor":
        raise Fail(f"{what} must be a torch.Tensor, got {type_name(enc)}")
    tdtype = enc.get("dtype")
    if tdtype not in _TORCH_DTYPES:
        raise Fail(f"{what}: unexpected dtype {str(tdtype)[:40]}")
    if dtype is not None and tdtype != dtype:
        raise Fail(f"{what}: dtype must be {dtype}, got {tdtype}")
    if enc.get("device") != "cpu":
        raise Fail(f"{what}: device must be kept (cpu), got {str(enc.get('device'))[:20]}")
    arr = R.array(enc, what)
    if str(arr.dtype) != _TORCH_DTYPES[tdtype]:
        raise Fail(f"{what}: array data does not match its dtype")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise Fail(f"{what}: shape must be {tuple(shape)}, got {tuple(arr.shape)}")
    return torch.from_numpy(arr.copy())


def assert_close(actual, expected, what: str, **kw):
    """torch.testing.assert_close, failing with the first line of its message."""
    import torch

    try:
        torch.testing.assert_close(actual, expected, **kw)
    except AssertionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "values differ"
        raise Fail(f"{what}: {first}") from None


def is_value_error(enc) -> bool:
    return isinstance(enc, dict) and enc.get("t") == "exception" and enc.get(
        "is_value_error") is True


def call_results(R: Results, pid: str, n: int | None = None) -> list:
    """The encoded return values of a ``call`` probe (``n`` of them when given)."""
    res = R.record(pid).get("results")
    if not isinstance(res, list) or (n is not None and len(res) != n):
        raise Fail(f"{pid}: malformed result")
    return res


def values(R: Results, pid: str) -> dict:
    """The encoded values a ``scenario`` probe returned, by name."""
    found = R.record(pid).get("values")
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise Fail(f"{pid}: malformed result")
    return found
