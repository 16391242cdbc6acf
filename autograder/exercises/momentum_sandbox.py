"""Sandbox-side code of the momentum exercise (chapter 4), loaded by the harness.

Plain Python: the harness reads this file and runs it before the student's solution cell, so it
imports nothing but torch (passed in) and never the ``course`` package. Each scenario drives an
optimizer class ``cls`` (the student's MomentumSGD in the sandbox, a torch.optim.SGD reference
in the trusted process, see ``momentum.py``) through the same steps on the grader's data and
returns what it saw: {name: tensor or Python value}. ``data`` values are NumPy arrays or JSON
values.
"""


def scenario_construct(cls, data, torch):
    """Construct the optimizer with the given arguments: did it raise ValueError?"""
    try:
        cls([torch.nn.Parameter(torch.zeros(2))], **data["kwargs"])
    except ValueError:
        return {"value_error": True}
    except Exception:  # noqa: BLE001 - another exception is an answer too (a wrong one)
        return {"value_error": False}
    return {"value_error": False}


def _t(torch, arr, requires_grad=False):
    tensor = torch.from_numpy(arr.copy())
    return tensor.requires_grad_(True) if requires_grad else tensor


def _snap(p):
    return p.detach().clone()


def scenario_basic(cls, data, torch):
    """Two steps on one parameter with a fixed gradient; the velocity after each."""
    rec = {"is_optimizer": issubclass(cls, torch.optim.Optimizer)}
    w = _t(torch, data["w0"], True)
    opt = cls([w], lr=data["lr"], momentum=data["momentum"])
    w.grad = _t(torch, data["g"])
    rec["step_return"] = opt.step()
    rec["w1"] = _snap(w)
    rec["v1"] = opt.state[w]["velocity"].detach().clone()
    opt.step()
    rec["v2"] = opt.state[w]["velocity"].detach().clone()
    rec["w2"] = _snap(w)
    return rec


def scenario_two_params(cls, data, torch):
    """Two parameters of the same shape with different gradients: one velocity each."""
    a, b = _t(torch, data["a0"], True), _t(torch, data["b0"], True)
    opt = cls([a, b], lr=data["lr"], momentum=data["momentum"])
    for _ in range(2):
        a.grad, b.grad = _t(torch, data["ga"]), _t(torch, data["gb"])
        opt.step()
    return {"a": _snap(a), "b": _snap(b)}


def scenario_default_and_closure(cls, data, torch):
    """The default momentum, and step(closure) returning the closure's loss."""
    x = _t(torch, data["x0"], True)
    opt = cls([x], lr=data["lr"])
    rec = {"momentum": opt.param_groups[0]["momentum"]}

    def closure():
        opt.zero_grad()
        loss = (x ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    rec["loss_is_tensor"] = isinstance(loss, torch.Tensor)
    rec["loss"] = loss.detach().clone() if isinstance(loss, torch.Tensor) else loss
    rec["x1"] = _snap(x)
    return rec


def scenario_given_grads(cls, data, torch):
    """Steps with gradients the grader gives (any shape/dtype); the parameter after each."""
    p = _t(torch, data["init"], True)
    opt = cls([p], lr=data["lr"], momentum=data["momentum"])
    rec = {}
    grads = data["grads"]
    for i in range(grads.shape[0]):
        if data.get("zero_inplace") and i > 0:
            p.grad.zero_()
        else:
            p.grad = _t(torch, grads[i])
        opt.step()
        rec[f"step{i}"] = _snap(p)
    return rec


def _model(torch, data):
    nn = torch.nn
    layers = []
    for spec in data["layers"]:
        if spec[0] == "linear":
            layers.append(nn.Linear(spec[1], spec[2]))
        elif spec[0] == "tanh":
            layers.append(nn.Tanh())
        else:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    if data["dtype"] == "float64":
        model = model.double()
    with torch.no_grad():
        for p, arr in zip(model.parameters(), data["init"], strict=True):
            p.copy_(torch.from_numpy(arr.copy()))
    return model


def scenario_trajectory(cls, data, torch):
    """Train a model with cross-entropy; every parameter after every step."""
    model = _model(torch, data)
    x, y = _t(torch, data["x"]), _t(torch, data["y"])
    opt = cls(model.parameters(), lr=data["lr"], momentum=data["momentum"])
    sched = None
    if data.get("step_lr"):
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=data["step_lr"][0],
                                                gamma=data["step_lr"][1])
    changes = {int(k): v for k, v in data.get("lr_changes", {}).items()}
    params = list(model.parameters())
    history = [[] for _ in params]
    for step in range(data["steps"]):
        if step in changes:
            for group in opt.param_groups:
                group["lr"] = changes[step]
        opt.zero_grad(set_to_none=data.get("set_to_none", True))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()
        for h, p in zip(history, params, strict=True):
            h.append(_snap(p))
    return {f"p{i}": torch.stack(h) for i, h in enumerate(history)}


