"""Datasets, splits, train-only normalization and the CIFAR-10 error."""

import numpy as np
import pytest
import torch

from course.data import (
    DatasetMissingError,
    load_cifar10,
    load_dataset,
    split,
    standardize,
    to_loader,
)


@pytest.mark.parametrize("name", ["breast_cancer", "digits", "wine", "iris", "moons"])
def test_load_dataset(name):
    d = load_dataset(name)
    assert d.X.dtype == np.float32 and d.y.dtype == np.int64
    assert len(d.X) == len(d.y) and d.X.shape[1] == len(d.feature_names)
    assert set(np.unique(d.y)) == set(range(len(d.target_names)))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="breast_cancer"):
        load_dataset("mnist")


@pytest.mark.parametrize("ratios", [(0.8, 0.2), (0.6, 0.2, 0.2), (0.7, 0.15, 0.15)])
def test_split_ratios_and_stratification(ratios):
    d = load_dataset("digits")
    s = split(d.X, d.y, ratios, seed=1)
    parts = [(s.X_train, s.y_train), (s.X_val, s.y_val), (s.X_test, s.y_test)]
    parts = [p for p in parts if p[0] is not None]
    assert len(parts) == len(ratios)
    n = len(d.y)
    assert sum(len(y) for _, y in parts) == n
    overall = np.bincount(d.y) / n
    for (X, y), ratio in zip(parts, ratios, strict=True):
        assert len(X) == len(y)
        assert abs(len(y) / n - ratio) < 0.01
        assert np.abs(np.bincount(y, minlength=10) / len(y) - overall).max() < 0.02
    # no sample in two splits
    rows = {tuple(r) for X, _ in parts for r in X}
    assert len(rows) == len({tuple(r) for r in d.X})


@pytest.mark.parametrize("ratios", [(0.5, 0.6), (1.0,), (0.5, 0.0, 0.5), (0.2, 0.2, 0.2, 0.4)])
def test_bad_ratios(ratios):
    with pytest.raises(ValueError, match="sum"):
        split(np.zeros((10, 1)), np.zeros(10), ratios)


def test_standardize_uses_training_statistics_only():
    d = load_dataset("wine")
    s = split(d.X, d.y, (0.6, 0.2, 0.2), seed=0)
    scaled, scaler = standardize(s)
    np.testing.assert_allclose(scaler.mean_, s.X_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scaled.X_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.X_train.std(axis=0), 1, atol=1e-4)
    # validation and test are scaled with the training statistics, so they are not exactly 0/1
    expected = (s.X_test - s.X_train.mean(axis=0)) / s.X_train.std(axis=0)
    np.testing.assert_allclose(scaled.X_test, expected, rtol=1e-4, atol=1e-4)
    # leakage check: changing the test set does not change how training data is scaled
    s.X_test[:] = 1e6
    again, _ = standardize(s)
    np.testing.assert_array_equal(again.X_train, scaled.X_train)


def test_to_loader_seeded_shuffle():
    X, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10)
    first = [b[1].tolist() for b in to_loader(X, y, batch_size=4, shuffle=True, seed=3)]
    second = [b[1].tolist() for b in to_loader(X, y, batch_size=4, shuffle=True, seed=3)]
    assert first == second and sorted(sum(first, [])) == list(range(10))
    xb, yb = next(iter(to_loader(X, y, batch_size=4)))
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64


@pytest.mark.parametrize("options", [dict(shuffle=True, seed=5), dict(drop_last=True),
                                     dict(shuffle=True, seed=1, num_workers=1)])
def test_to_loader_yields_what_a_per_sample_dataloader_yields(options):
    """to_loader fetches a batch at once (_BatchedTensors): the same batches, in the same order,
    with the same values and types, as torch's DataLoader over a TensorDataset."""
    from torch.utils.data import DataLoader, TensorDataset

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(37, 3)).astype(np.float32), rng.integers(0, 4, size=37)
    options = dict(options)  # pytest hands every run of this case the same dict
    seed = options.pop("seed", None)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    plain = DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), batch_size=8,
                       generator=generator, **options)
    ours = list(to_loader(X, y, batch_size=8, seed=seed, **options))
    theirs = list(plain)
    assert len(ours) == len(theirs) == (4 if options.get("drop_last") else 5)
    for (xa, ya), (xb, yb) in zip(ours, theirs, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32 and ya.dtype == torch.int64


def test_missing_cifar10_names_folder_and_files(tmp_path):
    with pytest.raises(DatasetMissingError) as info:
        load_cifar10(tmp_path / "nowhere", train=True, download=False)
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message
    assert "test_batch" in message and "download=True" in message
