"""CIFAR-10 as uint8 tensors on the device, with batched per-sample augmentation there.

The baseline of chapter 7 decodes every image on the CPU with PIL (``ToTensor``, ``Resize``,
``RandomCrop``, ``RandomHorizontalFlip``, ``Normalize``), one image at a time, in DataLoader
workers. Here the whole dataset (50,000 x 3 x 32 x 32 bytes, about 150 MB) sits on the GPU once
as uint8, and each batch is cropped, flipped, resized and normalized there in a few batched
kernels. torchvision's v2 transforms given a batch tensor draw ONE random crop for the whole
batch; per-sample randomness comes from one crop box per sample, applied by per-sample bilinear
interpolation matrices (``interpolation_matrices``: the same result as ``F.affine_grid`` +
``F.grid_sample``, faster).

Files: ``read_cifar10`` reads ``root/cifar-10-batches-py/`` (through torchvision's
``CIFAR10``, which checks every file's MD5, or the same way torchvision reads them when
``verify=False``); ``write_fake_cifar10`` writes small files in the same format for tests and CI.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from course.data import CIFAR10_CLASSES, CIFAR10_FILES, DatasetMissingError, load_cifar10

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AUGMENTATIONS", "read_cifar10",
           "write_fake_cifar10", "normalize", "eval_transform", "random_crop_params",
           "interpolation_matrices",
           "train_transform", "TensorLoader"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("baseline", "strong", "none")

_TRAIN_FILES = CIFAR10_FILES[:5]
_TEST_FILES = ["test_batch"]


def read_cifar10(root: str | Path, *, train: bool = True, verify: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from ``root/cifar-10-batches-py/`` as (uint8 images (N, 3, 32, 32), int64 labels).

    ``verify=True`` goes through ``torchvision.datasets.CIFAR10`` (``course.data.load_cifar10``),
    which checks the MD5 of every file against the official release. ``verify=False`` unpickles
    the same files the same way torchvision does, without the MD5 check: use it for the small
    CIFAR-format files that ``write_fake_cifar10`` writes for tests and CI (their MD5s cannot
    match). Both raise ``DatasetMissingError`` naming the folder and the files expected.
    """
    if verify:
        dataset = load_cifar10(root, train=train)
        images, labels = dataset.data, dataset.targets  # (N, 32, 32, 3) uint8, list of ints
    else:
        folder = Path(root) / "cifar-10-batches-py"
        missing = [f for f in CIFAR10_FILES if not (folder / f).exists()]
        if missing:
            raise DatasetMissingError(
                f"CIFAR-10 was not found in {folder.resolve()} (missing: {', '.join(missing)}).\n"
                f"Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract "
                f"it into {Path(root).resolve()} so that {folder} holds "
                f"{', '.join(CIFAR10_FILES)}.")
        chunks, labels = [], []
        for name in _TRAIN_FILES if train else _TEST_FILES:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")  # the files are Python 2 pickles
            chunks.append(entry["data"])
            labels.extend(entry["labels"])
        images = np.vstack(chunks).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(labels, dtype=torch.int64)


def write_fake_cifar10(root: str | Path, *, n_train: int = 500, n_test: int = 100,
                       seed: int = 0) -> Path:
    """Write small random CIFAR-format files under ``root/cifar-10-batches-py/``; return the folder.

    The layout is the official one (``data_batch_1..5``, ``test_batch``, ``batches.meta``, each a
    pickled dict with ``data``: uint8 (N, 3072) in CHW order and ``labels``). Each class has its
    own mean colour plus noise, so a model can learn something in a few steps. For tests and CI
    only: read them with ``read_cifar10(root, verify=False)``. Existing files are overwritten.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, size=(10, 3))

    def batch(n: int, label: str) -> dict:
        labels = rng.integers(0, 10, size=n)
        noise = rng.normal(0, 40, size=(n, 3, 32, 32))
        images = np.clip(palette[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
        return {"batch_label": label, "labels": labels.tolist(),
                "data": images.reshape(n, 3072),
                "filenames": [f"fake_{label}_{i}.png" for i in range(n)]}

    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for i, (name, n) in enumerate(zip(_TRAIN_FILES, sizes, strict=True)):
        with open(folder / name, "wb") as f:
            pickle.dump(batch(n, f"training batch {i + 1} of 5"), f, protocol=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test, "testing batch 1 of 1"), f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": sizes[0],
                     "num_vis": 3072}, f, protocol=2)
    return folder


def _channel_stats(x: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return mean, torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(x - mean) / std per channel, for a float batch (N, 3, H, W) in [0, 1]."""
    mean, std = _channel_stats(x, mean, std)
    return (x - mean) / std


