"""Run in the sandbox by ``steps/trusted.py``: call a student's solution, save plain data.

Usage (the trusted side does this)::

    python -I -B /path/to/autograder/inside/harness.py plan.json

``-I`` keeps the working directory and every PYTHON* variable out of ``sys.path``, so a
``numpy.py`` or ``torch.py`` a student left beside the notebook cannot shadow a library; this
file imports only the standard library, NumPy and torch, and never the ``course`` package.

The plan (JSON, written by the trusted side) names the solution file, the exercise's own
sandbox-side code if it has any (a file that defines ``SCENARIOS``, see
``autograder/exercises/``), and a list of probes: grader-chosen inputs (JSON numbers or
``.npy`` files) to call the student's functions with (``call``), or to run one of the
exercise's scenarios with (``scenario``). A probe's ``forbid`` list names library functions
that raise, and are reported, if the student's code calls them during that probe.
Each probe's outcome is written as ``results/<id>.json`` plus ``results/<id>_<n>.npy`` arrays
(``allow_pickle=False``), right after the probe ran, so an endless loop in one function only
costs the probes after it. Values are described by exact type (``type(v) is float``, never a
subclass or a class that calls itself "float"), never pickled.

Everything this process reports is the student's answer: the student's code runs in this
process and may change anything in it. The trusted side decides what the answers are worth.
"""

import builtins
import json
import os
import random
import signal
import sys
import threading
import time
import traceback

_type, _float, _int, _bool, _tuple, _list, _str = type, float, int, bool, tuple, list, str
_isinstance, _len, _open, _repr = isinstance, len, open, repr
_exit, _monotonic, _sleep, _process_time = os._exit, time.monotonic, time.sleep, time.process_time
_GRACE = 5.0  # seconds past a probe's alarm before the watchdog ends the process
_MAX_ITEMS = 16


class ProbeTimeout(BaseException):
    """Raised by the alarm when one probe runs too long (BaseException: harder to swallow)."""


class ForbiddenCall(Exception):
    """Raised by a library function the exercise forbids (the call is recorded too)."""


def _alarm(signum, frame):
    raise ProbeTimeout()


class _Stub:
    """What ``get_ipython()`` returns in the harness: magics and hooks do nothing."""

    def __getattr__(self, name):
        return _Stub()

    def __call__(self, *args, **kwargs):
        return _Stub()


# Cell magics whose body is Python that the kernel runs (the magic only times or captures it).
_BODY_MAGICS = {"time", "timeit", "capture", "prun", "python", "python3"}


