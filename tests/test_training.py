"""The training loop on a small real dataset: loss goes down, History, callbacks, AMP."""

import pandas as pd
import pytest
import torch
from torch import nn

from course.callbacks import Callback, EarlyStopping, LRScheduler, progress_enabled
from course.data import load_dataset, split, standardize, to_loader
from course.device import get_device, seed_everything
from course.training import History, evaluate, fit


@pytest.fixture(scope="module")
def loaders():
    d = load_dataset("breast_cancer")
    s, _ = standardize(split(d.X, d.y, (0.6, 0.2, 0.2), seed=0))
    return (to_loader(s.X_train, s.y_train, batch_size=32, shuffle=True, seed=0),
            to_loader(s.X_val, s.y_val, batch_size=128))


def make_model(seed=0):
    seed_everything(seed)
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))


@pytest.mark.slow
def test_loss_goes_down_and_history(loaders):
    train, val = loaders
    model = make_model()
    before, _ = evaluate(model, val, nn.CrossEntropyLoss(), "cpu")
    h = fit(model, train, val, epochs=5, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
            device="cpu")
    assert isinstance(h, History) and len(h) == 5 and h.epoch == [0, 1, 2, 3, 4]
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 5 for v in h.history.values())
    assert h["loss"][-1] < h["loss"][0] and h["val_loss"][-1] < before
    assert h["val_accuracy"][-1] > 0.9
    assert h["lr"] == [0.05] * 5
    frame = pd.DataFrame(h.history)  # the Keras-style contract
    assert frame.shape == (5, 5)


@pytest.mark.slow
def test_fit_is_reproducible_with_a_seed(loaders):
    train, val = loaders

    def run():
        model = make_model(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        return fit(model, train, val, epochs=2, optimizer=opt, device="cpu").history

    train.generator.manual_seed(0)
    a = run()
    train.generator.manual_seed(0)
    assert run() == a


class Spoiler(Callback):
    """Scrambles the weights after every epoch from epoch 1 on, so validation gets worse."""

    def on_epoch_end(self, state):
        if state.epoch >= 1:
            with torch.no_grad():
                for p in state.model.parameters():
                    p.add_(torch.randn_like(p) * 0.5)


@pytest.mark.slow
def test_early_stopping_stops_and_restores_best(loaders):
    train, val = loaders
    model = make_model()
    stopper = EarlyStopping(patience=2, restore_best_weights=True)
    # lr=0: only the spoiler changes the weights; the stopper runs first, so its snapshot holds
    # the weights its epoch was validated with
    h = fit(model, train, val, epochs=20, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
            callbacks=[stopper, Spoiler()], device="cpu")
    assert len(h) < 20 and stopper.stopped_epoch == len(h) - 1
    best_epoch = min(range(len(h)), key=lambda i: h["val_loss"][i])
    assert stopper.best_epoch == best_epoch
    restored, _ = evaluate(model, val, nn.CrossEntropyLoss(), "cpu")
    assert restored == pytest.approx(h["val_loss"][best_epoch], rel=1e-6)


@pytest.mark.slow
def test_early_stopping_resets_between_fits(loaders):
    train, val = loaders
    stopper = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=1.0)
    for _ in range(2):  # min_delta=1 can never be met: stops after patience+1 epochs each time
        model = make_model()
        h = fit(model, train, val, epochs=10, callbacks=[stopper], device="cpu",
                optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
        assert len(h) == 2


def test_early_stopping_names_missing_metric(loaders):
    train, _ = loaders
    model = make_model()
    with pytest.raises(KeyError, match="val_loader"):
        fit(model, train, epochs=1, callbacks=[EarlyStopping()], device="cpu",
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01))


@pytest.mark.slow
def test_scheduler_per_epoch_and_per_batch(loaders):
    train, val = loaders
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = fit(model, train, val, epochs=4, optimizer=opt, device="cpu",
            callbacks=[LRScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1))])
    assert h["lr"] == pytest.approx([0.1, 0.1, 0.01, 0.01])

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step))
    fit(model, train, epochs=2, optimizer=opt, device="cpu",
        callbacks=[LRScheduler(sched, interval="batch")])
    steps = 2 * len(train)
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / (1 + steps))


def test_reduce_on_plateau_uses_the_monitored_metric(loaders):
    train, val = loaders
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing improves: a plateau
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    opt.param_groups[0]["lr"] = 0.0
    h = fit(model, train, val, epochs=3, optimizer=opt, device="cpu",
            callbacks=[LRScheduler(plateau)])
    assert len(h) == 3
    with pytest.raises(ValueError, match="epoch"):
        LRScheduler(plateau, interval="batch")


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_path_runs_on_cpu(loaders, amp):
    train, val = loaders
    model = make_model()
    h = fit(model, train, val, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
            device="cpu", amp=amp, clip_grad_norm=1.0)
    assert h["loss"][1] < h["loss"][0] + 0.05
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_channels_last_conv_model():
    seed_everything(0)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 3, (32,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3))
    h = fit(model, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
            device="cpu", channels_last=True, amp="bf16")
    assert len(h) == 1


def test_progress_switch(monkeypatch):
    monkeypatch.setenv("COURSE_PROGRESS", "0")
    assert not progress_enabled()
    monkeypatch.setenv("COURSE_PROGRESS", "1")
    assert progress_enabled()
    monkeypatch.delenv("COURSE_PROGRESS")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert not progress_enabled()


def test_progress_bar_writes_to_stdout_only(loaders, capsys):
    train, _ = loaders
    model = make_model()
    fit(model, train, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        device="cpu", progress=True)
    captured = capsys.readouterr()
    assert captured.err == "" and "2/2" in captured.out


def test_get_device():
    assert get_device("cpu").type == "cpu"
    assert get_device().type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cpu"):
            get_device("cuda")
