"""Chapter 7's plumbing: CIFAR-10 files, the batched tensor pipeline, the model and DDP."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course.cifar import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TensorLoader,
    eval_transform,
    random_crop_params,
    read_cifar10,
    train_transform,
)
from course.data import CIFAR10_CLASSES, DatasetMissingError, load_cifar10
from course.project import (
    BASELINE,
    IMPROVED,
    WeightsMissingError,
    build_model,
    evaluate_model,
    fit_recipe,
    make_optimizer,
    make_schedule,
    model_summary,
    parameter_groups,
    weights_cache_path,
    write_predictions,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a CPU shared with other jobs two threads spin against each other
    and a step takes ten times longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- files -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchvision_reads_the_generated_files(fake_cifar10, monkeypatch):
    # The generated files cannot match the official MD5s, so only the MD5 check is switched off
    # here; everything else is torchvision's own CIFAR10 reading code.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *a, **k: True)
    for train, n in ((True, 100), (False, 40)):
        dataset = load_cifar10(fake_cifar10, train=train)
        images, labels = read_cifar10(fake_cifar10, train=train, verify=False)
        assert len(dataset) == n and dataset.classes == CIFAR10_CLASSES
        assert images.dtype == torch.uint8 and images.shape == (n, 3, 32, 32)
        np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), dataset.data)
        assert labels.dtype == torch.int64 and labels.tolist() == dataset.targets
        pil, label = dataset[3]
        np.testing.assert_array_equal(np.asarray(pil), images[3].permute(1, 2, 0).numpy())
        assert label == labels[3]


@pytest.mark.slow
def test_verified_read_rejects_files_that_are_not_the_release(fake_cifar10):
    with pytest.raises(DatasetMissingError, match="corrupted"):
        read_cifar10(fake_cifar10, train=True, verify=True)


@pytest.mark.parametrize("verify", [True, False])
def test_missing_dataset_names_folder_and_files(tmp_path, verify):
    with pytest.raises(DatasetMissingError) as info:
        read_cifar10(tmp_path / "nowhere", verify=verify)
    message = str(info.value)
    assert str((tmp_path / "nowhere" / "cifar-10-batches-py").resolve()) in message
    for name in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert name in message
    assert "cifar-10-python.tar.gz" in message


# --- weights -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_missing_weights_say_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert weights_cache_path("resnet50", "IMAGENET1K_V1") == expected
    with pytest.raises(WeightsMissingError) as info:
        build_model("resnet50", "IMAGENET1K_V1", download=False)
    message = str(info.value)
    assert str(expected) in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    with pytest.raises(WeightsMissingError, match="does not exist"):
        build_model("resnet18", str(tmp_path / "mine.pth"))
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_model("resnet18", "IMAGENET9K")


@pytest.mark.slow
def test_weights_come_from_the_cache_or_a_file(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    imagenet = resnet18().state_dict()
    cached = weights_cache_path("resnet18", "IMAGENET1K_V1")
    cached.parent.mkdir(parents=True)
    torch.save(imagenet, cached)
    for weights in ("IMAGENET1K_V1", str(cached)):
        model = build_model("resnet18", weights, download=False)
        assert model.fc.out_features == 10
        torch.testing.assert_close(model.conv1.weight, imagenet["conv1.weight"])
        torch.testing.assert_close(model.layer4[1].bn2.running_var,
                                   imagenet["layer4.1.bn2.running_var"])
    # a checkpoint of the 10-class model itself loads with its head
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    again = build_model("resnet18", str(tmp_path / "mine.pth"))
    torch.testing.assert_close(again.fc.weight, model.fc.weight)


def test_frozen_backbone_trains_only_the_head():
    model = build_model("resnet18", None, freeze=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    summary = model_summary(model, image_size=32)
    assert summary.loc["total", "trainable"] == 512 * 10 + 10
    assert summary.loc["total", "parameters"] == sum(p.numel() for p in model.parameters())
    assert summary.loc["fc", "output shape"] == (1, 10)
    assert summary.loc["layer4", "output shape"] == (1, 512, 1, 1)


# --- the batched pipeline ----------------------------------------------------------------------

def _images(n=16, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_transforms_give_normalized_float32_of_the_right_size():
    value = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = ((200 / 255 - mean) / std).view(1, 3, 1, 1).expand(4, 3, 48, 48)
    for out in (eval_transform(value, 48),
                train_transform(value, 48, "none", generator=torch.Generator().manual_seed(0)),
                train_transform(value, 48, "strong", generator=torch.Generator().manual_seed(0))):
        assert out.dtype == torch.float32 and out.shape == (4, 3, 48, 48)
        torch.testing.assert_close(out, expected)
    x = _images()
    out = train_transform(x, 64, "baseline", generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (16, 3, 64, 64)


def test_eval_transform_is_a_deterministic_resize():
    x = _images()
    a, b = eval_transform(x, 224), eval_transform(x, 224)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    resized = F.interpolate(x.float() / 255, size=(224, 224), mode="bilinear",
                            align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(a, (resized - mean) / std)
    # the training path with no crop and no flip is the same resize
    same = train_transform(x, 224, "none", flip_p=0.0)
    torch.testing.assert_close(same, a, atol=1e-4, rtol=0)


@pytest.mark.parametrize("augment", ["baseline", "strong", "none"])
def test_separable_resampling_equals_affine_grid_sample(augment):
    # the oracle: torch's own 2-D bilinear sampler with the same per-sample affine matrices
    x = _images(8)
    theta = random_crop_params(8, augment, generator=torch.Generator().manual_seed(5))
    grid = F.affine_grid(theta, [8, 3, 40, 40], align_corners=False)
    sampled = F.grid_sample(x.float() / 255, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
    sampled = sampled * (grid.abs() <= 1).all(dim=-1).unsqueeze(1)  # zeros outside the image
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = train_transform(x, 40, augment, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, (sampled - mean) / std, atol=1e-4, rtol=0)


@pytest.mark.parametrize("augment", ["baseline", "strong"])
def test_every_sample_gets_its_own_crop_and_flip(augment):
    x = _images(1).expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    out = train_transform(x, 48, augment, generator=torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    distinct = {tuple(row.tolist()) for row in flat}
    assert len(distinct) == 32  # no two samples share a crop
    again = train_transform(x, 48, augment, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again, rtol=0, atol=0)  # same seed, same batch
    other = train_transform(x, 48, augment, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


def test_flips_are_per_sample_mirror_images():
    x = _images(1).expand(64, -1, -1, -1).contiguous()
    out = train_transform(x, 32, "none", generator=torch.Generator().manual_seed(0))
    plain = eval_transform(x[:1], 32)[0]
    is_plain = [torch.allclose(o, plain, atol=1e-5) for o in out]
    is_mirror = [torch.allclose(o, plain.flip(-1), atol=1e-5) for o in out]
    assert all(p or m for p, m in zip(is_plain, is_mirror, strict=True))
    assert 16 <= sum(is_mirror) <= 48  # p = 0.5 on 64 samples


def test_crops_have_the_documented_geometry():
    g = torch.Generator().manual_seed(0)
    theta = random_crop_params(1000, "strong", scale=(0.35, 1.0), generator=g)
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    assert torch.all(theta[:, 0, 2].abs() + w <= 1 + 1e-6)  # the box stays inside the image
    assert torch.all(theta[:, 1, 2].abs() + h <= 1 + 1e-6)
    assert torch.all(w * h >= 0.35 - 1e-6) and torch.all(w * h <= 1 + 1e-6)
    theta = random_crop_params(1000, "baseline", padding=0.125, generator=g)
    assert torch.all(theta[:, 0, 0].abs() == 1) and torch.all(theta[:, 1, 1] == 1)
    assert torch.all(theta[:, :, 2].abs() <= 0.25)  # at most 4 of 32 pixels each way
    with pytest.raises(ValueError, match="augment"):
        random_crop_params(2, "cutmix")


def test_tensor_loader_shards_like_distributed_sampler():
    x, y = _images(50), torch.arange(50)
    shards = [TensorLoader(x, y, batch_size=5, train=True, image_size=32, rank=r,
                           world_size=2, seed=3) for r in range(2)]
    assert [len(s) for s in shards] == [5, 5]
    first = [torch.cat([b[1] for b in s]) for s in shards]
    assert set(first[0].tolist()).isdisjoint(first[1].tolist())
    assert len(set(first[0].tolist()) | set(first[1].tolist())) == 50
    second = torch.cat([b[1] for b in shards[0]])
    assert not torch.equal(first[0], second)  # a new order every epoch
    test = TensorLoader(x, y, batch_size=16, train=False, image_size=32)
    assert len(test) == 4 and torch.equal(torch.cat([b[1] for b in test]), y)
    with pytest.raises(ValueError, match="uint8"):
        TensorLoader(x.float(), y, batch_size=4, train=True)


# --- recipes, training, evaluation -------------------------------------------------------------

def test_baseline_is_the_notes_run():
    assert (BASELINE.arch, BASELINE.weights) == ("resnet50", "IMAGENET1K_V1")
    assert (BASELINE.epochs, BASELINE.batch_size, BASELINE.lr) == (3, 128, 1e-3)
    assert (BASELINE.optimizer, BASELINE.momentum, BASELINE.weight_decay) == ("sgd", 0.0, 0.0)
    assert (BASELINE.image_size, BASELINE.augment, BASELINE.schedule) == (224, "baseline",
                                                                         "constant")
    assert BASELINE.label_smoothing == 0 and not BASELINE.freeze_backbone
    model = build_model("resnet18", None)
    opt = make_optimizer(model, BASELINE)
    assert type(opt) is torch.optim.SGD
    assert all(g["lr"] == 1e-3 and g["momentum"] == 0 and g["weight_decay"] == 0
               for g in opt.param_groups)
    assert IMPROVED.epochs == 3 and IMPROVED.nesterov


def test_weight_decay_skips_norms_and_biases():
    model = build_model("resnet18", None)
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    decayed = {id(p) for p in decay["params"]}
    assert id(model.conv1.weight) in decayed and id(model.fc.weight) in decayed
    assert id(model.bn1.weight) not in decayed and id(model.fc.bias) not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = make_schedule(opt, IMPROVED, steps_per_epoch=10)  # 30 steps, 2 of warm-up
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] < 0.002


@pytest.mark.slow
def test_fit_recipe_trains_and_writes_predictions(fake_cifar10, tmp_path):
    from dataclasses import replace

    torch.manual_seed(0)
    images, labels = read_cifar10(fake_cifar10, verify=False)
    test_x, test_y = read_cifar10(fake_cifar10, train=False, verify=False)
    recipe = replace(IMPROVED, arch="resnet18", weights=None, epochs=2, batch_size=50,
                     image_size=32)
    train = TensorLoader(images, labels, batch_size=50, train=True, image_size=32,
                         augment=recipe.augment)
    test = TensorLoader(test_x, test_y, batch_size=64, train=False, image_size=32)
    model = build_model(recipe.arch, recipe.weights)
    history = fit_recipe(model, recipe, train, test, device="cpu", progress=False)
    assert len(history) == 2 and all(np.isfinite(history["val_loss"]))
    assert history["lr"][1] < recipe.lr  # the cosine part of the schedule
    scores = evaluate_model(model, test, device="cpu")
    assert scores["confusion"].shape == (10, 10) and scores["confusion"].sum() == 40
    assert scores["accuracy"] == pytest.approx(np.trace(scores["confusion"]) / 40)
    assert "macro avg" in scores["table"].index
    path = write_predictions(tmp_path / "out" / "predictions.csv", scores["y_pred"])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", "label"] and len(rows) == 41
    assert [int(r[0]) for r in rows[1:]] == list(range(40))
    assert all(r[1] == CIFAR10_CLASSES[p] for r, p in zip(rows[1:], scores["y_pred"],
                                                           strict=True))


# --- several processes -------------------------------------------------------------------------

@pytest.mark.slow
def test_ddp_with_gloo_keeps_two_processes_in_step(fake_cifar10, tmp_path):
    out = tmp_path / "state"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COURSE_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "course.train_cifar", "--data-root", str(fake_cifar10),
           "--no-verify", "--arch", "resnet18", "--weights", "none", "--image-size", "32",
           "--subset", "32", "--test-subset", "16", "--batch-size", "16", "--epochs", "1",
           "--recipe", "improved", "--save-state", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    assert '"world_size": 2' in done.stdout
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    torch.manual_seed(0)
    start = build_model("resnet18", None).state_dict()
    assert not torch.equal(rank0["conv1.weight"], start["conv1.weight"])  # it trained
    for name, value in rank0.items():
        if value.is_floating_point() and "running" not in name:
            # the gradients were averaged: every parameter is the same on both processes
            torch.testing.assert_close(rank1[name], value, rtol=0, atol=0, msg=name)


# --- the notes' per-image pipeline and the timing helpers --------------------------------------

def test_batched_transforms_match_the_notes_pil_pipeline():
    from course.throughput import PILImages, pil_eval_pipeline, pil_train_pipeline

    x, y = _images(6), torch.arange(6)
    batched = eval_transform(x, 64)
    for transform in (pil_eval_pipeline(64), pil_train_pipeline(64, padding=0, flip_p=0)):
        per_image = torch.stack([PILImages(x, y, transform)[i][0] for i in range(6)])
        torch.testing.assert_close(per_image, batched, atol=1e-4, rtol=0)
    flipped = torch.stack([PILImages(x, y, pil_train_pipeline(64, padding=0, flip_p=1))[i][0]
                           for i in range(6)])
    torch.testing.assert_close(flipped, batched.flip(-1), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_throughput_helpers_measure_something():
    from course.throughput import (
        pil_loader_images_per_second,
        tensor_pipeline_images_per_second,
        train_images_per_second,
    )

    x, y = _images(24), torch.arange(24) % 10
    for value in (pil_loader_images_per_second(x, y, size=32, batch_size=8, batches=2),
                  tensor_pipeline_images_per_second(x, size=32, batch_size=8, batches=2),
                  train_images_per_second(build_model("resnet18", None), image_size=32,
                                          batch_size=4, steps=1, warmup=1,
                                          channels_last=True)):
        assert isinstance(value, float) and np.isfinite(value) and value > 0


@pytest.mark.slow
def test_notebook_stops_with_the_dataset_error_when_cifar10_is_missing(tmp_path):
    import papermill as pm

    notebook = ROOT / "source" / "07_cifar10_project" / "07_cifar10_project.ipynb"
    missing = tmp_path / "no-cifar"
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"),
                            parameters={"DATA_ROOT": str(missing), "DEVICE": "cpu"},
                            cwd=str(notebook.parent), progress_bar=False, log_output=False)
    assert info.value.ename == "DatasetMissingError"
    assert str(missing / "cifar-10-batches-py") in info.value.evalue
    assert "cifar-10-python.tar.gz" in info.value.evalue