def eval_transform(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """The notes' evaluation transform, batched: [0, 1], resize to size, float32, normalize."""
    x = images.float()
    mean, std = _channel_stats(x, IMAGENET_MEAN, IMAGENET_STD)
    # (x/255 - mean)/std = x/(255 std) - mean/std; resizing is linear with weights summing to 1,
    # so scaling the small image first and shifting after gives the same numbers, cheaper
    x = x / (255 * std)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return x.sub_(mean / std)


def random_crop_params(n: int, augment: str = "baseline", *, padding: float = 0.125,
                       scale: tuple[float, float] = (0.35, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                       generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """One affine matrix per sample, (n, 2, 3), mapping output coordinates to input ones.

    Coordinates run from -1 to 1 across the image (``F.affine_grid``'s convention).
    ``"baseline"``: the notes' resize + random crop, i.e. ``Resize(size)`` then
    ``RandomCrop(size, padding=padding * size)``: the image shifts by up to ``padding`` of its
    width in each direction (continuously, not in whole pixels) and zeros fill the border.
    ``"strong"``: a random resized crop (area fraction in ``scale``, aspect ratio in ``ratio``).
    ``"none"``: the identity. Every mode then flips each sample horizontally with ``flip_p``.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, not {augment!r}")

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, generator=generator, device=device)

    ones = torch.ones(n, device=device)
    if augment == "baseline":
        w, h = ones, ones
        cx, cy = uniform(-2 * padding, 2 * padding), uniform(-2 * padding, 2 * padding)
    elif augment == "strong":
        area = uniform(*scale)
        aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = torch.sqrt(area * aspect).clamp(max=1.0)  # box width as a fraction of the image
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        cx, cy = uniform(-1, 1) * (1 - w), uniform(-1, 1) * (1 - h)  # the box stays inside
    else:
        w, h, cx, cy = ones, ones, 0 * ones, 0 * ones
    flip = torch.rand(n, generator=generator, device=device) < flip_p
    sign = torch.where(flip, -ones, ones)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = sign * w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def interpolation_matrices(scale: torch.Tensor, shift: torch.Tensor, in_size: int,
                           out_size: int) -> torch.Tensor:
    """Per-sample bilinear interpolation along one axis, as matrices (N, out_size, in_size).

    Output pixel j sits at u = (2j + 1) / out_size - 1 (from -1 to 1); it reads the input at
    v = scale * u + shift, i.e. at pixel p = ((v + 1) * in_size - 1) / 2, blending pixels
    floor(p) and floor(p) + 1 (clamped at the edges, as ``F.grid_sample``'s border mode and
    ``Resize`` do). Rows for |v| > 1 (outside the image) are zero. A negative scale flips.
    """
    u = (2 * torch.arange(out_size, device=scale.device) + 1) / out_size - 1
    v = scale[:, None] * u[None, :] + shift[:, None]  # (N, out_size)
    p = (((v + 1) * in_size - 1) / 2).clamp(0, in_size - 1)
    low = p.floor().long()
    frac = p - low
    high = (low + 1).clamp(max=in_size - 1)
    eye = torch.eye(in_size, device=scale.device)
    weights = (1 - frac)[..., None] * eye[low] + frac[..., None] * eye[high]
    return weights * (v.abs() <= 1)[..., None]


def train_transform(images: torch.Tensor, size: int = 224, augment: str = "baseline", *,
                    generator: torch.Generator | None = None, **params) -> torch.Tensor:
    """Batched training transform: [0, 1], per-sample random crop + flip, resize, normalize.

    ``images`` is uint8 (N, 3, H, W) on any device; the result is float32 (N, 3, size, size),
    normalized with the ImageNet mean/std. Every sample gets its own crop and flip, drawn
    from ``generator`` (on the images' device). ``params`` go to ``random_crop_params``.

    The crop boxes are axis-aligned, so bilinear resampling is separable: one matrix per axis
    and sample, out = Wy @ image @ Wx^T, two batched matmuls. This gives the same result as
    ``F.affine_grid`` + ``F.grid_sample`` (border padding, zeros outside the image) at a
    fraction of the cost, on a CPU especially.
    """
    n, _, height, width = images.shape
    theta = random_crop_params(n, augment, generator=generator, device=images.device, **params)
    wx = interpolation_matrices(theta[:, 0, 0], theta[:, 0, 2], width, size)
    wy = interpolation_matrices(theta[:, 1, 1], theta[:, 1, 2], height, size)
    x = images.float()
    mean, std = _channel_stats(x, IMAGENET_MEAN, IMAGENET_STD)
    c = x.shape[1]
    rows = (wy[:, None] @ (x / (255 * std))).flatten(0, 1)  # (N*C, size, W)
    cols = wx.transpose(1, 2).repeat_interleave(c, dim=0)  # (N*C, W, size)
    # Normalizing is x/(255 std) - mean/std. The scale is applied to the small image; the shift
    # is added by baddbmm after the product, so pixels outside the image (all-zero rows of the
    # matrices) get 0 - mean/std: black, normalized, as RandomCrop's zero padding gives
    shift = (-mean / std).view(1, c).expand(n, c).reshape(n * c, 1, 1)
    return torch.baddbmm(shift, rows, cols).view(n, c, size, size)


class TensorLoader:
    """Batches of (transformed images, labels) from uint8 tensors that live on the device.

    A drop-in for a DataLoader in ``course.training.fit``: iterate it once per epoch.
    ``train=True`` shuffles (a new order every epoch, the same on every process) and applies
    ``train_transform``; ``train=False`` keeps the order and applies ``eval_transform``.
    With ``world_size > 1`` each process takes every ``world_size``-th sample of the shuffled
    order from ``rank`` on, as ``DistributedSampler`` does (the tail is dropped so every
    process sees the same number of batches).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 train: bool, image_size: int = 224, augment: str = "baseline", seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool | None = None,
                 channels_last: bool = False):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images, self.labels = images, labels.to(images.device)
        self.batch_size, self.train, self.image_size = batch_size, train, image_size
        self.augment, self.seed, self.rank, self.world_size = augment, seed, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last, self.epoch = channels_last, 0
        # augmentation draws differ between processes; the shuffling order does not
        self.generator = torch.Generator(device=images.device)
        self.generator.manual_seed(seed * 1009 + rank)

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffling order of ``epoch`` for the next pass (as DistributedSampler)."""
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = self.images.shape[0]
        if self.train:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(
                self.seed + self.epoch))
        else:
            order = torch.arange(n)
        per_rank = n // self.world_size if self.world_size > 1 else n
        return order[:per_rank * self.world_size][self.rank::self.world_size]

    def __len__(self) -> int:
        n = self.images.shape[0] // self.world_size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        indices = self._indices().to(self.images.device)
        self.epoch += 1
        for b in range(len(self)):
            idx = indices[b * self.batch_size:(b + 1) * self.batch_size]
            images = self.images[idx]
            if self.train:
                x = train_transform(images, self.image_size, self.augment,
                                    generator=self.generator)
            else:
                x = eval_transform(images, self.image_size)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
