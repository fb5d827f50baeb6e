"""Train one job (dense, or sparse by a registered method) into its model folder, resumably.

Model folder layout (design.md):
    model.pt            final weights + masks + pruner state + metadata (written at the end)
    meta.json           metadata; written last, so its presence marks a finished model
    train_log.csv       one row per epoch
    layer_sparsity.csv  per-layer accounting of the final model
    last.pt             training state after the latest epoch (removed when finished)

Every epoch ends with an atomic `last.pt`, so a run killed at any moment restarts from the
last finished epoch and, because every epoch reseeds its randomness from (seed, epoch), ends
with the same weights and masks as an uninterrupted run.

Under torchrun (`distributed` given, world size > 1) every rank runs `train_job` together: the model
is wrapped in DistributedDataParallel, each rank trains on its share of every global batch
(`make_loaders`), computes the masks itself and checks them against the other ranks' after every
mask update and every epoch (`check_masks_agree`), metrics are summed over the ranks, and rank 0
alone writes the files above while the others wait at a barrier. See `robustsparse.train.distributed`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from reports.atomic import write_csv_atomic
from reports.contract import (
    CHECKPOINT_FILE,
    LAYER_SPARSITY_FILE,
    META_FILE,
    RESUME_STATE_FILE,
    TENSORBOARD_DIR,
    TRAIN_LOG_COLUMNS,
    TRAIN_LOG_FILE,
)
from robustsparse.checkpoints import (
    ModelSpec,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from robustsparse.config import DataConfig, ModelConfig, config_to_dict
from robustsparse.data import DatasetBundle, DatasetInfo, eval_subset, load_dataset, make_loaders
from robustsparse.data.device_cache import DeviceBatches, device_loaders
from robustsparse.errors import CheckpointError, ConfigError
from robustsparse.models import NormalizedModel
from robustsparse.sparsity import layer_sparsity_table, model_cost
from robustsparse.sparsity.methods import Pruner, build_pruner, extra_training, get_method, weight_updates
from robustsparse.train.adversarial import RobustLoss, make_adversary
from robustsparse.train.curves import CurveWriter, require_tensorboard
from robustsparse.train.distributed import DistContext, all_reduce_sums, broadcast_buffers, check_masks_agree
from robustsparse.train.jobs import TrainJob
from robustsparse.train.loop import loss_and_accuracy, train_one_epoch
from robustsparse.train.optim import build_optimizer, build_scheduler
from robustsparse.utils.atomic import torch_save_atomic
from robustsparse.utils.runtime import library_versions, set_seed

__all__ = [
    "DEVICE_CACHE_UNDER_TORCHRUN",
    "train_job",
    "model_spec",
    "is_finished",
    "load_job_data",
    "refuse_under_torchrun",
]

log = logging.getLogger(__name__)

STATE_FORMAT = "robustsparse.train_state"

#: why `data.device_cache` is refused under torchrun (each rank would hold and shuffle the whole split)
DEVICE_CACHE_UNDER_TORCHRUN = (
    "data.device_cache is not supported under torchrun (the ranks would not share the batches); "
    "set data.device_cache=false"
)


def load_job_data(data: DataConfig) -> DatasetBundle:
    """The dataset described by `data`, with the training subset applied when one is set."""
    bundle = load_dataset(
        data.dataset,
        root=data.root,
        download=data.download,
        augment=data.augment,
        split_seed=data.split_seed,
        image_size=data.image_size,
    )
    if data.train_examples is not None:
        bundle = replace(bundle, train=eval_subset(bundle.train, data.train_examples))
    return bundle


def refuse_under_torchrun(method: str) -> None:
    """Refuse, with one line, a method whose training torchrun cannot keep identical on every rank.

    A method with trainable state of its own (npn's pruner network) keeps it outside
    DistributedDataParallel: each rank would train its own copy, and the masks would drift apart.

    Raises:
        ConfigError: `method` has such state.
    """
    if method != "none" and get_method(method).extra_state is not None:
        raise ConfigError(
            f"method {method!r} trains state of its own, which torchrun does not synchronise; "
            "train it in one process (robustsparse train without torchrun)"
        )


def is_finished(model_dir: Path, job: TrainJob) -> bool:
    """True when `model_dir` holds this job's finished model (same digest)."""
    if not (model_dir / META_FILE).is_file() or not (model_dir / CHECKPOINT_FILE).is_file():
        return False
    try:
        return read_meta(model_dir).get("config_digest") == job.digest
    except CheckpointError:
        return False


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def model_spec(model: ModelConfig, info: DatasetInfo) -> ModelSpec:
    """The architecture a job of `model` settings builds for a dataset of `info`."""
    mixture = model.mixture_options() if model.norm == "mixture" else {}
    return ModelSpec(
        model.arch,
        info.num_classes,
        info.in_channels,
        info.image_size,
        tuple(info.mean),
        tuple(info.std),
        norm=model.norm,
        mixture=mixture,
    )


def train_job(
    job: TrainJob,
    model_dir: str | Path,
    *,
    device: torch.device,
    bundle: DatasetBundle | None = None,
    models_root: str | Path | None = None,
    progress: bool = True,
    distributed: DistContext | None = None,
) -> dict[str, Any]:
    """Train `job` into `model_dir`, resuming from `last.pt` when present; return its metadata.

    Args:
        job: what to train.
        model_dir: the model folder (created).
        device: where to train.
        bundle: the dataset, if already loaded (else loaded from `job.data`).
        models_root: folder holding the parent model folder (`<models_root>/<parent_id>`).
        progress: show tqdm bars (rank 0 only under torchrun).
        distributed: this process's rank under torchrun (process group joined); None or a world
            size of 1 is the ordinary single-process training.

    Returns:
        The metadata written to `meta.json`.

    Raises:
        ConfigError: under torchrun, a method with trainable state of its own (npn), whose ranks
            would drift apart, or a batch size that does not split over the ranks.
    """
    model_dir = Path(model_dir)
    if job.train.tensorboard:  # before anything is written
        require_tensorboard()
    model_dir.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle = load_job_data(job.data)
    heldout = None
    if job.sparsity is not None and job.sparsity.method != "none" and get_method(job.sparsity.method).holds_out:
        # the method's examples (haloc's logits) are kept out of the weights' training split
        count = get_method(job.sparsity.method).data_examples(job.sparsity)
        train_part, heldout = _hold_out(bundle.train, count, job.seed)
        bundle = replace(bundle, train=train_part)
    world = distributed.world_size if distributed is not None else 1
    is_main = distributed is None or distributed.is_main
    progress = progress and is_main
    set_seed(job.seed)
    try:
        train_loader, test_loader = make_loaders(
            replace(bundle, test=eval_subset(bundle.test, job.data.test_examples)),
            batch_size=job.train.batch_size,
            eval_batch_size=job.train.eval_batch_size,
            num_workers=job.data.num_workers,
            # one process reseeds its loader's generator with _epoch_seed(seed, epoch) every epoch;
            # the ranks' ShardSampler shuffles with seed + epoch: the same orders
            seed=job.seed if world == 1 else _epoch_seed(job.seed, 0),
            pin_memory=device.type == "cuda",
            rank=distributed.rank if distributed is not None else 0,
            world_size=world,
        )
    except ValueError as exc:  # the batch does not split over the ranks
        raise ConfigError(str(exc)) from None
    if job.data.device_cache:
        train_loader, test_loader = _device_cached_loaders(job, bundle, train_loader, test_loader, device, world)
    steps_per_epoch = len(train_loader)
    spec = model_spec(job.model, bundle.info)
    model = spec.build()
    architecture_params = sum(p.numel() for p in model.parameters())  # before any factorisation
    parent_meta = None
    if job.parent_id is not None:
        parent_dir = Path(models_root if models_root is not None else model_dir.parent) / job.parent_id
        parent_model, parent_meta = load_checkpoint(parent_dir)
        model.load_state_dict(parent_model.state_dict())
    model.to(device)
    if job.train.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    sparsity = job.sparsity
    pruner = (
        build_pruner(
            model,
            sparsity,
            steps_per_epoch,
            job.seed,
            example_batch=lambda count=None: _example_batch(
                train_loader.dataset if heldout is None else heldout,
                job.train.batch_size if count is None else count,
                job.seed,
            ),
        )
        if sparsity is not None
        else None
    )
    # a method's own trainable state (its optimiser, held by the pruner) and loss term
    extra_optimizer, extra_loss = extra_training(sparsity, pruner) if pruner is not None else (None, None)
    update_weights = weight_updates(sparsity, pruner) if pruner is not None else None
    if world > 1 and extra_optimizer is not None:
        refuse_under_torchrun(job.method)
    optimizer = build_optimizer(model, job.train)
    scheduler = build_scheduler(optimizer, job.train, steps_per_epoch, sparsity=sparsity)
    adversary = make_adversary(job.train.adversarial)

    start_epoch, rows = 0, []
    state_file = model_dir / RESUME_STATE_FILE
    if state_file.is_file():
        start_epoch, rows = _restore(state_file, job, model, optimizer, scheduler, pruner)
        if start_epoch > 0:
            log.info("%s: resuming after epoch %d", job.model_id, start_epoch)
    if start_epoch == 0 and pruner is not None:
        # Training starts from scratch (no state, or an unreadable one): the schedule's target at
        # step 0 (one-shot, a non-zero initial sparsity) applies before the first step.
        pruner.step(0, optimizer)

    def check_masks(where: str) -> None:
        if pruner is not None and world > 1:
            check_masks_agree(pruner.masks, device=device, where=where)

    check_masks("before training")
    net: nn.Module = model
    if world > 1:
        # broadcasts rank 0's weights and buffers; from here on, gradients are averaged over ranks
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if adversary is not None:  # craft through the plain model: no gradient hooks of DDP on the way
            plain_adversary = adversary
            adversary = lambda _net, images, labels: plain_adversary(model, images, labels)  # noqa: E731
    robust_loss = RobustLoss(adversary, job.train.adversarial) if adversary is not None else None

    def on_step_end(step: int) -> None:
        if pruner is not None:
            before = getattr(pruner, "last_update_step", None)
            pruner.step(step, optimizer)  # recomputes the masks at update points
            pruner.apply_(optimizer)  # a pruned weight (and its momentum) is exactly zero after every step
            # the update points are a function of the global step, the same on every rank
            if getattr(pruner, "last_update_step", None) != before:
                check_masks(f"after the mask update at step {step}")

    started = time.perf_counter()
    curves = CurveWriter(model_dir / TENSORBOARD_DIR) if job.train.tensorboard and is_main else None
    test: dict[str, float] | None = None
    for epoch in range(start_epoch, job.train.epochs):
        tic = time.perf_counter()
        torch.manual_seed(_epoch_seed(job.seed, epoch))
        if getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(_epoch_seed(job.seed, epoch))
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(
            net,
            train_loader,
            optimizer,
            scheduler,
            device=device,
            start_step=epoch * steps_per_epoch,
            label_smoothing=job.train.label_smoothing,
            amp=job.train.amp,
            channels_last=job.train.channels_last,
            on_step_end=on_step_end,
            robust_loss=robust_loss,
            progress=progress,
            desc=f"{job.model_id} epoch {epoch + 1}/{job.train.epochs}",
            extra_loss=extra_loss,
            extra_optimizer=extra_optimizer,
            update_weights=update_weights,
        )
        if world > 1:
            broadcast_buffers(model)  # every rank evaluates (and rank 0 saves) rank 0's BatchNorm statistics
        test = loss_and_accuracy(
            model, test_loader, device=device, amp=job.train.amp, channels_last=job.train.channels_last
        )
        if world > 1:
            stats, test = _reduced(stats, device), _reduced(test, device)
            check_masks(f"at the end of epoch {epoch + 1}")
        row = {  # the columns of reports.contract.TRAIN_LOG (written in its order)
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": stats["loss"],
            "train_acc": stats["acc"],
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "target_sparsity": pruner.current_target if pruner is not None else 0.0,
            "achieved_sparsity": pruner.achieved()["prunable"] if pruner is not None else 0.0,
            "masks_frozen": bool(pruner.frozen) if pruner is not None else True,
            "epoch_seconds": time.perf_counter() - tic,
            "adversarial_seconds": stats["adversarial_seconds"],  # this rank's crafting time, within epoch_seconds
        }
        rows.append(row)
        log.debug(
            "%s epoch %d/%d: train loss %.4f acc %.4f | test acc %.4f | sparsity %.3f",
            job.model_id,
            epoch + 1,
            job.train.epochs,
            stats["loss"],
            stats["acc"],
            test["acc"],
            row["achieved_sparsity"],
        )
        if is_main:
            write_csv_atomic(model_dir / TRAIN_LOG_FILE, pd.DataFrame(rows, columns=TRAIN_LOG_COLUMNS))
            _save_state(state_file, job, epoch + 1, rows, model, optimizer, scheduler, pruner)
            if curves is not None:
                curves.add_epoch(row)
    if curves is not None:
        curves.close()

    # The metadata's accuracy must be what load_checkpoint reproduces in float32: reuse the last
    # epoch's evaluation when it was a plain float32 pass, else evaluate once more.
    mixed_precision = job.train.amp and device.type == "cuda"
    if test is None or mixed_precision:
        test = loss_and_accuracy(model, test_loader, device=device)
        test = _reduced(test, device) if world > 1 else test
    final = test
    if not is_main:  # rank 0 writes the model; the others read its metadata once it is there
        distributed.barrier()
        return read_meta(model_dir)
    meta = _metadata(
        job, bundle, model, spec, architecture_params, pruner, final, parent_meta, time.perf_counter() - started, device
    )
    masks = pruner.masks if pruner is not None else None
    model_cpu = model.to("cpu")
    layer_table = layer_sparsity_table(model_cpu, masks, pruner.granularity_info() if pruner is not None else None)
    write_csv_atomic(model_dir / LAYER_SPARSITY_FILE, layer_table)
    save_checkpoint(
        model_dir / CHECKPOINT_FILE,
        model_cpu,
        spec,
        meta,
        masks=masks,
        pruner_state=pruner.state_dict() if pruner is not None else None,
    )
    state_file.unlink(missing_ok=True)
    log.info(
        "%s: finished, test accuracy %.4f, sparsity %.4f", job.model_id, meta["clean_acc"], meta["achieved_sparsity"]
    )
    if world > 1:
        distributed.barrier()
    return meta


def _device_cached_loaders(
    job: TrainJob,
    bundle: DatasetBundle,
    train_loader: DataLoader,
    test_loader: DataLoader,
    device: torch.device,
    world: int,
) -> tuple[DeviceBatches, DeviceBatches]:
    """The loaders' splits decoded once and held on `device` (`data.device_cache`), same batches sizes."""
    if world > 1:
        raise ConfigError(DEVICE_CACHE_UNDER_TORCHRUN)
    return device_loaders(
        train_loader.dataset,
        test_loader.dataset,
        image_size=bundle.info.image_size,
        augment=job.data.augment,
        batch_size=job.train.batch_size,
        eval_batch_size=job.train.eval_batch_size,
        device=device,
        seed=job.seed,
        num_workers=job.data.num_workers,
    )


def _reduced(stats: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One rank's epoch statistics summed over the ranks: exact sums, then the means from them."""
    loss_sum, correct, n = all_reduce_sums([stats["loss_sum"], stats["correct"], stats["n"]], device=device)
    n_int, correct_int = int(round(n)), int(round(correct))
    return {
        **stats,
        "loss_sum": loss_sum,
        "correct": correct_int,
        "n": n_int,
        "loss": loss_sum / max(n_int, 1),
        "acc": correct_int / max(n_int, 1),
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_state(
    path: Path,
    job: TrainJob,
    epoch: int,
    rows: list[dict],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    pruner: Pruner | None,
) -> None:
    torch_save_atomic(
        path,
        {
            "format": STATE_FORMAT,
            "config_digest": job.digest,
            "epoch": epoch,
            "rows": rows,
            "state_dict": _cpu_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "pruner": pruner.state_dict() if pruner is not None else {},
        },
    )


def _restore(
    path: Path,
    job: TrainJob,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    pruner: Pruner | None,
) -> tuple[int, list[dict]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt state file is a restart from scratch, not a crash
        log.warning(
            "%s: cannot read %s (%s); training this model from the start", job.model_id, path, type(exc).__name__
        )
        path.unlink(missing_ok=True)
        return 0, []
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("config_digest") != job.digest:
        raise CheckpointError(
            f"{path} holds the training state of another model or setting; delete {path.parent} to train {job.model_id} afresh"
        )
    if pruner is not None and hasattr(pruner, "prepare_restore"):
        # a method that changes the architecture (haloc's compact layers) rebuilds it first
        pruner.prepare_restore(state["pruner"], optimizer)
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if pruner is not None:
        pruner.load_state_dict(state["pruner"])
        pruner.apply_(optimizer)
    return int(state["epoch"]), list(state["rows"])


def _total_epochs(meta: dict) -> int:
    """A finished model's total epochs (models written before the field existed: its own epochs)."""
    return int(meta.get("total_epochs", meta.get("epochs", 0)))


def _hold_out(dataset: Any, count: int, seed: int) -> tuple[Subset, Subset]:
    """(the rest, `count` held-out examples) of `dataset`, by a permutation seeded with `seed`.

    Raises:
        ConfigError: `count` leaves no training example.
    """
    n = len(dataset)
    if count >= n:
        raise ConfigError(
            f"config error: the method holds out {count} of the {n} training examples; "
            "lower its held-out count (e.g. sparsity.haloc_holdout_examples)"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return Subset(dataset, sorted(order[count:])), Subset(dataset, order[:count])


def _example_batch(dataset: Any, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `batch_size` examples of a seeded shuffle of the training set, for a method that
    decides its masks from data (snip: one training batch; hybrid: its sensitivity subset).

    Drawn through a loader of its own seeded from the model's seed, so the training loader's
    generator (the batch order of every epoch) is untouched and a resumed run draws the same
    examples. A count above the dataset's size gives the whole (shuffled) set.
    """
    generator = torch.Generator().manual_seed(int(seed))
    x, y = next(iter(DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)))
    return x, y


def _metadata(
    job: TrainJob,
    bundle: DatasetBundle,
    model: NormalizedModel,
    spec: ModelSpec,
    architecture_params: int,
    pruner: Pruner | None,
    final: dict[str, float],
    parent_meta: dict | None,
    seconds: float,
    device: torch.device,
) -> dict[str, Any]:
    info = bundle.info
    example = (1, info.in_channels, info.image_size, info.image_size)
    cost = model_cost(model, example, pruner.masks if pruner is not None else None)
    achieved = pruner.achieved() if pruner is not None else {"prunable": 0.0, "all": 0.0}
    nonzero = cost["nonzero_params"]
    meta = {
        "model_id": job.model_id,
        "arch": spec.arch,
        "normalisation": spec.norm,
        "dataset": job.data.label or info.name,
        "method": job.method,
        "granularity": "dense" if pruner is None else job.sparsity.granularity,
        "target_sparsity": 0.0 if pruner is None else float(job.sparsity.target_sparsity),
        "achieved_sparsity": float(achieved["prunable"]),
        "achieved_sparsity_all": float(achieved["all"]),
        "seed": job.seed,
        "epochs": job.train.epochs,
        # the training budget behind the weights: a model continued from a parent has had both
        "total_epochs": job.train.epochs + (0 if parent_meta is None else _total_epochs(parent_meta)),
        "clean_acc": float(final["acc"]),
        "n_test": int(final["n"]),
        "variant": job.variant,
        "parent": job.parent_id,
        "reference_model_id": job.reference_id,
        "status": "trained",
        "parent_clean_acc": None if parent_meta is None else parent_meta.get("clean_acc"),
        "config_digest": job.digest,
        # total weights of the dense architecture over non-zero weights: for a sparse model its own
        # count; for a low-rank model (a smaller network than the spec builds) the original's
        "compression": float(architecture_params / nonzero) if nonzero else None,
        **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in cost.items()},
        "sparsity": pruner.metadata() if pruner is not None else None,
        "train": config_to_dict(job.train),
        "data": {
            **config_to_dict(job.data),
            "info": {
                **asdict(info),
                "mean": list(info.mean),
                "std": list(info.std),
                "class_names": list(info.class_names),
            },
        },
        "train_seconds": round(seconds, 3),
        "device": str(device),
        "versions": library_versions(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return meta
