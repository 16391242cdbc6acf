"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit``, on CPU or GPU.

``fit`` returns a ``History`` whose ``.history`` is a dict of per-epoch lists, so
``pandas.DataFrame(h.history).plot()`` just works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from course.callbacks import Callback, ProgressBar, TrainState, progress_enabled
from course.device import autocast, get_device, resolve_amp_dtype

__all__ = ["History", "train_one_epoch", "evaluate", "predict", "fit"]


class History:
    """Per-epoch numbers of one fit: loss, accuracy, val_loss, val_accuracy, lr."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")

    def __init__(self):
        self.history: dict[str, list[float]] = {k: [] for k in self.KEYS}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self)}, last={last})"


def _to_device(x: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer,
                    device, *, amp=None, channels_last: bool = False, scaler=None,
                    clip_grad_norm: float | None = None,
                    on_batch_end: Callable[[dict], None] | None = None) -> tuple[float, float]:
    """Train for one pass over ``loader``; return the mean loss and accuracy over its samples.

    ``model`` returns logits of shape (N, C). ``amp`` ("bf16"/"fp16"/None) runs the forward pass
    in mixed precision; ``scaler`` is the GradScaler fp16 needs. ``on_batch_end`` is called
    after every optimizer step with the batch's numbers.
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
        # .item() waits for the GPU; one sync per batch is the price of an exact running mean
        batch_loss, n = loss.item(), y.shape[0]
        batch_correct = (logits.argmax(dim=1) == y).sum().item()
        total_loss, correct, seen = total_loss + batch_loss * n, correct + batch_correct, seen + n
        if on_batch_end is not None:
            on_batch_end({"loss": batch_loss, "accuracy": batch_correct / n})
    if seen == 0:
        raise ValueError("the training loader yielded no batches")
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, loss_fn: Callable, device, *, amp=None,
             channels_last: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode, without gradients."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
            loss = loss_fn(logits, y)
        n = y.shape[0]
        total_loss += loss.item() * n
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += n
    if seen == 0:
        raise ValueError("the evaluation loader yielded no batches")
    return total_loss / seen, correct / seen


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device=None, *, amp=None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``model`` over ``loader``: return (y_true, y_pred, probabilities) as NumPy arrays."""
    device = device or next(model.parameters()).device
    model.eval()
    ys, probs = [], []
    for x, y in loader:
        with autocast(device, amp):
            logits = model(x.to(device))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        ys.append(torch.as_tensor(y).cpu())
    p = torch.cat(probs).numpy()
    return torch.cat(ys).numpy(), p.argmax(axis=1), p


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *,
        epochs: int, optimizer, loss_fn: Callable | None = None, device=None,
        callbacks: Iterable[Callback] = (), amp=None, channels_last: bool = False,
        clip_grad_norm: float | None = None, progress: bool | None = None) -> History:
    """Train ``model`` for up to ``epochs`` epochs and return its History.

    Each epoch trains on all of ``train_loader``, then measures ``val_loader`` (when given).
    ``loss_fn`` defaults to cross-entropy on logits. ``progress=None`` shows a bar only in
    interactive sessions (see ``course.callbacks.progress_enabled``).
    """
    device = get_device() if device is None else torch.device(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    fp16 = resolve_amp_dtype(amp) == torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=fp16) if fp16 else None

    callbacks = list(callbacks)
    if progress_enabled() if progress is None else progress:
        callbacks.append(ProgressBar())
    history = History()
    state = TrainState(model=model, optimizer=optimizer, epochs=epochs, history=history)

    def batch_end(logs):
        state.batch += 1
        state.logs = logs
        for cb in callbacks:
            cb.on_batch_end(state)

    for cb in callbacks:
        cb.on_fit_start(state)
    for epoch in range(epochs):
        state.epoch, state.batch = epoch, 0
        for cb in callbacks:
            cb.on_epoch_start(state)
        lr = optimizer.param_groups[0]["lr"]
        loss, acc = train_one_epoch(model, train_loader, loss_fn, optimizer, device, amp=amp,
                                    channels_last=channels_last, scaler=scaler,
                                    clip_grad_norm=clip_grad_norm, on_batch_end=batch_end)
        logs = {"loss": loss, "accuracy": acc}
        if val_loader is not None:
            logs["val_loss"], logs["val_accuracy"] = evaluate(
                model, val_loader, loss_fn, device, amp=amp, channels_last=channels_last)
        logs["lr"] = lr
        state.logs = logs
        history.append(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(state)
        if state.stop_training:
            break
    for cb in callbacks:
        cb.on_fit_end(state)
    return history
