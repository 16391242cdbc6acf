"""Callbacks for ``course.training.fit``: early stopping, learning-rate schedules, a progress bar.

A callback implements only the hooks it needs. Each hook receives the ``TrainState`` of the fit:
the model, the optimizer, the epoch, the History so far, the latest ``logs`` and a
``stop_training`` flag that a callback sets to end training after the current epoch.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Callback", "TrainState", "EarlyStopping", "LRScheduler", "ProgressBar",
           "progress_enabled"]


@dataclass
class TrainState:
    """What callbacks can see and change during ``fit``."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    history: Any  # course.training.History
    epoch: int = 0  # 0-based index of the current epoch
    batch: int = 0  # batches seen in the current epoch
    logs: dict = field(default_factory=dict)  # latest batch or epoch numbers
    stop_training: bool = False


class Callback:
    """Base class: override the hooks you need; the others do nothing."""

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...


def _improved(mode: str, value: float, best: float, min_delta: float) -> bool:
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', not {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model ends with the weights of its best epoch. The state
    resets at the start of every fit, so one instance can serve several fits.
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True):
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.mode = _resolve_mode(mode, monitor)
        self.restore_best_weights = restore_best_weights

    def on_fit_start(self, state):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.stopped_epoch, self.best_state = None, 0, None, None

    def on_epoch_end(self, state):
        if self.monitor not in state.logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, but the epoch logged only "
                           f"{sorted(state.logs)}; pass val_loader to fit() or monitor 'loss'")
        value = float(state.logs[self.monitor])
        if _improved(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best_weights:
                self.best_state = copy.deepcopy(state.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = state.epoch
            state.stop_training = True

    def on_fit_end(self, state):
        if self.restore_best_weights and self.best_state is not None:
            state.model.load_state_dict(self.best_state)


class LRScheduler(Callback):
    """Step a ``torch.optim.lr_scheduler`` once per epoch or once per batch.

    ``interval="epoch"`` steps after each epoch's validation; ``"batch"`` after every optimizer
    step (warm-up, one-cycle, cosine per step). ``ReduceLROnPlateau`` is stepped with the
    epoch's ``monitor`` value.
    """

    def __init__(self, scheduler, *, interval: str = "epoch", monitor: str = "val_loss"):
        if interval not in ("epoch", "batch"):
            raise ValueError(f"interval must be 'epoch' or 'batch', not {interval!r}")
        self.scheduler, self.interval, self.monitor = scheduler, interval, monitor
        self.on_plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.on_plateau and interval == "batch":
            raise ValueError("ReduceLROnPlateau needs an epoch's metric: use interval='epoch'")

    def on_batch_end(self, state):
        if self.interval == "batch":
            self.scheduler.step()

    def on_epoch_end(self, state):
        if self.interval != "epoch":
            return
        if self.on_plateau:
            self.scheduler.step(float(state.logs[self.monitor]))
        else:
            self.scheduler.step()


def progress_enabled() -> bool:
    """Whether a progress bar should be drawn.

    ``COURSE_PROGRESS=0`` turns bars off and ``COURSE_PROGRESS=1`` on. Otherwise they are on in a
    notebook front end or a terminal, and off under nbgrader (whose test cells fail on any
    stderr output) and in any other non-interactive run.
    """
    setting = os.environ.get("COURSE_PROGRESS", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("NBGRADER_EXECUTION"):
        return False
    try:
        from IPython import get_ipython

        if type(get_ipython()).__name__ == "ZMQInteractiveShell":
            return True
    except ImportError:
        pass
    return sys.stdout.isatty()


class ProgressBar(Callback):
    """A tqdm bar over epochs showing the latest numbers; writes to stdout, never stderr."""

    def on_fit_start(self, state):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.epochs, unit="epoch", file=sys.stdout, leave=True)

    def on_epoch_end(self, state):
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in state.logs.items() if k != "lr"})
        self.bar.update(1)

    def on_fit_end(self, state):
        self.bar.close()
