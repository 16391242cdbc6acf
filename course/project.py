"""Chapter 7: a torchvision ResNet on CIFAR-10, the notes' baseline and the improved recipe.

A ``Recipe`` holds every choice of a training run. ``BASELINE`` is the lecture notes' run
(resnet50 with ImageNet weights, 3 epochs, batch 128, SGD with lr 1e-3); ``IMPROVED`` adds what
chapters 1-6 teach (Nesterov momentum, warm-up then cosine, weight decay on weights only, label
smoothing, stronger augmentation). ``fit_recipe`` trains any recipe with ``course.training.fit``.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from course.callbacks import LRScheduler
from course.cifar import TensorLoader
from course.data import CIFAR10_CLASSES
from course.device import seed_everything
from course.metrics import accuracy, classification_table, confusion_matrix
from course.training import fit, predict

__all__ = ["WeightsMissingError", "Recipe", "BASELINE", "IMPROVED", "weights_cache_path",
           "build_model", "freeze_backbone", "model_summary", "parameter_groups",
           "make_optimizer", "make_schedule", "fit_recipe", "run_recipe", "evaluate_model",
           "write_predictions"]


class WeightsMissingError(FileNotFoundError):
    """Pretrained weights are not on disk and cannot be downloaded."""


@dataclass(frozen=True)
class Recipe:
    """Every choice of one training run on CIFAR-10."""

    arch: str = "resnet50"
    weights: str | None = "IMAGENET1K_V1"  # a torchvision weights name, a .pth file, or None
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "sgd"  # "sgd" or "adamw"
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0  # applied to conv/linear weights only, never to norms or biases
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    schedule: str = "constant"  # "constant" or "cosine" (per batch, after the warm-up)
    augment: str = "baseline"  # see course.cifar.AUGMENTATIONS
    freeze_backbone: bool = False  # train only the new head
    image_size: int = 224


# The lecture notes' run (001 §4.10), exactly: nothing else is switched on.
BASELINE = Recipe()
# Each change below is measured on its own against BASELINE in the chapter 7 notebook.
IMPROVED = replace(BASELINE, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                   warmup_epochs=0.2, schedule="cosine", label_smoothing=0.1, augment="strong")


def _weights_enum(arch: str, name: str):
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(arch)[name]
    except KeyError:
        names = [w.name for w in get_model_weights(arch)]
        raise ValueError(f"{arch} has no weights {name!r}; torchvision offers {names}") from None


def weights_cache_path(arch: str = "resnet50", weights: str = "IMAGENET1K_V1") -> Path:
    """Where torchvision keeps the file of these weights: $TORCH_HOME/hub/checkpoints/<file>."""
    url = _weights_enum(arch, weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_state_dict(arch: str, weights: str, download: bool) -> dict:
    path = Path(weights)
    if path.suffix in (".pth", ".pt"):
        if not path.exists():
            raise WeightsMissingError(f"the weights file {path.resolve()} does not exist")
        return torch.load(path, map_location="cpu", weights_only=True)
    enum = _weights_enum(arch, weights)
    cached = weights_cache_path(arch, weights)
    if cached.exists():
        return torch.load(cached, map_location="cpu", weights_only=True)
    if download:
        try:
            return enum.get_state_dict(progress=False, check_hash=True)
        except OSError as err:  # URLError and socket errors are OSErrors
            reason = f"the download failed ({err})"
    else:
        reason = "download=False"
    raise WeightsMissingError(
        f"{arch} weights {weights} are not in torchvision's cache and {reason}.\n"
        f"Download {enum.url} and save it as {cached} (torchvision's cache: "
        f"$TORCH_HOME/hub/checkpoints/, TORCH_HOME defaults to ~/.cache/torch), or pass the "
        f"file's path as weights=..., or weights=None to start from random weights.")


def build_model(arch: str = "resnet50", weights: str | None = "IMAGENET1K_V1", *,
                num_classes: int = 10, download: bool = True,
                freeze: bool = False) -> nn.Module:
    """A torchvision ResNet with a new ``num_classes``-way head (``model.fc``).

    ``weights`` is a torchvision weights name ("IMAGENET1K_V1"), a ``.pth`` state dict (the
    ImageNet one or a checkpoint of this model), or None for random weights. Missing weights
    that cannot be downloaded raise ``WeightsMissingError`` saying which file to put where.
    ``freeze=True`` trains only the head (see ``freeze_backbone``).
    """
    from torchvision.models import get_model

    model = get_model(arch, weights=None)
    head_in = model.fc.in_features
    if weights is not None:
        state = _load_state_dict(arch, weights, download)
        if state["fc.weight"].shape[0] == num_classes:  # a checkpoint of this very model
            model.fc = nn.Linear(head_in, num_classes)
        model.load_state_dict(state)
    if model.fc.out_features != num_classes:
        model.fc = nn.Linear(head_in, num_classes)
    if freeze:
        freeze_backbone(model)
    return model


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Stop gradients to everything but the head ``model.fc`` (transfer learning as a fixed
    feature extractor). BatchNorm layers still update their running statistics in train mode."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    return model


def model_summary(model: nn.Module, image_size: int = 224):
    """A DataFrame with one row per top-level block: output shape, parameters, trainable ones."""
    import pandas as pd

    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    shapes = {}
    hooks = [child.register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
        for name, child in model.named_children()]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = [{"block": name, "output shape": shapes.get(name),
             "parameters": sum(p.numel() for p in child.parameters()),
             "trainable": sum(p.numel() for p in child.parameters() if p.requires_grad)}
            for name, child in model.named_children()]
    rows.append({"block": "total", "output shape": None,
                 "parameters": sum(r["parameters"] for r in rows),
                 "trainable": sum(r["trainable"] for r in rows)})
    return pd.DataFrame(rows).set_index("block")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: conv/linear weights with ``weight_decay``; norms and biases without.

    Decaying a BatchNorm scale or a bias only fights the normalization, it does not limit the
    model's capacity. Frozen parameters are left out.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (with the recipe's momentum/Nesterov) or AdamW over ``parameter_groups``."""
    groups = parameter_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {recipe.optimizer!r}")


