"""Train a ResNet on CIFAR-10 from the command line, on one device or several with DDP.

One process (a GPU, or the CPU)::

    python -m course.train_cifar --data-root data --recipe improved --amp bf16 --channels-last

Several GPUs on one machine (DistributedDataParallel; the notes' baseline used two T4s)::

    torchrun --nproc_per_node=2 -m course.train_cifar --data-root data --recipe baseline

Every process keeps the whole uint8 dataset on its device and trains on its own shard of each
epoch's shuffled order (``course.cifar.TensorLoader``); ``--batch-size`` is the global batch,
split evenly between the processes, so the recipe means the same on 1 or N devices. The
backend is NCCL on CUDA and gloo on the CPU. Rank 0 evaluates on the test set, writes the
predictions CSV and prints one JSON line of results.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace

import torch
import torch.distributed as dist

from course.cifar import AUGMENTATIONS, TensorLoader, read_cifar10
from course.device import get_device, seed_everything
from course.project import BASELINE, IMPROVED, build_model, evaluate_model, fit_recipe
from course.project import write_predictions as write_predictions_csv

__all__ = ["parse_args", "main"]

RECIPES = {"baseline": BASELINE, "improved": IMPROVED}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m course.train_cifar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="data", help="folder holding cifar-10-batches-py/")
    p.add_argument("--no-verify", action="store_true",
                   help="skip torchvision's MD5 check (for generated CIFAR-format test files)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="baseline")
    p.add_argument("--arch", help="torchvision model name, e.g. resnet50 (the default), resnet18")
    p.add_argument("--weights", help="IMAGENET1K_V1, a .pth file, or 'none' for random weights")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size over all processes")
    p.add_argument("--lr", type=float)
    p.add_argument("--image-size", type=int)
    p.add_argument("--augment", choices=AUGMENTATIONS)
    p.add_argument("--subset", type=int, help="train on the first N training images only")
    p.add_argument("--test-subset", type=int, help="evaluate on the first N test images only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="mixed precision for the forward pass")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predictions", help="write the test predictions CSV (id,label) here")
    p.add_argument("--save-state", help="folder: each process saves its model as rank<R>.pt")
    return p.parse_args(argv)


def _recipe(args):
    overrides = {k: getattr(args, k) for k in ("arch", "epochs", "batch_size", "lr",
                                                "image_size", "augment")
                 if getattr(args, k) is not None}
    if args.weights is not None:
        overrides["weights"] = None if args.weights.lower() == "none" else args.weights
    return replace(RECIPES[args.recipe], **overrides)


def _setup(args) -> tuple[int, int, torch.device]:
    """Join the process group when torchrun started several processes; pick this one's device."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = get_device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # the fastest convolution kernels for our shapes
        torch.set_float32_matmul_precision("high")  # TF32 (torch.compile warns without it)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world,
                                device_id=device if device.type == "cuda" else None)
    return rank, world, device


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    recipe = _recipe(args)
    rank, world, device = _setup(args)
    if recipe.batch_size % world:
        raise ValueError(f"--batch-size {recipe.batch_size} must divide by {world} processes")
    seed_everything(args.seed)  # the same initial model on every process

    images, labels = read_cifar10(args.data_root, train=True, verify=not args.no_verify)
    images, labels = images[:args.subset].to(device), labels[:args.subset]
    train = TensorLoader(images, labels, batch_size=recipe.batch_size // world, train=True,
                         image_size=recipe.image_size, augment=recipe.augment, seed=args.seed,
                         rank=rank, world_size=world, channels_last=args.channels_last)
    model = build_model(recipe.arch, recipe.weights, download=not args.no_download,
                        freeze=recipe.freeze_backbone).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    start = time.perf_counter()
    history = fit_recipe(net, recipe, train, device=device, amp=args.amp,
                         channels_last=args.channels_last, compile_model=args.compile,
                         progress=False if rank else None)
    seconds = time.perf_counter() - start
    if args.save_state:
        os.makedirs(args.save_state, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(args.save_state, f"rank{rank}.pt"))

    result = None
    if rank == 0:
        test_x, test_y = read_cifar10(args.data_root, train=False, verify=not args.no_verify)
        test = TensorLoader(test_x[:args.test_subset].to(device), test_y[:args.test_subset],
                            batch_size=256, train=False, image_size=recipe.image_size,
                            channels_last=args.channels_last)
        scores = evaluate_model(model, test, device=device, amp=args.amp)
        if args.predictions:
            write_predictions_csv(args.predictions, scores["y_pred"])
        result = {"device": str(device), "world_size": world, "recipe": asdict(recipe),
                  "train_loss": history["loss"], "test_accuracy": scores["accuracy"],
                  "train_seconds": round(seconds, 2),
                  "train_images_per_second": round(
                      len(history) * len(train) * recipe.batch_size / seconds, 1)}
        print(json.dumps(result))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
