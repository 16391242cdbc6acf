"""Datasets as tensors and DataLoaders: scikit-learn's sets, splits, normalization, CIFAR-10.

Every dataset here ships with scikit-learn, so the chapters need no download. CIFAR-10 (chapter 7)
comes through torchvision from a local folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "Dataset", "Splits", "load_dataset", "split", "standardize", "to_tensors", "to_loader",
    "CIFAR10_FILES", "CIFAR10_CLASSES", "DatasetMissingError", "load_cifar10",
]


@dataclass
class Dataset:
    """Features ``X`` (n_samples, n_features), integer labels ``y`` and their names."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    name: str


_SKLEARN_LOADERS = {
    "breast_cancer": skdatasets.load_breast_cancer,
    "digits": skdatasets.load_digits,
    "wine": skdatasets.load_wine,
    "iris": skdatasets.load_iris,
}


def load_dataset(name: str, *, n_samples: int = 1000, noise: float = 0.2, seed: int = 0) -> Dataset:
    """Load one of scikit-learn's shipped datasets (no download).

    ``name`` is "breast_cancer", "digits", "wine", "iris", or "moons" (generated: ``n_samples``
    points with Gaussian ``noise``, reproducible through ``seed``).
    """
    if name == "moons":
        X, y = skdatasets.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
        return Dataset(X.astype(np.float32), y.astype(np.int64), ["x1", "x2"], ["0", "1"], name)
    if name not in _SKLEARN_LOADERS:
        known = ", ".join([*_SKLEARN_LOADERS, "moons"])
        raise ValueError(f"unknown dataset {name!r}; choose one of: {known}")
    bunch = _SKLEARN_LOADERS[name]()
    feature_names = [str(f) for f in getattr(bunch, "feature_names", range(bunch.data.shape[1]))]
    return Dataset(bunch.data.astype(np.float32), bunch.target.astype(np.int64),
                   feature_names, [str(t) for t in bunch.target_names], name)


@dataclass
class Splits:
    """Train, validation and test arrays. ``X_val``/``y_val`` are None for a two-way split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray


def split(X, y, ratios=(0.6, 0.2, 0.2), *, stratify: bool = True, seed: int = 0) -> Splits:
    """Split into train/val/test by ``ratios`` (two ratios give train/test only).

    Ratios must be positive and sum to 1, e.g. (0.8, 0.2), (0.6, 0.2, 0.2) or (0.7, 0.15, 0.15).
    With ``stratify`` every split keeps the class proportions of ``y``.
    """
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) not in (2, 3) or min(ratios) <= 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be 2 or 3 positive numbers summing to 1, got {ratios}")
    X, y = np.asarray(X), np.asarray(y)
    test_size = ratios[-1]
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y if stratify else None, random_state=seed)
    if len(ratios) == 2:
        return Splits(X_rest, y_rest, None, None, X_test, y_test)
    val_share = ratios[1] / (ratios[0] + ratios[1])
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=val_share, stratify=y_rest if stratify else None,
        random_state=seed)
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)


def standardize(splits: Splits) -> tuple[Splits, StandardScaler]:
    """Scale every split with the mean and std of the **training** split only.

    Fitting the scaler on all the data would leak statistics of the validation and test sets
    into training. Returns the scaled splits and the fitted scaler.
    """
    scaler = StandardScaler().fit(splits.X_train)

    def scale(X):
        return None if X is None else scaler.transform(X).astype(np.float32)

    scaled = Splits(scale(splits.X_train), splits.y_train, scale(splits.X_val), splits.y_val,
                    scale(splits.X_test), splits.y_test)
    return scaled, scaler


def to_tensors(X, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Features as float32 and labels as int64 tensors."""
    return (torch.as_tensor(np.asarray(X), dtype=torch.float32),
            torch.as_tensor(np.asarray(y), dtype=torch.int64))


class _BatchedTensors(TensorDataset):
    """A TensorDataset whose DataLoader fetches a whole batch with one index per tensor.

    DataLoader asks ``__getitems__`` for the batch's indices when a dataset has it; the plain
    TensorDataset is asked once per sample and the samples are stacked again, which costs more
    than the forward and backward pass of the chapters' small networks. Same samples, same
    order, same values: only the copying is done once per batch.
    """

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in self.tensors)


def _as_batch(batch):
    return batch  # already (X_batch, y_batch): see _BatchedTensors


def to_loader(X, y, *, batch_size: int = 64, shuffle: bool = False, seed: int | None = None,
              **kwargs) -> DataLoader:
    """A DataLoader over (X, y); ``seed`` makes the shuffling order reproducible."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    tensors = to_tensors(X, y)
    if batch_size is None or "collate_fn" in kwargs:  # samples one by one, as asked
        dataset = TensorDataset(*tensors)
    else:
        dataset, kwargs = _BatchedTensors(*tensors), {"collate_fn": _as_batch, **kwargs}
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      **kwargs)


CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch", "batches.meta"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


class DatasetMissingError(FileNotFoundError):
    """A dataset is not on disk and cannot be downloaded."""


def load_cifar10(root: str | Path = "data", *, train: bool = True, download: bool = False,
                 transform=None):
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` from ``root``.

    torchvision reads ``root/cifar-10-batches-py/``. With ``download=True`` it fetches the
    archive when missing; without it, or when the download fails, a DatasetMissingError names
    the folder and the files expected there.
    """
    from torchvision.datasets import CIFAR10

    root = Path(root)
    folder = root / "cifar-10-batches-py"
    try:
        return CIFAR10(str(root), train=train, download=download, transform=transform)
    except (RuntimeError, OSError) as err:
        missing = [f for f in CIFAR10_FILES if not (folder / f).exists()]
        raise DatasetMissingError(
            f"CIFAR-10 was not found in {folder.resolve()} "
            f"(missing: {', '.join(missing) or '-'}).\n"
            f"Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it "
            f"into {root.resolve()} so that {folder} holds {', '.join(CIFAR10_FILES)};\n"
            f"or, with internet access, pass download=True. (torchvision said: {err})"
        ) from err
