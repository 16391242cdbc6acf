"""Chapter 5: ``dropout`` and ``Dropout``, checked by exact scaling and binomial bounds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from autograder.exercises import Exercise, dropout_sandbox, known
from autograder.protocol import (
    Check,
    Fail,
    Plan,
    assert_close,
    call_results,
    is_value_error,
    py,
    tensor,
    type_name,
    values,
)


def _torch_of(arr):
    import torch

    return torch.from_numpy(np.array(arr))


def _uniform(plan: Plan, shape, dtype=np.float64) -> np.ndarray:
    """Values in [0.5, 1.5): no zeros, so an output of 0 means "dropped"."""
    return (plan.rng.random(shape) + 0.5).astype(dtype)


def _tin(plan: Plan, arr, **extra) -> dict:
    return plan.inp(arr, "tensor", **extra)


def _unchanged(R, pid: str, original, what: str) -> None:
    after = R.record(pid).get("inputs_after")
    if not isinstance(after, list) or not after:
        raise Fail(f"{what}: malformed result")
    assert_close(tensor(R, after[0], what), _torch_of(original), what, rtol=0, atol=0)


def _exact(R, pid: str, what: str, want, shape, dtype="torch.float64") -> None:
    out = tensor(R, call_results(R, pid, 1)[0], what, dtype, shape)
    assert_close(out, _torch_of(want), what, rtol=0, atol=0)


def _recognise_basics(plan: Plan, zs: list, eval_ps: list, z64) -> None:
    """The mistakes that show at evaluation, in the dtype, the input and p = 1."""
    def eval_outputs(R):
        res = call_results(R, "db_eval_many", len(eval_ps))
        return [(tensor(R, enc, "eval output", None, z.shape).double(), _torch_of(z), p)
                for enc, z, p in zip(res, zs, eval_ps, strict=True)]

    def f64_dtype(R):
        return call_results(R, "db_dtype_float64", 1)[0].get("dtype") == "torch.float32"

    def input_changed(R):
        after = R.record("db_f64").get("inputs_after")
        changed = tensor(R, after[0] if isinstance(after, list) and after else None, "x")
        return not bool((changed.double() == _torch_of(z64)).all())

    def nan_at_p1(R):
        return bool(tensor(R, call_results(R, "db_p1", 1)[0], "dropout(x, 1)").isnan().all())

    plan.recognise("dropout_active_at_eval", lambda R: all(
        bool((out == 0).any()) for out, _, _ in eval_outputs(R)))
    plan.recognise("dropout_scaling_at_eval", lambda R: all(
        bool(((out - z * (1 - p)).abs() < 1e-9).all()) for out, z, p in eval_outputs(R)))
    plan.recognise("dropout_float32_output", f64_dtype)
    plan.recognise("dropout_in_place", input_changed)
    plan.recognise("dropout_nan_at_p1", nan_at_p1)


def basics(plan: Plan) -> Check:
    """test_dropout_basics: eval is the identity, p=0 and p=1, bad p, dtypes, no in-place."""
    rng = plan.rng
    x = rng.standard_normal((4, 5))
    plan.add("call", "db_eval", func="dropout", args=[_tin(plan, x), py(0.5)],
             kwargs={"training": py(False)}, inputs_after=True)
    plan.add("call", "db_p0", func="dropout", args=[_tin(plan, x), py(0.0)], inputs_after=True)
    plan.add("call", "db_p1", func="dropout", args=[_tin(plan, x), py(1.0)], inputs_after=True)
    bad_ps, xb = [-0.1, 1.5, -1e-6, 1.000001, 2.0, -3], _tin(plan, x)
    plan.add("call", "db_bad", func="dropout", calls=[{"args": [xb, py(b)]} for b in bad_ps])
    dtypes = [(np.float32, "torch.float32"), (np.float64, "torch.float64")]
    for dt, _ in dtypes:
        plan.add("call", f"db_dtype_{np.dtype(dt).name}", func="dropout",
                 args=[_tin(plan, rng.standard_normal((3, 7, 2)).astype(dt)), py(0.3)])
    eval_ps = [0.1, 0.2, 0.5, 0.8, 0.95]
    zs = [_uniform(plan, (50, 40)) for _ in eval_ps]
    plan.add("call", "db_eval_many", func="dropout",
             calls=[{"args": [_tin(plan, z), py(p)], "kwargs": {"training": py(False)}}
                    for z, p in zip(zs, eval_ps, strict=True)])
    z64 = _uniform(plan, 10_000)
    plan.add("call", "db_f64", func="dropout", args=[_tin(plan, z64), py(0.3)],
             inputs_after=True)
    plan.add("call", "db_f64_eval", func="dropout", args=[_tin(plan, z64), py(0.3)],
             kwargs={"training": py(False)}, inputs_after=True)
    w = rng.standard_normal((6, 3))
    plan.add("call", "db_p1_w", func="dropout", args=[_tin(plan, w), py(1.0)])
    plan.add("call", "db_p0_w", func="dropout", args=[_tin(plan, w), py(0.0)],
             kwargs={"training": py(True)})
    _recognise_basics(plan, zs, eval_ps, z64)

    def check(R):
        _exact(R, "db_eval", "training=False must return the input unchanged", x, x.shape)
        _exact(R, "db_p0", "p=0 must be the identity", x, x.shape)
        _exact(R, "db_p1", "p=1 must drop every element", np.zeros_like(x), x.shape)
        for pid, what in (("db_eval", "eval"), ("db_p0", "p=0"), ("db_p1", "p=1")):
            _unchanged(R, pid, x, f"dropout must not modify its input ({what})")
        for enc, b in zip(call_results(R, "db_bad", len(bad_ps)), bad_ps, strict=True):
            if not is_value_error(enc):
                raise Fail(f"dropout(x, {b}) must raise ValueError, got {type_name(enc)}")
        for dt, tname in dtypes:
            tensor(R, call_results(R, f"db_dtype_{np.dtype(dt).name}", 1)[0],
                   f"dropout of a {tname} input", tname, (3, 7, 2))
        res = call_results(R, "db_eval_many", len(eval_ps))
        for enc, z, p in zip(res, zs, eval_ps, strict=True):
            out = tensor(R, enc, f"dropout(z, {p}, training=False)", "torch.float64", z.shape)
            assert_close(out, _torch_of(z), f"eval must be the identity for p={p}", rtol=0,
                         atol=0)
        out = tensor(R, call_results(R, "db_f64", 1)[0], "dropout of float64 (training)",
                     "torch.float64", z64.shape)
        kept = out != 0
        assert_close(out[kept], _torch_of(z64)[kept] / 0.7, "survivors must equal x / (1-p)")
        _unchanged(R, "db_f64", z64, "dropout must not modify its input in place (training)")
        _unchanged(R, "db_f64_eval", z64, "dropout must not modify its input in place (eval)")
        out = tensor(R, call_results(R, "db_p1_w", 1)[0], "dropout(w, 1.0)", "torch.float64",
                     w.shape)
        if not bool((out == 0).all()):
            raise Fail("p=1 must zero every element")
        _exact(R, "db_p0_w", "p=0 must be the identity", w, w.shape)

    return check


def _check_stats(out, z, p: float, what: str) -> None:
    """Binomial bounds on the fraction dropped (overall, per row, per column); exact scaling."""
    zt = _torch_of(z)
    m = zt.numel()
    dropped_mask = out == 0
    dropped = dropped_mask.double().mean().item()
    if not abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / m):
        raise Fail(f"{what}: fraction dropped {dropped:.4f}, expected {p} "
                   "(each element dropped with probability p)")
    kept = ~dropped_mask
    assert_close(out[kept], zt[kept] / (1 - p), f"{what}: survivors must equal x / (1-p)")
    mean_sigma = math.sqrt((zt.double() ** 2).sum().item() * p / (1 - p)) / m
    if not abs(out.double().mean().item() - zt.double().mean().item()) < 5 * mean_sigma:
        raise Fail(f"{what}: the mean must be preserved in expectation")
    if zt.dim() == 2:
        rows, cols = zt.shape
        row_frac = dropped_mask.double().mean(dim=1)
        col_frac = dropped_mask.double().mean(dim=0)
        if not bool(((row_frac - p).abs() < 6 * math.sqrt(p * (1 - p) / cols)).all()):
            raise Fail(f"{what}: rows are not dropped independently")
        if not bool(((col_frac - p).abs() < 6 * math.sqrt(p * (1 - p) / rows)).all()):
            raise Fail(f"{what}: columns are not dropped independently")


def _fresh_masks(R, big, z60) -> None:
    import torch

    a, b = (tensor(R, enc, "dropout(x, 0.5)", "torch.float64", big.shape)
            for enc in call_results(R, "ds_two", 2))
    if torch.equal(a == 0, b == 0):
        raise Fail("each call must draw a fresh random mask")
    masks = torch.stack([tensor(R, enc, "dropout(z, 0.5)", "torch.float64", z60.shape) == 0
                         for enc in call_results(R, "ds_60", 60)])
    per_element = masks.double().mean(dim=0)
    if not (bool((per_element > 0).all()) and bool((per_element < 1).all())):
        raise Fail("the same mask is reused across calls; draw a new one every call")
    if not abs(masks.double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / masks.numel()):
        raise Fail("over 60 calls the fraction dropped is not p")
    distinct = {tuple(mk.nonzero().flatten().tolist()[:50]) for mk in masks}
    if len(distinct) != 60:
        raise Fail("masks repeat between calls")


def _recognise_statistics(plan: Plan, cases: list, big) -> None:
    """The mistakes that show in the fraction dropped, the survivors and the masks."""
    def grid(R, p):
        pid, z, _ = next(c for c in cases if c[0] == f"ds_grid_{p}")
        return tensor(R, call_results(R, pid, 1)[0], pid, None, z.shape).double(), _torch_of(z)

    def survivors_are(scale):
        def recognise(R):
            out, z = grid(R, 0.3)
            kept = out != 0
            return bool(kept.any()) and bool(((out[kept] - z[kept] * scale).abs() < 1e-9).all())
        return recognise

    def keeps_with_p(R):
        return all(abs((grid(R, p)[0] == 0).double().mean().item() - (1 - p)) < 0.01
                   for p in (0.1, 0.9))

    def rows_alike(R):
        dropped = grid(R, 0.3)[0] == 0
        return bool((dropped == dropped[0]).all())

    def same_masks(R):
        a, b = (tensor(R, enc, "ds_two", None, big.shape) for enc in call_results(R, "ds_two", 2))
        return bool(((a == 0) == (b == 0)).all())

    plan.recognise("dropout_keeps_with_probability_p", keeps_with_p)
    plan.recognise("dropout_no_scaling", survivors_are(1.0))
    plan.recognise("dropout_divides_by_p", survivors_are(1 / 0.3))
    plan.recognise("dropout_one_mask_per_batch", rows_alike)
    plan.recognise("dropout_same_mask_every_call", same_masks)


def statistics(plan: Plan) -> Check:
    """test_dropout_statistics: the fraction dropped, fresh masks, float32."""
    big = _uniform(plan, 200_000)
    cases = [("ds_big_0.2", big, 0.2), ("ds_big_0.5", big, 0.5)]
    for p in (0.1, 0.3, 0.7, 0.9):
        cases.append((f"ds_grid_{p}", _uniform(plan, (400, 500)), p))
    for pid, z, p in cases:
        plan.add("call", pid, func="dropout", args=[_tin(plan, z), py(p)])
    plan.add("call", "ds_two", func="dropout", args=[_tin(plan, big), py(0.5)], repeat=2)
    z60 = _uniform(plan, 2000)
    plan.add("call", "ds_60", func="dropout", args=[_tin(plan, z60), py(0.5)], repeat=60)
    plan.add("call", "ds_ones", func="dropout", args=[_tin(plan, np.ones(1000)), py(0.4)],
             repeat=20)
    z32 = _uniform(plan, 100_000, np.float32)
    plan.add("call", "ds_f32", func="dropout", args=[_tin(plan, z32), py(0.25)])
    _recognise_statistics(plan, cases, big)

    def check(R):
        for pid, z, p in cases:
            out = tensor(R, call_results(R, pid, 1)[0], f"dropout(x, {p})", "torch.float64",
                         z.shape)
            _check_stats(out, z, p, f"p={p}")
        _fresh_masks(R, big, z60)
        for enc in call_results(R, "ds_ones", 20):
            out = tensor(R, enc, "dropout(ones, 0.4)", "torch.float64", (1000,))
            frac = (out == 0).double().mean().item()
            if not 0.25 < frac < 0.55:
                raise Fail(f"fraction dropped {frac} in one call: draw one Bernoulli per element")
        out = tensor(R, call_results(R, "ds_f32", 1)[0], "dropout of float32", "torch.float32",
                     z32.shape)
        kept = out != 0
        if not abs((~kept).float().mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 100_000):
            raise Fail("float32: fraction dropped is not p")
        assert_close(out[kept], _torch_of(z32)[kept] / 0.75, "float32: survivors must be x/(1-p)")

    return check


def gradient(plan: Plan) -> Check:
    """test_dropout_gradient: upstream * mask / (1-p) in training, unchanged otherwise."""
    rng = plan.rng
    cases = [("dg_ones", _uniform(plan, 1000), 0.3, np.ones(1000), True)]
    for p in (0.1, 0.6, 0.85):
        cases.append((f"dg_{p}", _uniform(plan, (300, 20)), p, rng.standard_normal((300, 20)),
                      True))
    cases.append(("dg_eval", rng.standard_normal(50), 0.5, rng.standard_normal(50), False))
    cases.append(("dg_p0", rng.standard_normal(50), 0.0, rng.standard_normal(50), True))
    for pid, z, p, up, training in cases:
        plan.add("call", pid, func="dropout", args=[_tin(plan, z, requires_grad=True), py(p)],
                 kwargs={"training": py(training)}, upstream=_tin(plan, up))

    def no_gradient(R):
        try:
            R.record("dg_0.6")
        except Fail as exc:  # backward() through the output found no graph
            return "does not require grad" in str(exc)
        return False

    plan.recognise("dropout_numpy_round_trip", no_gradient)

    def check(R):
        for pid, z, p, up, training in cases:
            what = f"dropout(x, {p}, training={training})"
            out = tensor(R, call_results(R, pid, 1)[0], what, None, z.shape)
            genc = R.record(pid).get("grad")
            if not isinstance(genc, dict) or genc.get("t") != "torch.Tensor":
                raise Fail(f"{what}: no gradient reached x: dropout must be differentiable "
                           "(no .detach(), no NumPy round trip)")
            grad = tensor(R, genc, f"{what}: x.grad", "torch.float64", z.shape)
            if training and p > 0:
                mask = (out != 0).double()
                if pid == "dg_ones" and not 0 < int(mask.sum()) < mask.numel():
                    raise Fail(f"{what}: everything or nothing dropped")
                assert_close(grad, _torch_of(up) * mask / (1 - p),
                             f"{what}: gradient must be upstream * mask / (1-p)")
            else:
                assert_close(grad, _torch_of(up), f"{what}: the gradient must pass unchanged")

    return check


def _module_outputs(R, pid: str, n: int) -> tuple[dict, list]:
    found = values(R, pid)
    if found.get("is_module", {}).get("v") is not True:
        raise Fail("Dropout must subclass nn.Module")
    if any(found.get(k) != {"t": "int", "v": 0} for k in ("n_parameters", "n_state")):
        raise Fail("Dropout must hold no parameters or buffers")
    outs = found.get("outputs", {})
    items = outs.get("items")
    if outs.get("t") != "list" or not isinstance(items, list) or len(items) != n:
        raise Fail(f"{pid}: malformed result")
    return found, items


def _check_modes(R, pid: str, z, p: float, modes: list[str]) -> None:
    _, outs = _module_outputs(R, pid, len(modes))
    for enc, mode in zip(outs, modes, strict=True):
        out = tensor(R, enc, f"Dropout({p}) in {mode} mode", "torch.float64", z.shape)
        if mode == "eval":
            assert_close(out, _torch_of(z), "eval mode must be the identity", rtol=0, atol=0)
            continue
        frac = (out == 0).double().mean().item()
        if not abs(frac - p) < 5 * math.sqrt(p * (1 - p) / z.size):
            raise Fail(f"Dropout({p}): train mode must drop with probability p")
        assert_close(out[out != 0], _torch_of(z)[out != 0] / (1 - p),
                     f"Dropout({p}) survivors must be x/(1-p)")


def _pair(R, found: dict, key: str, what: str, shape) -> list:
    enc = found.get(key, {})
    items = enc.get("items")
    if enc.get("t") != "list" or not isinstance(items, list) or len(items) != 2:
        raise Fail(f"{what}: malformed result")
    return [tensor(R, e, what, "torch.float32", shape) for e in items]


def _check_sequential(R, pid: str, ws, xin, d_out: int) -> None:
    import torch

    found, shape = values(R, pid), (xin.shape[0], d_out)
    e1, e2 = _pair(R, found, "eval", "model output in eval mode", shape)
    assert_close(e1, e2, "in eval mode the model must be deterministic", rtol=0, atol=0)
    w1, b1, w2, b2 = (torch.from_numpy(a) for a in ws)
    with torch.no_grad():
        want = torch.relu(torch.from_numpy(xin) @ w1.T + b1) @ w2.T + b2
    assert_close(e1, want, "after model.eval() the Dropout layer must pass its input unchanged",
                 rtol=1e-4, atol=1e-5)
    after = tensor(R, found.get("eval_after"), "model output in eval mode", "torch.float32",
                   shape)
    assert_close(after, want, "eval after train must be the identity again", rtol=1e-4,
                 atol=1e-5)
    t1, t2 = _pair(R, found, "train", "model output in train mode", shape)
    if torch.equal(t1, t2):
        raise Fail("in train mode each forward pass must drop differently")
    grad = tensor(R, found.get("grad_first"), "gradient of the first layer", "torch.float32",
                  ws[0].shape)
    if not bool(torch.isfinite(grad).all()):
        raise Fail("gradients through Dropout must be finite")


def module(plan: Plan) -> Check:
    """test_dropout_module: the layer's p, train/eval modes, inside an nn.Sequential."""
    rng = plan.rng

    def layer(pid, p, x, modes):
        plan.add("scenario", pid, scenario="module", cls="Dropout",
                 data={"args": [py(p)], "x": plan.inp(x), "modes": modes})

    xm = _uniform(plan, (300, 200))
    layer("dm_04", 0.4, xm, ["train", "eval"])
    zm = _uniform(plan, (500, 400))
    layer("dm_025", 0.25, zm, ["train", "eval", "train", "eval"])
    layer("dm_p0", 0.0, zm, ["train"])
    layer("dm_p1", 1.0, zm, ["train"])
    nets = []
    for pid, (d_in, hidden, d_out), p, n in (("dm_seq_a", (20, 30, 3), 0.5, 8),
                                             ("dm_seq_b", (10, 64, 2), 0.3, 16)):
        bound1, bound2 = 1 / math.sqrt(d_in), 1 / math.sqrt(hidden)
        ws = [rng.uniform(-bound1, bound1, (hidden, d_in)).astype(np.float32),
              rng.uniform(-bound1, bound1, hidden).astype(np.float32),
              rng.uniform(-bound2, bound2, (d_out, hidden)).astype(np.float32),
              rng.uniform(-bound2, bound2, d_out).astype(np.float32)]
        xin = rng.standard_normal((n, d_in)).astype(np.float32)
        plan.add("scenario", pid, scenario="sequential", cls="Dropout",
                 data={"weights": [plan.inp(a) for a in ws], "p": py(p), "x": plan.inp(xin)})
        nets.append((pid, ws, xin, d_out))

    def layer_drops_at_eval(R):
        outs = _module_outputs(R, "dm_04", 2)[1]
        layer_eval = tensor(R, outs[1], "Dropout in eval mode", None, xm.shape)
        if bool((layer_eval == tensor(R, outs[0], "Dropout in train mode")).all()):
            return False  # the same tensor twice: the input was changed in place
        function_eval = [tensor(R, enc, "dropout(z, p, training=False)")
                         for enc in call_results(R, "db_eval_many")]
        return bool((layer_eval == 0).any()) and not any(bool((t == 0).any())
                                                          for t in function_eval)

    plan.recognise("dropout_module_ignores_training", layer_drops_at_eval)

    def check(R):
        found, _ = _module_outputs(R, "dm_04", 2)
        for key, want, what in (("p", 0.4, "Dropout(0.4).p"), ("default_p", 0.5, "Dropout().p")):
            enc = found.get(key, {})
            if not (enc.get("t") in ("float", "int") and enc.get("v") == want):
                raise Fail(f"{what} must be {want} (Dropout(p) stores p; the default is 0.5)")
        _check_modes(R, "dm_04", xm, 0.4, ["train", "eval"])
        _check_modes(R, "dm_025", zm, 0.25, ["train", "eval", "train", "eval"])
        _, outs = _module_outputs(R, "dm_p0", 1)
        assert_close(tensor(R, outs[0], "Dropout(0.0)", "torch.float64", zm.shape),
                     _torch_of(zm), "Dropout(0.0) must be the identity", rtol=0, atol=0)
        _, outs = _module_outputs(R, "dm_p1", 1)
        if not bool((tensor(R, outs[0], "Dropout(1.0)", "torch.float64", zm.shape) == 0).all()):
            raise Fail("Dropout(1.0) must zero everything in train mode")
        for pid, ws, xin, d_out in nets:
            _check_sequential(R, pid, ws, xin, d_out)

    return check


def plan(p: Plan) -> dict[str, Check]:
    return {"test_dropout_basics": basics(p), "test_dropout_statistics": statistics(p),
            "test_dropout_gradient": gradient(p), "test_dropout_module": module(p)}


MISTAKES = known(
    "dropout_keeps_with_probability_p", "dropout_no_scaling", "dropout_divides_by_p",
    "dropout_scaling_at_eval", "dropout_active_at_eval", "dropout_module_ignores_training",
    "dropout_nan_at_p1", "dropout_same_mask_every_call", "dropout_one_mask_per_batch",
    "dropout_in_place", "dropout_float32_output", "dropout_numpy_round_trip")

EXERCISE = Exercise("05_regularization", "dropout_solution", ("dropout", "Dropout"), plan,
                    mistakes=MISTAKES,
                    sandbox_code=Path(dropout_sandbox.__file__),
                    forbidden=("torch.nn.functional.dropout", "torch.dropout",
                               "torch.nn.Dropout", "torch.nn.modules.dropout.Dropout"))
