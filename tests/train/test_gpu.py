"""The CUDA path: bf16 autocast + channels-last training keeps pruned weights at zero, and attacks on
CUDA agree with the CPU. The `gpu` tests need CUDA (`pytest -m gpu`, run by benchmarks/gpu_check.sh);
the training step also runs on the CPU here (autocast and channels-last are then no-ops), so its
code path cannot rot where no GPU is."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import attacks
from robustsparse.models import create_model
from robustsparse.sparsity import SparsityConfig
from robustsparse.sparsity.methods import build_pruner
from robustsparse.train.loop import train_one_epoch

needs_cuda = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU machine: pytest -m gpu)"),
]


def _sparse_training_epoch(device: torch.device):
    """ResNet-20 with Campfire 70% (element, one shot), one short epoch with amp and channels-last."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    model.to(device)
    if device.type == "cuda":  # as the trainer does
        model.to(memory_format=torch.channels_last)
    sparsity = SparsityConfig(
        method="campfire", granularity="element", target_sparsity=0.7, schedule="one_shot", end_epoch=0
    )
    images, labels = torch.rand(48, 3, 32, 32), torch.randint(0, 10, (48,))
    loader = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 48, 16)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = build_pruner(model, sparsity, len(loader), 0)
    pruner.step(0, optimizer)
    seen: list[tuple[torch.dtype, bool]] = []  # the first conv's output dtype and input layout, per forward
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(
        lambda _m, inputs, output: seen.append(
            (output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last))
        )
    )

    def on_step_end(step: int) -> None:
        pruner.step(step, optimizer)
        pruner.apply_(optimizer)

    try:
        stats = train_one_epoch(
            model,
            loader,
            optimizer,
            None,
            device=device,
            amp=True,
            channels_last=True,
            on_step_end=on_step_end,
            progress=False,
        )
    finally:
        hook.remove()
    return model, pruner, stats, seen


def _check_masks_hold(model, pruner, stats) -> None:
    assert math.isfinite(stats["loss"]) and stats["steps"] == 3
    params = dict(model.named_parameters())
    assert pruner.masks
    pruned = kept = 0
    for name, mask in pruner.masks.items():
        weight = params[name].detach()
        assert torch.all(weight[~mask.to(weight.device)] == 0), name  # exactly zero after every step
        pruned, kept = pruned + int((~mask).sum()), kept + int(mask.sum())
    assert abs(pruned / (pruned + kept) - 0.7) < 0.01


def test_an_amp_channels_last_sparse_training_epoch_keeps_pruned_weights_at_zero_on_the_cpu():
    model, pruner, stats, seen = _sparse_training_epoch(torch.device("cpu"))
    _check_masks_hold(model, pruner, stats)
    assert {dtype for dtype, _ in seen} == {torch.float32}  # autocast is CUDA-only


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_bf16_autocast_and_channels_last_train_on_cuda_and_keep_pruned_weights_at_zero(device):
    model, pruner, stats, seen = _sparse_training_epoch(torch.device(device))
    _check_masks_hold(model, pruner, stats)
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen)  # autocast ran the convs in bf16
    assert all(channels_last for _, channels_last in seen)  # and fed them channels-last images
    assert next(model.parameters()).is_cuda


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_attacks_on_cuda_agree_with_the_cpu(device, tiny_run):
    """The same model, examples and seeds: the CPU's and CUDA's outcomes differ at most on a few
    examples whose margin is within float rounding (1% of the examples), FGSM's clean outcomes not at all."""
    from robustsparse.checkpoints import load_checkpoint
    from robustsparse.config import load_config
    from robustsparse.data import load_tensors
    from robustsparse.train.trainer import load_job_data

    cfg = load_config(tiny_run / "config.yaml")
    images, labels = load_tensors(load_job_data(cfg.data).test, 200)
    specs = ["fgsm:eps=4/255", "fgsm:eps=16/255", "pgd:eps=16/255,steps=5"]
    outcomes = {}
    for where in ("cpu", device):
        model, _ = load_checkpoint(tiny_run / "models" / "dense-s0", device=where)
        outcomes[where] = attacks.evaluate(model, images.to(where), labels.to(where), specs, seed=0, batch_size=100)
    cpu, cuda = outcomes["cpu"], outcomes[device]
    assert np.array_equal(cpu.clean_correct, cuda.clean_correct) and cpu.clean_correct.sum() >= 20  # some to attack
    for spec in cpu.specs:
        differ = int(np.sum(np.asarray(cpu[spec.key].correct) != np.asarray(cuda[spec.key].correct)))
        assert differ <= 2, (spec.key, differ)
