"""Sandbox-side code of the dropout exercise (chapter 5), loaded by the harness.

Plain Python, run before the student's solution cell; it imports nothing but what it is passed
and never the ``course`` package. Each scenario builds the student's ``Dropout`` class (``cls``)
into something and returns what it saw: {name: tensor or Python value}.
"""


def scenario_module(cls, data, torch):
    """Build Dropout(*args) and run it on x once per mode ("train" or "eval")."""
    layer = cls(*data.get("args", []))
    rec = {"is_module": isinstance(layer, torch.nn.Module), "p": getattr(layer, "p", None),
           "default_p": getattr(cls(), "p", None),
           "n_parameters": len(list(layer.parameters())), "n_state": len(layer.state_dict())}
    x = torch.from_numpy(data["x"].copy())
    outs = []
    for mode in data["modes"]:
        layer.train(mode == "train")
        outs.append(layer(x))
    rec["outputs"] = outs
    return rec


def scenario_sequential(cls, data, torch):
    """nn.Sequential(Linear, ReLU, Dropout(p), Linear) with the grader's weights."""
    nn = torch.nn
    w = [torch.from_numpy(a.copy()) for a in data["weights"]]
    first, last = nn.Linear(w[0].shape[1], w[0].shape[0]), nn.Linear(w[2].shape[1], w[2].shape[0])
    with torch.no_grad():
        first.weight.copy_(w[0])
        first.bias.copy_(w[1])
        last.weight.copy_(w[2])
        last.bias.copy_(w[3])
    net = nn.Sequential(first, nn.ReLU(), cls(data["p"]), last)
    x = torch.from_numpy(data["x"].copy())
    rec = {}
    net.eval()
    with torch.no_grad():
        rec["eval"] = [net(x) for _ in range(2)]
    net.train()
    a = net(x)
    b = net(x)
    rec["train"] = [a, b]
    a.sum().backward()
    rec["grad_first"] = first.weight.grad
    net.eval()
    with torch.no_grad():
        rec["eval_after"] = net(x)
    return rec


SCENARIOS = {"module": scenario_module, "sequential": scenario_sequential}
