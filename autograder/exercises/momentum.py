"""Chapter 4: ``MomentumSGD``, run side by side with ``torch.optim.SGD`` on the grader's data.

The scenarios of ``momentum_sandbox.py`` run twice on the same inputs: in the sandbox with the
student's class, and here with :func:`reference_sgd`; every recorded tensor must match.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from autograder.exercises import Exercise, known, momentum_sandbox
from autograder.protocol import Check, Fail, Plan, assert_close, tensor, values

_REFERENCE_SGD = None


def reference_sgd():
    """torch.optim.SGD behind MomentumSGD's signature, with its buffer exposed as "velocity"."""
    global _REFERENCE_SGD
    if _REFERENCE_SGD is None:
        import torch

        class ReferenceSGD(torch.optim.SGD):
            def __init__(self, params, lr, momentum=0.9):
                super().__init__(params, lr=lr, momentum=momentum)

            @torch.no_grad()
            def step(self, closure=None):
                loss = super().step(closure)
                for group in self.param_groups:
                    for p in group["params"]:
                        buf = self.state.get(p, {}).get("momentum_buffer")
                        if buf is not None:
                            self.state[p]["velocity"] = buf
                return loss

        _REFERENCE_SGD = ReferenceSGD
    return _REFERENCE_SGD


class Scenarios:
    """The scenario probes of one plan, and the comparison of their results with the reference."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.data: dict[str, tuple[str, dict]] = {}  # pid -> (scenario name, data spec)
        self.cache: dict[str, dict] = {}

    def add(self, pid: str, name: str, **data) -> None:
        self.plan.add("scenario", pid, scenario=name, cls="MomentumSGD", data=data)
        self.data[pid] = (name, data)

    def arr(self, a) -> dict:
        return self.plan.inp(np.asarray(a), "ndarray")

    def linear_init(self, sizes, dtype) -> list[dict]:
        out = []
        for d_in, d_out in sizes:
            bound = 1 / math.sqrt(d_in)
            out.append(self.arr(self.plan.rng.uniform(-bound, bound, (d_out, d_in)).astype(dtype)))
            out.append(self.arr(self.plan.rng.uniform(-bound, bound, d_out).astype(dtype)))
        return out

    def _resolve(self, value):
        if isinstance(value, dict):
            if "npy" in value:
                return self.plan.inputs[value["npy"]]
            return {k: self._resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        return value

    def reference(self, pid: str) -> dict:
        if pid not in self.cache:
            import torch

            name, data = self.data[pid]
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the harness's setting: bit-identical forward passes
            try:
                self.cache[pid] = momentum_sandbox.SCENARIOS[name](
                    reference_sgd(), self._resolve(data), torch)
            finally:
                torch.set_num_threads(threads)
        return self.cache[pid]

    def compare(self, R, pid: str, exact_keys=()) -> dict:
        """The student's values of ``pid``, each checked against torch.optim.SGD's."""
        import torch

        found = values(R, pid)
        for key, want in self.reference(pid).items():
            enc, what = found.get(key), f"{pid}: {key}"
            if enc is None:
                raise Fail(f"{what} missing")
            if key in exact_keys:
                continue
            if isinstance(want, torch.Tensor):
                got = tensor(R, enc, what, str(want.dtype), tuple(want.shape))
                assert_close(got, want, f"{what} differs from torch.optim.SGD")
            elif want is None:
                if enc.get("t") != "NoneType":
                    raise Fail(f"{what}: step() without a closure must return None")
            elif isinstance(want, bool):
                if enc.get("t") != "bool" or enc.get("v") is not want:
                    raise Fail(f"{what} must be {want}")
            elif isinstance(want, float):
                if enc.get("t") not in ("float", "int") or enc.get("v") != want:
                    raise Fail(f"{what} must be {want}")
        return found


# How a velocity rule moves a parameter: (velocity or None, gradient, momentum, lr) ->
# (new velocity, what is subtracted from the parameter). The first is PyTorch's.
RULES = {
    "torch": lambda v, g, mu, lr: (g if v is None else mu * v + g,) * 2,
    "dampened": lambda v, g, mu, lr: (g if v is None else mu * v + (1 - mu) * g,) * 2,
    "forgotten": lambda v, g, mu, lr: (g, g),
    "sign_flipped": lambda v, g, mu, lr: (g if v is None else mu * v - g,) * 2,
}


def _follows(R, s: Scenarios, pid: str, rule: str) -> bool:
    """Does the parameter of the given-gradients scenario ``pid`` move as ``rule`` says?"""
    import torch

    _, data = s.data[pid]
    data = s._resolve(data)
    w, v, found = data["init"].astype(np.float64), None, values(R, pid)
    for i, g in enumerate(data["grads"].astype(np.float64)):
        v, step = RULES[rule](v, g, data["momentum"], data["lr"])
        w = w - data["lr"] * step
        got = tensor(R, found.get(f"step{i}"), f"{pid} step {i}").double()
        if not torch.allclose(got, torch.from_numpy(w), rtol=1e-4, atol=1e-6):
            return False
    return True


def _same(R, found: dict, key: str, want) -> bool:
    import torch

    got = tensor(R, found.get(key), key).double()
    return got.shape == want.shape and torch.allclose(got, want.double(), rtol=1e-4, atol=1e-6)


def _one_velocity(R, s: Scenarios) -> bool:
    """ms_two as one velocity shared by both parameters would move them."""
    import torch

    _, data = s.data["ms_two"]
    d = s._resolve(data)
    ws, v = {"a": d["a0"].astype(np.float64), "b": d["b0"].astype(np.float64)}, None
    for _ in range(2):
        for key, g in (("a", d["ga"]), ("b", d["gb"])):
            v = g.astype(np.float64) if v is None else d["momentum"] * v + g
            ws[key] = ws[key] - d["lr"] * v
    found = values(R, "ms_two")
    return all(_same(R, found, k, torch.from_numpy(w)) for k, w in ws.items())


def _defaults_only(R, s: Scenarios) -> bool:
    """mg_two as torch.optim.SGD moves it when every group has the defaults' lr and momentum."""
    import torch

    name, data = s.data["mg_two"]
    data = s._resolve(data)
    data = {**data, "lr2": data["lr"], "mom2": data["momentum"]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Scenarios.reference
    try:
        want = momentum_sandbox.SCENARIOS[name](reference_sgd(), data, torch)
    finally:
        torch.set_num_threads(threads)
    found = values(R, "mg_two")
    return all(_same(R, found, k, w) for k, w in want.items() if isinstance(w, torch.Tensor))


def _crashes_on_none_grad(R) -> bool:
    try:
        values(R, "mg_two")
    except Fail as exc:
        return "NoneType" in str(exc)
    return False


def recognise(s: Scenarios) -> None:
    """The known mistakes, from the scenarios' results."""
    grads = "ms_grads_float64_1"

    def right_basics(R):
        s.compare(R, "ms_basic")
        return _follows(R, s, grads, "torch")

    def lr_in_velocity(R):
        found, data = values(R, "ms_basic"), s._resolve(s.data["ms_basic"][1])
        import torch

        g = torch.from_numpy(data["g"]).double()
        return (_same(R, found, "w1", s.reference("ms_basic")["w1"])
                and _same(R, found, "v1", data["lr"] * g))

    def velocity_lost(R):
        found = values(R, "ms_own_velocity")
        return (_follows(R, s, grads, "torch")
                and _same(R, found, "step1", tensor(R, found.get("step0"), "step0")))

    def gradient_steps(R):
        v2 = s.reference("ms_basic")["v2"]
        return (_follows(R, s, grads, "forgotten")
                and _same(R, values(R, "ms_basic"), "v2", v2))

    def forgotten(R):
        found, g = values(R, "ms_basic"), s.reference("ms_basic")["v1"]
        return _follows(R, s, grads, "forgotten") and _same(R, found, "v2", g)

    s.plan.recognise("momentum_dampened", lambda R: _follows(R, s, grads, "dampened"))
    s.plan.recognise("momentum_forgotten", forgotten)
    s.plan.recognise("momentum_steps_with_gradient", gradient_steps)
    s.plan.recognise("momentum_sign_flipped", lambda R: _follows(R, s, grads, "sign_flipped"))
    s.plan.recognise("momentum_lr_in_velocity", lr_in_velocity)
    s.plan.recognise("momentum_velocity_aliases_grad", velocity_lost)
    s.plan.recognise("momentum_one_velocity_for_all", lambda R: _one_velocity(R, s))
    s.plan.recognise("momentum_no_grad_check", lambda R: right_basics(R)
                     and _crashes_on_none_grad(R))
    s.plan.recognise("momentum_defaults_not_groups", lambda R: right_basics(R)
                     and _defaults_only(R, s))


def single_step(s: Scenarios) -> Check:
    """test_momentum_single_step: argument checks, one and two steps, dtypes and shapes."""
    rng = s.plan.rng
    bad_args = [{"lr": -0.1}, {"lr": 0.1, "momentum": 1.0}, {"lr": 0.1, "momentum": -0.5},
                {"lr": -1e-3, "momentum": 0.5}, {"lr": 0.1, "momentum": 1.5}]
    for i, kwargs in enumerate(bad_args):
        s.plan.add("scenario", f"ms_bad{i}", scenario="construct", cls="MomentumSGD",
                   data={"kwargs": kwargs})

    def f32(shape):
        return rng.standard_normal(shape).astype(np.float32)

    s.add("ms_basic", "basic", w0=s.arr(f32(2)), g=s.arr(f32(2)),
          lr=float(rng.uniform(0.05, 0.3)), momentum=float(rng.uniform(0.5, 0.95)))
    s.add("ms_two", "two_params", a0=s.arr(f32(3)), b0=s.arr(f32(3)), ga=s.arr(f32(3)),
          gb=s.arr(f32(3)), lr=1.0, momentum=0.5)
    s.add("ms_closure", "default_and_closure", x0=s.arr(f32(1) + 2.0),
          lr=float(rng.uniform(0.05, 0.2)))
    for dtype in (np.float32, np.float64):
        for shape in ((5,), (3, 4), (2, 3, 2)):
            s.add(f"ms_grads_{np.dtype(dtype).name}_{len(shape)}", "given_grads",
                  init=s.arr(rng.standard_normal(shape).astype(dtype)),
                  grads=s.arr(rng.standard_normal((3, *shape)).astype(dtype)),
                  lr=0.03, momentum=0.8)
    s.add("ms_lr0", "given_grads", init=s.arr(np.ones(4, np.float32)),
          grads=s.arr(np.ones((1, 4), np.float32)), lr=0.0, momentum=0.5)
    s.add("ms_mom0", "given_grads", init=s.arr(np.ones(4, np.float32)),
          grads=s.arr(np.ones((3, 4), np.float32)), lr=0.5, momentum=0.0)
    s.add("ms_own_velocity", "given_grads", init=s.arr(np.zeros(2, np.float32)),
          grads=s.arr(np.ones((2, 2), np.float32)), lr=1.0, momentum=0.5, zero_inplace=True)

    def check(R):
        for i, kwargs in enumerate(bad_args):
            if values(R, f"ms_bad{i}").get("value_error", {}).get("v") is not True:
                raise Fail(f"MomentumSGD(..., **{kwargs}) must raise ValueError")
        found = s.compare(R, "ms_basic")
        if found["is_optimizer"].get("v") is not True:
            raise Fail("MomentumSGD must subclass torch.optim.Optimizer")
        enc = values(R, "ms_closure").get("momentum", {})
        if not (enc.get("t") in ("float", "int") and enc.get("v") == 0.9):
            raise Fail("the default momentum must be 0.9")
        for pid in s.data:
            if pid.startswith("ms_") and pid != "ms_basic":
                s.compare(R, pid)

    return check


def trajectories(s: Scenarios) -> Check:
    """test_momentum_trajectory: whole training runs, with lr changes and a scheduler."""
    rng = s.plan.rng

    def trajectory(pid, layers, sizes, momentum, *, lr=0.05, steps=60, lr_changes=None,
                   set_to_none=True, dtype=np.float64, n=32, step_lr=None):
        data = dict(layers=layers, dtype=np.dtype(dtype).name, init=s.linear_init(sizes, dtype),
                    x=s.arr(rng.standard_normal((n, layers[0][1])).astype(dtype)),
                    y=s.arr(rng.integers(0, 3, n).astype(np.int64)), lr=lr, momentum=momentum,
                    steps=steps, set_to_none=set_to_none,
                    lr_changes={str(k): v for k, v in (lr_changes or {}).items()})
        if step_lr:
            data["step_lr"] = list(step_lr)
        s.add(pid, "trajectory", **data)

    small = [["linear", 4, 3]]
    mlp = [["linear", 6, 16], ["tanh"], ["linear", 16, 8], ["relu"], ["linear", 8, 3]]
    mlp_sizes = [(6, 16), (16, 8), (8, 3)]
    trajectory("mt_small", small, [(4, 3)], 0.9)
    for mu in (0.0, 0.5, 0.99):
        trajectory(f"mt_small_{mu}", small, [(4, 3)], mu)
    trajectory("mt_mlp", mlp, mlp_sizes, 0.9, steps=80)
    trajectory("mt_lr_changes", mlp, mlp_sizes, 0.9, lr_changes={20: 0.2, 40: 0.01})
    trajectory("mt_lr_changes_small", small, [(4, 3)], 0.7, steps=50,
               lr_changes={10: 0.5, 30: 0.02})
    trajectory("mt_zero_inplace", mlp, mlp_sizes, 0.8, steps=50, set_to_none=False)
    trajectory("mt_steplr", [["linear", 5, 10], ["relu"], ["linear", 10, 3]],
               [(5, 10), (10, 3)], 0.9, lr=0.2, steps=50, dtype=np.float32, n=40,
               step_lr=(10, 0.3))

    def check(R):
        for pid in s.data:
            if pid.startswith("mt_"):
                s.compare(R, pid)

    return check


def param_groups(s: Scenarios) -> Check:
    """test_momentum_param_groups: groups with their own lr/momentum, unused parameters."""
    rng = s.plan.rng
    s.add("mg_two", "two_groups", layers=[["linear", 4, 8], ["relu"], ["linear", 8, 3]],
          dtype="float64", init=s.linear_init([(4, 8), (8, 3)], np.float64),
          frozen=s.arr(np.ones(3)), x=s.arr(rng.standard_normal((16, 4))),
          y=s.arr(rng.integers(0, 3, 16).astype(np.int64)), lr=0.1, momentum=0.9, lr2=0.02,
          mom2=0.5, steps=30)
    s.add("mg_three", "three_groups", i1=s.linear_init([(3, 6)], np.float64),
          i2=s.linear_init([(6, 4)], np.float64), i3=s.linear_init([(4, 2)], np.float64),
          extra=s.arr(rng.standard_normal(2)), x=s.arr(rng.standard_normal((20, 3))),
          y=s.arr(rng.integers(0, 2, 20).astype(np.int64)), lr=0.05, momentum=0.9, m1=0.99,
          lr2=0.3, lr3=0.01, steps=60, change1=15, new_lr0=0.2, change2=35, new_lr1=0.02,
          new_lr2=0.4, unused=s.arr(rng.standard_normal(4).astype(np.float32)),
          used=s.arr(rng.standard_normal(4).astype(np.float32)))

    def check(R):
        found = s.compare(R, "mg_two", exact_keys=("frozen_grad_is_none",))
        if found["frozen_grad_is_none"].get("v") is not True:
            raise Fail("a tensor without a gradient must be left alone (its .grad stays None)")
        found = s.compare(R, "mg_three", exact_keys=("unused_grad_is_none",))
        if found["unused_grad_is_none"].get("v") is not True:
            raise Fail("a parameter never used by the loss must keep .grad None")

    return check


def plan(p: Plan) -> dict[str, Check]:
    s = Scenarios(p)
    checks = {"test_momentum_single_step": single_step(s),
              "test_momentum_trajectory": trajectories(s),
              "test_momentum_param_groups": param_groups(s)}
    recognise(s)
    return checks


MISTAKES = known(
    "momentum_dampened", "momentum_forgotten", "momentum_steps_with_gradient",
    "momentum_sign_flipped", "momentum_lr_in_velocity", "momentum_velocity_aliases_grad",
    "momentum_one_velocity_for_all", "momentum_no_grad_check", "momentum_defaults_not_groups")


EXERCISE = Exercise("04_learning_rate", "momentum_solution", ("MomentumSGD",), plan,
                    sandbox_code=Path(momentum_sandbox.__file__),
                    forbidden=("torch.optim.SGD", "torch.optim.sgd.SGD", "torch.optim.sgd.sgd",
                               "torch.optim._functional.sgd"),
                    # the probes build optimizers: torch.optim imports torch._dynamo then (2-3 s)
                    harness_imports=("torch._dynamo",), mistakes=MISTAKES)
