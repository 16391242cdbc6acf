"""Images per second: the notes' per-image PIL pipeline, the batched tensor pipeline, training.

Chapter 7's systems lesson: a GPU that waits for its input is wasted. These functions time
each stage on its own so the bottleneck shows; ``benchmarks/pipeline.py`` and the chapter 7
notebook report them.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from course.cifar import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from course.device import autocast

__all__ = ["pil_train_pipeline", "pil_eval_pipeline", "PILImages", "seconds_per_call",
           "pil_loader_images_per_second", "tensor_pipeline_images_per_second",
           "train_images_per_second"]


def pil_train_pipeline(size: int = 224, padding: float = 0.125, flip_p: float = 0.5):
    """The notes' training transform, per image: [0, 1], resize, random crop (zero padding of
    ``padding`` x size), horizontal flip, ImageNet normalization. ``course.cifar.train_transform``
    with ``augment="baseline"`` draws from the same distribution, batched."""
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Resize((size, size)),
                      T.RandomCrop(size, padding=round(padding * size)),
                      T.RandomHorizontalFlip(flip_p), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def pil_eval_pipeline(size: int = 224):
    """The notes' evaluation transform, per image: [0, 1], resize, ImageNet normalization."""
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Resize((size, size)),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class PILImages(Dataset):
    """uint8 (N, 3, 32, 32) images served one at a time as PIL images, as torchvision's CIFAR10
    does (``Image.fromarray`` of an HWC array), through ``transform``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.data = np.ascontiguousarray(images.permute(0, 2, 3, 1).cpu().numpy())
        self.labels, self.transform = labels.cpu().tolist(), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.labels[i]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, *, calls: int, warmup: int = 1, device="cpu") -> float:
    """Mean wall-clock seconds of ``fn()`` over ``calls`` calls after ``warmup`` untimed ones;
    waits for the GPU before reading the clock (its kernels run asynchronously)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


def pil_loader_images_per_second(images: torch.Tensor, labels: torch.Tensor, *,
                                 size: int = 224, batch_size: int = 128, batches: int = 4,
                                 num_workers: int = 0, device="cpu") -> float:
    """Images/second of the notes' pipeline: a DataLoader over PIL images with the per-image
    transforms, batches copied to ``device``. Times ``batches`` batches after the first."""
    n = min(len(images), batch_size * (batches + 1))
    dataset = PILImages(images[:n], labels[:n], pil_train_pipeline(size))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda")
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    _sync(device)
    start, seen = time.perf_counter(), 0
    for x, _ in it:
        x = x.to(device, non_blocking=True)
        seen += x.shape[0]
    _sync(device)
    return seen / (time.perf_counter() - start)


def tensor_pipeline_images_per_second(images: torch.Tensor, *, size: int = 224,
                                      augment: str = "baseline", batch_size: int = 128,
                                      batches: int = 4, train: bool = True) -> float:
    """Images/second of ``course.cifar.train_transform`` (or ``eval_transform``) on batches of
    uint8 images already on their device."""
    g = torch.Generator(device=images.device).manual_seed(0)
    batch = images[:batch_size]
    if train:
        def step():
            train_transform(batch, size, augment, generator=g)
    else:
        def step():
            eval_transform(batch, size)
    return batch.shape[0] / seconds_per_call(step, calls=batches, device=images.device)


def train_images_per_second(model: nn.Module, *, image_size: int = 224, batch_size: int = 128,
                            steps: int = 5, warmup: int = 2, device="cpu", amp=None,
                            channels_last: bool = False, compile_model: bool = False) -> float:
    """Images/second of full training steps (forward, loss, backward, SGD step) on one fixed
    batch that is already on the device: the speed of the model alone, without the input
    pipeline. ``warmup`` steps first (cuDNN autotuning, torch.compile's compilation)."""
    device = torch.device(device)
    model = model.to(device).train()
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, model.fc.out_features, (batch_size,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with autocast(device, amp):
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch_size / seconds_per_call(step, calls=steps, warmup=warmup, device=device)