def scenario_two_groups(cls, data, torch):
    """Two param groups with their own lr/momentum, and a tensor that never gets a gradient."""
    net = _model(torch, data)
    frozen = _t(torch, data["frozen"])
    x, y = _t(torch, data["x"]), _t(torch, data["y"])
    groups = [{"params": list(net[0].parameters()) + [frozen]},
              {"params": net[2].parameters(), "lr": data["lr2"], "momentum": data["mom2"]}]
    opt = cls(groups, lr=data["lr"], momentum=data["momentum"])
    params = list(net.parameters())
    history = [[] for _ in params]
    for _ in range(data["steps"]):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        for h, p in zip(history, params, strict=True):
            h.append(_snap(p))
    rec = {f"p{i}": torch.stack(h) for i, h in enumerate(history)}
    rec["frozen_grad_is_none"] = frozen.grad is None
    rec["frozen"] = _snap(frozen)
    return rec


def scenario_three_groups(cls, data, torch):
    """Three groups, learning rates changed per group mid-way, a parameter used every other step,
    and a parameter never used at all."""
    nn = torch.nn
    l1, l2, l3 = (_model(torch, {"layers": [spec], "dtype": "float64", "init": data[k]})[0]
                  for spec, k in ((["linear", 3, 6], "i1"), (["linear", 6, 4], "i2"),
                                  (["linear", 4, 2], "i3")))
    extra = nn.Parameter(_t(torch, data["extra"]))
    xs, ys = _t(torch, data["x"]), _t(torch, data["y"])
    groups = [{"params": l1.parameters(), "momentum": data["m1"]},
              {"params": list(l2.parameters()) + [extra], "lr": data["lr2"]},
              {"params": l3.parameters(), "lr": data["lr3"], "momentum": 0.0}]
    opt = cls(groups, lr=data["lr"], momentum=data["momentum"])
    params = [*l1.parameters(), *l2.parameters(), *l3.parameters(), extra]
    history = [[] for _ in params]
    for step in range(data["steps"]):
        if step == data["change1"]:
            opt.param_groups[0]["lr"] = data["new_lr0"]
        if step == data["change2"]:
            opt.param_groups[1]["lr"] = data["new_lr1"]
            opt.param_groups[2]["lr"] = data["new_lr2"]
        opt.zero_grad(set_to_none=True)
        out = l3(torch.relu(l2(torch.tanh(l1(xs)))))
        if step % 2 == 0:
            out = out + extra
        nn.functional.cross_entropy(out, ys).backward()
        opt.step()
        for h, p in zip(history, params, strict=True):
            h.append(_snap(p))
    rec = {f"p{i}": torch.stack(h) for i, h in enumerate(history)}
    unused = _t(torch, data["unused"], True)
    used = _t(torch, data["used"], True)
    opt = cls([unused, used], lr=data["lr"])
    for _ in range(3):
        opt.zero_grad()
        (used ** 2).sum().backward()
        opt.step()
    rec["unused_grad_is_none"] = unused.grad is None
    rec["unused"] = _snap(unused)
    rec["used"] = _snap(used)
    return rec


SCENARIOS = {
    "construct": scenario_construct,
    "basic": scenario_basic,
    "two_params": scenario_two_params,
    "default_and_closure": scenario_default_and_closure,
    "given_grads": scenario_given_grads,
    "trajectory": scenario_trajectory,
    "two_groups": scenario_two_groups,
    "three_groups": scenario_three_groups,
}
