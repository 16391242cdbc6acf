"""Where an epoch of chapter 7's training goes: input pipeline, model, and the rest.

End to end (``course.train_cifar``) reaches 63-78 % of the model-alone rate on one GPU
(benchmarks/RESULTS.md). This splits an epoch of the same code into parts, on the same images,
in one run:

- **epochs**: ``course.project.fit_recipe`` trained one epoch at a time, each timed on its own
  (the first includes cuDNN autotuning and allocator warm-up);
- **input pipeline alone**: one epoch of ``course.cifar.TensorLoader`` (augmentation, resize,
  normalisation on the device) with nothing consuming the batches;
- **model alone**: ``course.throughput.train_images_per_second`` on one fixed batch.

Prints one JSON object. Random uint8 images (the timing does not depend on their content)::

    PYTHONPATH=. python3 benchmarks/epoch_profile.py --device cuda
    python benchmarks/epoch_profile.py --device cpu --n-train 256 --image-size 64 --batch 32
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from course.cifar import TensorLoader
from course.device import get_device, seed_everything
from course.project import BASELINE, IMPROVED, build_model, fit_recipe
from course.throughput import train_images_per_second


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--recipe", choices=["baseline", "improved"], default="baseline")
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = get_device(args.device)
    amp = None if args.amp == "none" else args.amp
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    recipe = replace(IMPROVED if args.recipe == "improved" else BASELINE, epochs=1,
                     weights=None, image_size=args.image_size, batch_size=args.batch)
    seed_everything(0)
    images = torch.randint(0, 256, (args.n_train, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (args.n_train,), device=device)
    loader = TensorLoader(images, labels, batch_size=args.batch, train=True,
                          image_size=args.image_size, augment=recipe.augment,
                          channels_last=args.channels_last)
    n_images = len(loader) * args.batch

    def drain():
        for batch in loader:
            del batch

    drain()  # warm the augmentation kernels
    pipeline_s = _timed(device, drain)

    model = build_model(recipe.arch, None).to(device)
    epoch_s = [_timed(device, lambda: fit_recipe(model, recipe, loader, device=device, amp=amp,
                                                 channels_last=args.channels_last,
                                                 progress=False))
               for _ in range(args.epochs)]

    seed_everything(0)
    alone = train_images_per_second(build_model(recipe.arch, None), image_size=args.image_size,
                                    batch_size=args.batch, steps=20, warmup=3, device=device,
                                    amp=amp, channels_last=args.channels_last)
    steady = sum(epoch_s[1:]) / max(1, len(epoch_s) - 1)
    model_s = n_images / alone
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "recipe": args.recipe, "images_per_epoch": n_images,
        "image_size": args.image_size, "batch": args.batch, "amp": args.amp,
        "channels_last": args.channels_last,
        "epoch_seconds": [round(s, 2) for s in epoch_s],
        "first_epoch_extra_seconds": round(epoch_s[0] - steady, 2),
        "steady_epoch_seconds": round(steady, 2),
        "steady_images_per_second": round(n_images / steady, 1),
        "input_pipeline_alone_seconds": round(pipeline_s, 2),
        "input_pipeline_alone_images_per_second": round(n_images / pipeline_s, 1),
        "model_alone_images_per_second": round(alone, 1),
        "model_alone_seconds_per_epoch": round(model_s, 2),
        "rest_seconds_per_epoch": round(steady - model_s - pipeline_s, 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