def make_schedule(optimizer, recipe: Recipe, steps_per_epoch: int):
    """A per-batch LambdaLR: linear warm-up over ``warmup_epochs``, then constant or cosine to 0."""
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = min(total - 1, round(recipe.warmup_epochs * steps_per_epoch))
    if recipe.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', not {recipe.schedule!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if recipe.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit_recipe(model: nn.Module, recipe: Recipe, train_loader, val_loader=None, *, device,
               amp=None, channels_last: bool = False, compile_model: bool = False,
               callbacks=(), progress: bool | None = None):
    """Train ``model`` (maybe wrapped in DistributedDataParallel) as ``recipe`` says.

    Builds the optimizer, the per-batch schedule and the (label-smoothed) cross-entropy, then
    runs ``course.training.fit``. ``compile_model`` trains through ``torch.compile(model)``.
    Returns the History.
    """
    optimizer = make_optimizer(model, recipe)
    schedule = LRScheduler(make_schedule(optimizer, recipe, len(train_loader)), interval="batch")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    model.to(device)
    net = torch.compile(model) if compile_model else model
    return fit(net, train_loader, val_loader, epochs=recipe.epochs, optimizer=optimizer,
               loss_fn=loss_fn, device=device, callbacks=[schedule, *callbacks], amp=amp,
               channels_last=channels_last, progress=progress)


def run_recipe(recipe: Recipe, train_images: torch.Tensor, train_labels: torch.Tensor,
               val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
               *, device, amp=None, channels_last: bool = False, compile_model: bool = False,
               seed: int = 0, download: bool = True, progress: bool | None = None):
    """One experiment from scratch: seed, build the model and the loaders, train.

    The images are uint8 (N, 3, 32, 32) tensors, ideally already on ``device``. Returns
    (model, History, seconds of training including the per-epoch validation).
    """
    device = torch.device(device)
    seed_everything(seed)
    model = build_model(recipe.arch, recipe.weights, download=download,
                        freeze=recipe.freeze_backbone).to(device)
    train = TensorLoader(train_images, train_labels, batch_size=recipe.batch_size, train=True,
                         image_size=recipe.image_size, augment=recipe.augment, seed=seed,
                         channels_last=channels_last)
    val = None
    if val_images is not None:
        val = TensorLoader(val_images, val_labels, batch_size=256, train=False,
                           image_size=recipe.image_size, channels_last=channels_last)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # time the training, not the work queued before it
    start = time.perf_counter()
    history = fit_recipe(model, recipe, train, val, device=device, amp=amp,
                         channels_last=channels_last, compile_model=compile_model,
                         progress=progress)
    return model, history, time.perf_counter() - start


def evaluate_model(model: nn.Module, loader, *, device=None, amp=None,
                   classes=CIFAR10_CLASSES) -> dict:
    """Accuracy, confusion matrix (C[i, j] = true i predicted j) and per-class P/R/F table."""
    y_true, y_pred, probs = predict(model, loader, device, amp=amp)
    table = classification_table(y_true, y_pred)  # rows: the classes present, then "macro avg"
    table.index = [classes[int(i)] if i.isdigit() else i for i in table.index]
    return {"accuracy": accuracy(y_true, y_pred), "y_true": y_true, "y_pred": y_pred,
            "probs": probs, "table": table,
            "confusion": confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))}


def write_predictions(path: str | Path, y_pred, classes=CIFAR10_CLASSES) -> Path:
    """Write a competition-style CSV: header ``id,label``, one row per test image in order
    (id = its index in the test set, label = the class name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        writer.writerows((i, classes[int(c)]) for i, c in enumerate(y_pred))
    return path