def to_python(source):
    """IPython syntax (magics, ``!cmd``) -> plain Python, as the kernel would see it.

    Runs here, in the sandbox and under the exec alarm: a cell built to make IPython's
    transformer slow only costs its own time limit.
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - a cell IPython cannot parse runs as it is
        return source


# Names through which code can reach a global it does not name: with any of them in the
# solution, every setup import runs (as in the kernel).
_DYNAMIC = {"exec", "eval", "globals", "locals", "vars", "__import__", "__dict__", "f_globals",
            "user_ns", "run_cell_magic", "__builtins__", "__main__"}


def _names_used(code):
    """Every name the compiled solution cell and the functions and classes it defines can
    look up (attribute names too: a superset), or None when it can reach names dynamically."""
    names, stack = set(), [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if _type(c) is _type(code))
    return None if names & _DYNAMIC else names


def _bound_names(statement):
    """The names an import statement binds, or None when that is unknown (``import *``, not
    an import)."""
    import ast

    try:
        tree = ast.parse(statement)
    except SyntaxError:
        return None
    names = set()
    for node in tree.body:
        if not _isinstance(node, (ast.Import, ast.ImportFrom)):
            return None
        for alias in node.names:
            if alias.name == "*":
                return None
            names.add(alias.asname or alias.name.split(".")[0])
    return names


class _Shell(_Stub):
    """``get_ipython()`` in the harness: a cell magic that only wraps Python runs its body."""

    def __init__(self, namespace):
        self._namespace = namespace

    def run_cell_magic(self, name, line, cell):
        if name in _BODY_MAGICS:
            exec(compile(to_python(cell), "<solution cell>", "exec"), self._namespace)


class Harness:
    def __init__(self, plan_path):
        with _open(plan_path, encoding="utf-8") as fh:
            self.plan = json.load(fh)
        self.base = os.path.dirname(os.path.abspath(plan_path))
        self.out = os.path.join(self.base, "results")
        os.makedirs(self.out, exist_ok=True)
        import numpy
        import torch

        self.np, self.torch = numpy, torch
        self.Tensor = torch.Tensor
        self.ndarray = numpy.ndarray
        self.np_save = numpy.save
        self.np_load = numpy.load
        self.asarray = numpy.array  # copies, C order, keeps 0-d arrays 0-d
        self.manual_seed = torch.manual_seed
        self.from_numpy = torch.from_numpy
        self.tensor_detach = torch.Tensor.detach
        self.tensor_cpu = torch.Tensor.cpu
        self.tensor_numpy = torch.Tensor.numpy
        self.tensor_float = torch.Tensor.float
        self.no_grad = torch.no_grad
        self.bfloat16, self.float16 = torch.bfloat16, torch.float16
        self.json_dump = json.dump
        self.namespace = None
        torch.set_num_threads(1)

    # ------------------------------------------------------------------ encoding
    def enc(self, value, pid, counter):
        t = _type(value)
        if t is _bool:
            return {"t": "bool", "v": value}
        if t is _int:
            return {"t": "int", "v": value if -(2**53) < value < 2**53 else _float(value)}
        if t is _float:
            return {"t": "float", "v": value}
        if value is None:
            return {"t": "NoneType"}
        if t is _tuple or t is _list:
            items = [self.enc(v, pid, counter) for v in _list(value)[:_MAX_ITEMS]]
            return {"t": "tuple" if t is _tuple else "list", "n": _len(value), "items": items}
        if t is self.Tensor or t is self.torch.nn.Parameter:
            tensor = self.tensor_cpu(self.tensor_detach(value))
            dtype = _str(value.dtype)
            if value.dtype in (self.bfloat16, self.float16):
                tensor = self.tensor_float(tensor)
            arr = self.asarray(self.tensor_numpy(tensor))
            name = self.save(arr, pid, counter)
            return {"t": "torch.Tensor" if t is self.Tensor else "torch.nn.Parameter",
                    "dtype": dtype, "shape": _list(arr.shape), "device": _str(value.device),
                    "npy": name}
        if t is self.ndarray:
            arr = self.asarray(value)
            if arr.dtype.kind not in "biuf":
                return {"t": "numpy.ndarray", "dtype": _str(arr.dtype)}
            return {"t": "numpy.ndarray", "dtype": _str(arr.dtype), "shape": _list(arr.shape),
                    "npy": self.save(arr, pid, counter)}
        if _isinstance(value, self.np.generic):
            return {"t": "numpy." + t.__name__}
        for base, label in ((_float, "a float subclass"), (_tuple, "a tuple subclass"),
                            (self.Tensor, "a torch.Tensor subclass")):
            if _isinstance(value, base):
                return {"t": "other", "name": label}
        return {"t": "other", "name": _repr(t)[:80]}

    def save(self, arr, pid, counter):
        counter[0] += 1
        name = f"{pid}_{counter[0]}.npy"
        self.np_save(os.path.join(self.out, name), arr, allow_pickle=False)
        return name

    # ------------------------------------------------------------------ inputs
    def arg(self, spec):
        if "py" in spec:
            return spec["py"]
        arr = self.np_load(os.path.join(self.base, "inputs", spec["npy"]), allow_pickle=False)
        kind = spec.get("as", "ndarray")
        if kind == "ndarray":
            return arr
        if kind == "list":
            return arr.tolist()
        if kind == "tensor":
            tensor = self.from_numpy(arr.copy())
            if spec.get("requires_grad"):
                tensor.requires_grad_(True)
            return tensor
        if kind == "np_scalar":
            return arr[()]
        if kind == "torch_scalar":
            return self.from_numpy(arr.copy()).reshape(())
        raise ValueError(f"unknown input kind {kind}")

    def convert(self, value):
        """Input specs anywhere inside lists/dicts -> the values they describe."""
        if _isinstance(value, dict):
            if "npy" in value or "py" in value:
                return self.arg(value)
            return {k: self.convert(v) for k, v in value.items()}
        if _isinstance(value, _list):
            return [self.convert(v) for v in value]
        return value

    # ------------------------------------------------------------------ probes
    def func(self, name):
        value = self.namespace.get(name)
        if value is None:
            raise NameError(f"name {name!r} is not defined by the solution cell")
        return value

    def probe_call(self, probe, pid, counter):
        """Call a function: once, ``repeat`` times, or on each of ``calls`` (a batch)."""
        fn = self.func(probe["func"])
        calls = probe.get("calls") or [{"args": probe.get("args", []),
                                        "kwargs": probe.get("kwargs", {})}]
        results = []
        args = []
        for call in calls:
            args = [self.arg(a) for a in call.get("args", [])]
            kwargs = {k: self.arg(a) for k, a in call.get("kwargs", {}).items()}
            for _ in range(probe.get("repeat", 1)):
                try:
                    value = fn(*args, **kwargs)
                except ProbeTimeout:
                    raise
                except Exception as exc:  # the student's exception is an answer too
                    results.append({"t": "exception", "name": _type(exc).__name__,
                                    "is_value_error": _isinstance(exc, ValueError),
                                    "msg": _str(exc)[:200]})
                    continue
                results.append(self.enc(value, pid, counter))
                if "upstream" in probe:
                    (value * self.arg(probe["upstream"])).sum().backward()
        extra = {}
        if "upstream" in probe:
            extra["grad"] = self.enc(args[probe.get("grad_arg", 0)].grad, pid, counter)
        if probe.get("inputs_after"):
            extra["inputs_after"] = [self.enc(a, pid, counter) for a in args]
        return {"results": results, **extra}

    def probe_scenario(self, probe, pid, counter):
        """Run a scenario of the exercise's sandbox code with the student's class or function."""
        cls = self.func(probe["cls"])
        data = self.convert(probe["data"])
        out = self.scenarios[probe["scenario"]](cls, data, self.torch)
        return {"values": {k: self.enc(v, pid, counter) for k, v in out.items()}}

    # ------------------------------------------------------------------ main
    def watchdog(self):
        """End the process when a probe outlives its alarm (alarm ignored, or stuck in C code).

        The probe is recorded as timed out first; the probes after it are lost, so only the
        cells that need them fail.
        """
        while True:
            _sleep(0.5)
            current, deadline = self.current
            if current is not None and _monotonic() > deadline + _GRACE:
                try:
                    self.write(current, {"status": "timeout"})
                finally:
                    _exit(3)

    def start(self, pid, seconds, cpu_seconds=None):
        """Alarms for one step: ``seconds`` by the clock, ``cpu_seconds`` of this process's CPU
        time (ITIMER_PROF: a spinning loop stops after that, however loaded the machine)."""
        self.current = (pid, _monotonic() + seconds)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        if cpu_seconds:
            signal.setitimer(signal.ITIMER_PROF, cpu_seconds)

    def stop(self):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)

    def snapshot(self):
        """What the student's code may tamper with and the harness relies on."""
        self.saved = (dict(sys.modules), _list(sys.path), dict(builtins.__dict__))

    def restore(self):
        """Put the harness's modules, import path and builtins back (fakes stay unreachable)."""
        modules, path, names = self.saved
        sys.modules.update(modules)
        sys.path[:] = path
        builtins.__dict__.update(names)

    def load_sandbox_code(self):
        """The exercise's own sandbox-side code (its SCENARIOS), run before the student's."""
        name = self.plan.get("sandbox_code")
        self.scenarios = {}
        if name:
            with _open(os.path.join(self.base, name), encoding="utf-8") as fh:
                namespace = {"__name__": "exercise_sandbox_code"}
                exec(compile(fh.read(), name, "exec"), namespace)
            self.scenarios = namespace["SCENARIOS"]

    def setup(self, needed):
        """The instructor's import statements (from source/), each on its own, as the notebook
        runs them before the solution cell; one that fails is skipped.

        Only the statements that bind a name in ``needed`` run (``None``: all of them): a
        solution that uses ``np`` and ``torch`` does not wait for pandas or scikit-learn.
        """
        for statement in self.plan.get("setup", []):
            bound = _bound_names(statement)
            if needed is not None and bound is not None and not bound & needed:
                continue
            try:
                exec(compile(statement, "<setup>", "exec"), self.namespace)
            except Exception:  # noqa: BLE001, S110 - the kernel would have failed the same way
                pass

    def exec_solution(self):
        """Run the solution cell in a fresh namespace; its outcome is written as "exec"."""
        with _open(os.path.join(self.base, self.plan["solution"]), encoding="utf-8") as fh:
            source = fh.read()
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__,
                          "display": print}
        shell = _Shell(self.namespace)
        self.namespace["get_ipython"] = lambda: shell
        status = {"t": "ok"}
        self.start("exec", _float(self.plan.get("exec_seconds", 60)))
        try:
            code = compile(to_python(source), "<solution cell>", "exec")
            self.setup(_names_used(code))
            self.calls = []  # what the instructor's imports called is not the student's
            exec(code, self.namespace)
        except ProbeTimeout:
            status = {"t": "timeout"}
        except BaseException as exc:  # noqa: BLE001 - SystemExit etc. are answers too
            status = {"t": "exception", "name": _type(exc).__name__,
                      "tb": traceback.format_exc(limit=-3)[-1500:]}
        finally:
            self.stop()
            self.current = (None, 0.0)
            self.restore()
        if self.calls:
            status["forbidden_calls"] = sorted(set(self.calls))
        self.write("exec", status)

    def forbid_everywhere(self, names):
        """The exercise's forbidden names, for the whole run (solution cell and every probe).

        A module name forbids each of its public functions and classes. A function becomes
        one that records the call (in ``self.calls``, the current probe's list) and raises; a
        class becomes a subclass whose ``__init__`` does, so ``class X(Forbidden)`` still runs.
        """
        import importlib

        harness = self

        def replacement(name, original):
            def forbidden(*args, **kwargs):
                harness.calls.append(name)
                raise ForbiddenCall(f"{name} may not be used in this exercise")

            if _isinstance(original, _type):
                return _type(original.__name__, (original,), {"__init__": forbidden})
            return forbidden

        for name in names:
            try:
                module = importlib.import_module(name)
                targets = [(module, a) for a in dir(module) if not a.startswith("_")
                           and callable(getattr(module, a, None))
                           and getattr(getattr(module, a), "__module__", "").startswith(name)]
                label = name + "."
            except ImportError:
                module_name, _, attr = name.rpartition(".")
                try:
                    module = importlib.import_module(module_name)
                except ImportError:
                    continue
                targets = [(module, attr)] if hasattr(module, attr) else []
                label = module_name + "."
            for module, attr in targets:
                setattr(module, attr, replacement(label + attr, getattr(module, attr)))

    def forbid(self, names, calls):
        """Replace each dotted library function by one that records the call and raises.

        Returns what to put back. Modules are taken from the harness's own snapshot, so a
        student's fake module in sys.modules is not what gets patched.
        """
        modules = self.saved[0]
        patched = []
        for name in names:
            module_name, _, attr = name.rpartition(".")
            module = modules.get(module_name)
            if module is None or not hasattr(module, attr):
                continue

            def forbidden(*args, _name=name, **kwargs):
                calls.append(_name)
                raise ForbiddenCall(f"{_name} may not be used in this exercise")

            patched.append((module, attr, getattr(module, attr)))
            setattr(module, attr, forbidden)
        return patched

    def run_probe(self, probe, seconds, cpu_seconds=None):
        pid, counter, calls = probe["id"], [0], []
        self.calls = calls
        seed = probe.get("seed", 0)
        random.seed(seed)
        self.np.random.seed(seed % 2**32)
        self.manual_seed(seed)
        handler = {"call": self.probe_call, "scenario": self.probe_scenario}[probe["kind"]]
        patched = self.forbid(probe.get("forbid", []), calls)
        cpu = _process_time()
        self.start(pid, seconds, cpu_seconds)
        try:
            record = {"status": "ok", **handler(probe, pid, counter)}
        except ProbeTimeout:
            record = {"status": "timeout"}
        except BaseException as exc:  # noqa: BLE001
            record = {"status": "error", "error": f"{_type(exc).__name__}: {exc}"[:300]}
        finally:
            self.stop()
            for module, attr, original in patched:
                setattr(module, attr, original)
            self.restore()
        if calls:
            record["forbidden_calls"] = sorted(set(calls))
        record["cpu"] = _process_time() - cpu  # budget.py reads the reference solution's
        self.write(pid, record)
        self.current = (None, 0.0)

    def run(self):
        self.calls = []
        self.forbid_everywhere(self.plan.get("forbidden", []))
        self.snapshot()
        self.current = (None, 0.0)
        threading.Thread(target=self.watchdog, daemon=True).start()
        signal.signal(signal.SIGALRM, _alarm)
        signal.signal(signal.SIGPROF, _alarm)
        self.load_sandbox_code()
        self.exec_solution()
        seconds = _float(self.plan.get("probe_seconds", 20))
        cpu_seconds = self.plan.get("probe_cpu_seconds")
        cpu_seconds = _float(cpu_seconds) if cpu_seconds else None
        for probe in self.plan["probes"]:
            self.run_probe(probe, seconds, cpu_seconds)
        self.write("done", {"status": "ok"})

    def write(self, pid, record):
        path = os.path.join(self.out, f"{pid}.json")
        tmp = path + ".tmp"
        with _open(tmp, "w", encoding="utf-8") as fh:
            self.json_dump(record, fh)
        os.replace(tmp, path)


def main():
    if _len(sys.argv) != 2:
        raise SystemExit("usage: python -I harness.py plan.json")
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the student's prints go nowhere; results travel in files only
    os.dup2(devnull, 2)
    Harness(sys.argv[1]).run()
    # every result is on disk: do not wait for threads or exit hooks the student left behind
    os._exit(0)


if __name__ == "__main__":
    main()
