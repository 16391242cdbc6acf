"""Benchmark chapter 7's input pipelines and training steps; record the figures in RESULTS.md.

    python benchmarks/pipeline.py                      # CPU (or the default device), small
    python benchmarks/pipeline.py --device cuda --data-root data --full   # a GPU, full size

It measures, on the same images:

* images/second of the notes' per-image pipeline: a DataLoader over PIL images with ToTensor,
  Resize, RandomCrop, RandomHorizontalFlip and Normalize (``course.throughput``), copied to the
  device, for each ``--workers`` count;
* images/second of the batched tensor pipeline (``course.cifar.train_transform``) on uint8
  images already on the device, and the ratio of the two;
* images/second of training steps (forward, backward, SGD step) of ``--arch``: on a CPU at a
  small size in float32; on a GPU at 224x224 in float32, bf16, bf16 + channels_last, and
  bf16 + channels_last + torch.compile (skipped on the CPU, where compiling takes minutes);
* with ``--full`` (a GPU and the CIFAR-10 files): the notes' 3-epoch baseline and the improved
  recipe, end to end, with their test accuracy (``course.train_cifar``).

The figures replace this device's section of ``--results`` (benchmarks/RESULTS.md): one per GPU
model, one for the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from course.cifar import read_cifar10
from course.device import get_device, seed_everything
from course.project import build_model
from course.throughput import (
    pil_loader_images_per_second,
    tensor_pipeline_images_per_second,
    train_images_per_second,
)

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", help="CIFAR-10 folder; without it, random uint8 images")
    p.add_argument("--size", type=int, default=224, help="pipeline output size (the notes: 224)")
    p.add_argument("--batch-size", type=int, default=128)
    # fewer than ~20 timed batches are dominated by warm-up noise (seen: 0.7x to 1.9x)
    p.add_argument("--batches", type=int, default=20, help="timed batches per pipeline")
    p.add_argument("--workers", type=int, nargs="+", help="DataLoader workers to try "
                   "(default: 0 and 2 on a CPU, 0 and min(8, cores) on a GPU machine)")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--train-size", type=int, help="training-step image size "
                   "(default 64 on a CPU, 224 on a GPU)")
    p.add_argument("--train-batch", type=int, help="training-step batch (default 16 / 128)")
    p.add_argument("--steps", type=int, help="timed training steps (default 3 on a CPU, 20)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    p.add_argument("--full", action="store_true",
                   help="also train the baseline and improved recipes for 3 epochs (GPU)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--note", default="", help="a remark written with the figures")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    return p.parse_args(argv)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def load_images(data_root: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if data_root:
        images, labels = read_cifar10(data_root, train=True)
        return images[:n], labels[:n], f"CIFAR-10 training images from {data_root}"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (n,), generator=g), "random 32x32 uint8 images"


def measure_pipelines(args, device, images, labels) -> list[tuple[str, float]]:
    rows = []
    for workers in args.workers:
        rows.append((f"per-image PIL pipeline, DataLoader num_workers={workers}",
                     pil_loader_images_per_second(images, labels, size=args.size,
                                                  batch_size=args.batch_size,
                                                  batches=args.batches, num_workers=workers,
                                                  device=device)))
    on_device = images.to(device)
    for augment in ("baseline", "strong"):
        rows.append((f"batched tensor pipeline on {device.type}, augment={augment}",
                     tensor_pipeline_images_per_second(on_device, size=args.size,
                                                       augment=augment,
                                                       batch_size=args.batch_size,
                                                       batches=args.batches)))
    return rows


def measure_training(args, device) -> list[tuple[str, float]]:
    configs = [("float32", None, False, False)]
    if device.type == "cuda":
        configs += [("bf16 autocast", "bf16", False, False),
                    ("bf16 + channels_last", "bf16", True, False)]
        if not args.no_compile:
            configs.append(("bf16 + channels_last + torch.compile", "bf16", True, True))
    else:
        configs.append(("float32 + channels_last", None, True, False))
    rows = []
    for name, amp, channels_last, compile_model in configs:
        seed_everything(0)
        model = build_model(args.arch, None)
        ips = train_images_per_second(model, image_size=args.train_size,
                                      batch_size=args.train_batch, steps=args.steps,
                                      warmup=3 if compile_model else 2, device=device, amp=amp,
                                      channels_last=channels_last,
                                      compile_model=compile_model)
        rows.append((f"{args.arch} training steps {args.train_size}x{args.train_size}, "
                     f"batch {args.train_batch}, {name}", ips))
        del model
    return rows


def full_runs(args) -> list[dict]:
    from course.train_cifar import main as train

    results = []
    for recipe in ("baseline", "improved"):
        argv = ["--data-root", args.data_root, "--recipe", recipe, "--amp", "bf16",
                "--channels-last", "--device", args.device]
        results.append(train(argv))
    return results


def section(device_type: str, title: str, lines: list[str]) -> str:
    return "\n".join([f"<!-- BEGIN {device_type} -->", f"## {title}", "", *lines,
                      f"<!-- END {device_type} -->"])


def write_results(path: Path, device_type: str, text: str) -> None:
    old = path.read_text() if path.exists() else "# Chapter 7 benchmark results\n"
    pattern = re.compile(rf"<!-- BEGIN {device_type} -->.*?<!-- END {device_type} -->", re.S)
    new = pattern.sub(lambda _m: text, old) if pattern.search(old) else f"{old}\n{text}\n"
    path.write_text(new)


def main(argv=None):
    args = parse_args(argv)
    device = get_device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workers = args.workers or ([0, min(8, os.cpu_count() or 1)] if gpu else [0, 2])
    args.train_size = args.train_size or (224 if gpu else 64)
    args.train_batch = args.train_batch or (128 if gpu else 16)
    args.steps = args.steps or (20 if gpu else 3)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")  # TF32 (torch.compile warns without it)
    n = args.batch_size * (args.batches + 1)
    images, labels, source = load_images(args.data_root, n)

    start = time.perf_counter()
    pipelines = measure_pipelines(args, device, images, labels)
    training = measure_training(args, device)
    best_pil = max(v for k, v in pipelines if k.startswith("per-image"))
    batched = dict(pipelines)[f"batched tensor pipeline on {device.type}, augment=baseline"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    command = shlex.join(["python", "benchmarks/pipeline.py",
                          *(sys.argv[1:] if argv is None else argv)])
    lines = [f"Device: **{device_name(device)}**; torch {torch.__version__}; "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average {load} at the end; "
             f"{torch.get_num_threads()} torch "
             f"threads; images: {source}; "
             f"command: `{command}`", ""]
    if args.note:
        lines += [args.note, ""]
    lines += [f"Input pipelines, {args.size}x{args.size} output, batch {args.batch_size}, "
              f"{args.batches} timed batches:", "", "| pipeline | images/s |", "|---|---:|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in pipelines]
    lines += ["", f"**Ratio batched / best per-image pipeline: {batched / best_pil:.1f}x**", "",
              "| training (model alone, one batch already on the device) | images/s |",
              "|---|---:|"]
    lines += [f"| {k} | {v:,.1f} |" for k, v in training]
    if args.full:
        if not args.data_root:
            raise SystemExit("--full needs --data-root with the CIFAR-10 files")
        lines += ["", "| recipe (3 epochs, bf16, channels_last) | test accuracy | "
                  "train images/s | train seconds |", "|---|---:|---:|---:|"]
        for name, r in zip(("baseline", "improved"), full_runs(args), strict=True):
            lines.append(f"| {name} | "
                         f"{r['test_accuracy']:.4f} | {r['train_images_per_second']:,.0f} | "
                         f"{r['train_seconds']:.0f} |")
    lines += ["", f"(benchmark took {time.perf_counter() - start:.0f} s)", ""]
    # One section per GPU model (an H100 run keeps the H200 figures), one for the CPU.
    key = re.sub(r"[^a-z0-9]+", "-", f"cuda {device_name(device)}".lower()).strip("-") \
        if gpu else device.type
    title = f"GPU: {device_name(device)}" if gpu else device.type.upper()
    write_results(Path(args.results), key, section(key, title, lines))
    print("\n".join(lines))
    print(json.dumps({"pipelines": dict(pipelines), "training": dict(training),
                      "ratio": batched / best_pil}))


if __name__ == "__main__":
    main()
