"""torchrun: one model trained by 2 CPU processes (gloo) equals the single-process model; masks agree; rank 0 writes.

Why the comparison holds, and to which tolerance: the ranks' batches of one step are together the
global batch one process draws (`ShardSampler`), DistributedDataParallel averages the ranks'
gradients (equal batches, so the average is the global batch's mean gradient), and everything else
(schedule, masks) is a function of the weights and the step. What is left is float32 summation
order: the mean of two 32-example means is not bit-equal to one 64-example mean. Measured: 1.5e-8
at most on the weights after 120 steps; the tolerance is 1e-5 (three orders above, far below
anything a training difference gives: a wrong batch order moved the weights by 1e-2).

Two choices keep it a float tolerance. The model is `lenet5`, which has no BatchNorm: with
BatchNorm each rank normalises its own half batch (per-rank statistics; SyncBatchNorm does not run
on CPU), a different model by ~1e-2 (measured on small_cnn). And the learning rate (0.01) keeps
these 120 steps on the loss plateau: once the loss falls fast, training amplifies any float
difference (measured at lr 0.05 over 220 steps: 0.16 on the weights between torchrun and one
process, and as much between one process with 1 and with 2 threads), which says nothing about torchrun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import TensorDataset

from reports.contract import MODELS_DIR, RESUME_STATE_FILE
from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.data.info import DatasetBundle
from robustsparse.data.loaders import ShardSampler, make_loaders
from robustsparse.errors import ConfigError
from robustsparse.pipeline import run_experiment
from robustsparse.train.distributed import DistContext, MasksDiverged, check_masks_agree, masks_digest
from robustsparse.train.loop import train_one_epoch

ROOT = Path(__file__).resolve().parents[2]
WEIGHT_TOLERANCE = 1e-5  # see the module docstring

CONFIG = {
    "name": "ddp",
    "seeds": [0],
    # 960 examples split evenly over 2 ranks (no padding): the ranks' batches are exactly one process's
    "data": {"dataset": "digits", "train_examples": 960, "test_examples": 120},
    "model": {"arch": "lenet5"},
    "train": {"epochs": 8, "batch_size": 64, "lr": 0.01, "momentum": 0.9, "lr_schedule": "cosine"},
    "sparsity": {
        "method": "campfire",
        "granularity": "element",
        "target_sparsity": 0.7,
        "from_dense": False,
        "start_epoch": 0,
        "end_epoch": 2,
    },
    "attack": {"n_examples": 60, "sanity_checks": False, "specs": [{"name": "fgsm", "eps": ["8/255"]}]},
}


def _env() -> dict[str, str]:
    # one thread a process; no .pyc writes, so a rank limited to zero-byte files (below) runs at all
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
    }


def _torchrun(args: list[str], log_dir: Path, *, rank1_cannot_write: bool = False) -> subprocess.Popen:
    """`torchrun --nproc_per_node=2 -m robustsparse ARGS`, each rank's output in its own file under `log_dir`.

    With `rank1_cannot_write`, rank 1 runs under `ulimit -f 0`: writing a single byte to any file
    kills it (SIGXFSZ) and fails the run, which proves that it writes nothing.
    """
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    launcher += ["--redirects", "3", "--log-dir", str(log_dir)]
    limit = 'if [ "$RANK" != 0 ]; then ulimit -f 0; fi; ' if rank1_cannot_write else ""
    command = ["--no-python", "bash", "-c", limit + 'exec "$0" -m robustsparse "$@"', sys.executable, *args]
    return subprocess.Popen(launcher + command, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def _rank_log(log_dir: Path, rank: int, stream: str) -> str:
    files = sorted(log_dir.rglob(f"{rank}/{stream}.log"))
    return "\n".join(f.read_text() for f in files)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The experiment trained and attacked by one process (in this one) and by torchrun with 2 ranks."""
    root = tmp_path_factory.mktemp("ddp")
    config = root / "ddp.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    single = root / "single"
    run_experiment(config_from_dict(CONFIG), single, device=torch.device("cpu"), progress=False, report=False)
    ddp, logs = root / "ddp", root / "ddp-logs"
    started = time.perf_counter()
    proc = _torchrun(["run", str(config), "--out", str(ddp), "--no-progress", "--no-report"], logs,
                     rank1_cannot_write=True)  # fmt: skip
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, (
        out[-3000:] + _rank_log(logs, 0, "stderr")[-3000:] + _rank_log(logs, 1, "stderr")[-3000:]
    )
    print(f"torchrun 2 ranks: {time.perf_counter() - started:.1f} s")
    return {"config": config, "single": single, "ddp": ddp, "logs": logs, "root": root}


def _assert_same_models(a: Path, b: Path, *, atol: float) -> None:
    for model_dir in sorted((a / MODELS_DIR).iterdir()):
        other = b / MODELS_DIR / model_dir.name
        model_a, meta_a, masks_a = load_checkpoint_with_masks(model_dir)
        model_b, meta_b, masks_b = load_checkpoint_with_masks(other)
        assert masks_a.keys() == masks_b.keys()
        assert all(torch.equal(masks_a[k], masks_b[k]) for k in masks_a), model_dir.name
        sa, sb = model_a.state_dict(), model_b.state_dict()
        worst = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
        assert worst <= atol, f"{model_dir.name}: weights differ by {worst:.3g} > {atol}"
        assert meta_a["clean_acc"] == meta_b["clean_acc"] and meta_a["n_test"] == meta_b["n_test"]
        log_a = pd.read_csv(model_dir / "train_log.csv").drop(columns="epoch_seconds")
        log_b = pd.read_csv(other / "train_log.csv").drop(columns="epoch_seconds")
        pd.testing.assert_frame_equal(log_a, log_b, atol=max(atol, 1e-12), rtol=0)  # float32 sums in another order


def test_torchrun_two_ranks_equal_one_process_within_float_tolerance(runs):
    _assert_same_models(runs["single"], runs["ddp"], atol=WEIGHT_TOLERANCE)
    sparse = runs["ddp"] / MODELS_DIR / "campfire-element-70-s0"
    assert load_checkpoint_with_masks(sparse)[1]["achieved_sparsity"] == pytest.approx(0.7, abs=1e-3)
    columns = ["model_id", "key", "n_correct"]  # the attacks (rank 0) give the same counts
    single = pd.read_csv(runs["single"] / "results.csv")[columns]
    ddp = pd.read_csv(runs["ddp"] / "results.csv")[columns]
    pd.testing.assert_frame_equal(single, ddp)


def test_torchrun_masks_are_checked_and_only_rank_0_writes_and_logs(runs):
    logs = runs["logs"]
    # rank 1 ran under `ulimit -f 0` and the run succeeded: it wrote no byte to any file
    rank0, rank1 = _rank_log(logs, 0, "stderr"), _rank_log(logs, 1, "stderr")
    assert "campfire-element-70-s0: finished" in rank0 and "process group joined: gloo, 2 ranks" in rank0
    assert " INFO " not in rank1  # the other ranks log warnings only
    assert "models (2 trained now" in _rank_log(logs, 0, "stdout") and _rank_log(logs, 1, "stdout").strip() == ""
    assert not list(runs["ddp"].rglob(RESUME_STATE_FILE))  # finished: no training state left


def test_an_interrupted_torchrun_training_resumes_to_the_same_model(runs):
    out = runs["root"] / "resumed"
    args = ["train", str(runs["config"]), "--out", str(out), "--no-progress"]
    proc = _torchrun(args, runs["root"] / "killed-logs")
    deadline = time.monotonic() + 300
    # killed once the first epoch is saved: ~15 epochs (seconds) of training are left then
    while not list((out / MODELS_DIR).glob(f"*/{RESUME_STATE_FILE}")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no epoch finished in 300 s"
        time.sleep(0.01)
    # as a scheduler preempting the job: torchrun passes SIGTERM on to its workers (which run in
    # sessions of their own) and ends when they have; Python ends at once on SIGTERM, mid-epoch
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    killed_in = sorted(p.parent.name for p in (out / MODELS_DIR).glob(f"*/{RESUME_STATE_FILE}"))
    assert killed_in, "the run finished before it could be killed"
    logs = runs["root"] / "resumed-logs"
    again = _torchrun(args, logs)
    text, _ = again.communicate(timeout=300)
    assert again.returncode == 0, text[-3000:] + _rank_log(logs, 0, "stderr")[-3000:]
    assert f"{killed_in[0]}: resuming after epoch" in _rank_log(logs, 0, "stderr")
    _assert_same_models(runs["ddp"], out, atol=0.0)  # resumed = uninterrupted, bit for bit


# Rank 1 of the mask check's test: a bare gloo rank (torch only, quick to start) that contributes
# the digest given on its command line twice, as a rank holding those masks would.
_FAKE_RANK = """
import sys, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=1, world_size=2)
for value in sys.argv[2:]:
    dist.all_gather([torch.zeros(1, dtype=torch.int64) for _ in range(2)], torch.tensor([int(value)]))
dist.destroy_process_group()
"""


def _digest_value(masks: dict) -> int:
    return int.from_bytes(masks_digest(masks)[:8], "big", signed=True)


def test_the_mask_check_fires_on_ranks_that_disagree_and_stays_quiet_when_they_agree(tmp_path):
    masks = {"conv.weight": torch.ones(4, 3, 3, 3, dtype=torch.bool), "fc.weight": torch.zeros(10, 4, dtype=torch.bool)}
    flipped = {**masks, "conv.weight": masks["conv.weight"].clone()}
    flipped["conv.weight"][2, 1, 0, 0] = False
    store = tmp_path / "store"
    values = [str(_digest_value(masks)), str(_digest_value(flipped))]  # agrees, then disagrees
    rank1 = subprocess.Popen([sys.executable, "-c", _FAKE_RANK, str(store), *values], env=_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=2)
    try:
        check_masks_agree(masks, device=torch.device("cpu"), where="probe")  # the same masks: quiet
        with pytest.raises(MasksDiverged, match=r"masks differ across ranks probe: ranks \[1\] disagree with rank 0"):
            check_masks_agree(masks, device=torch.device("cpu"), where="probe")
    finally:
        dist.destroy_process_group()
    out, _ = rank1.communicate(timeout=120)
    assert rank1.returncode == 0, out


# ---------------------------------------------------------------------------------- no processes


def _indexed_bundle(n: int) -> DatasetBundle:
    """A dataset whose image i is the number i, so a batch tells which examples it holds."""
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    data = TensorDataset(images, torch.zeros(n, dtype=torch.int64))
    return DatasetBundle(info=None, train=data, test=data)  # type: ignore[arg-type]


class _Recorder(torch.nn.Module):
    """A one-weight model that records the example numbers of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, 2))
        self.batches: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(sorted(int(v) for v in x.flatten()))
        return x.flatten(1) @ self.weight


@pytest.mark.parametrize("world_size", [2, 4])
def test_the_ranks_batches_of_a_step_are_the_single_process_batch(world_size):
    bundle, global_batch, seed = _indexed_bundle(96), 16, 7
    train, _ = make_loaders(bundle, batch_size=global_batch, seed=seed)
    shards = [
        make_loaders(bundle, batch_size=global_batch, seed=seed, rank=r, world_size=world_size)[0]
        for r in range(world_size)
    ]
    for epoch in range(3):
        model = _Recorder()
        train.generator.manual_seed(seed + epoch)  # what the trainer does every epoch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        train_one_epoch(model, train, optimizer, None, device=torch.device("cpu"), progress=False)  # its own iteration
        per_rank = []
        for loader in shards:
            loader.sampler.set_epoch(epoch)
            per_rank.append([sorted(int(v) for v in x.flatten()) for x, _ in loader])
        together = [sorted(sum((batches[k] for batches in per_rank), [])) for k in range(len(per_rank[0]))]
        assert together == model.batches, f"epoch {epoch}"
        assert len(shards[0]) == len(train)  # the same steps per epoch: the same pruning schedule per step


def test_shard_sampler_pads_so_every_rank_takes_the_same_steps():
    ranks = [list(ShardSampler(10, rank=r, world_size=4, seed=0)) for r in range(4)]
    assert {len(r) for r in ranks} == {3}
    assert sorted(set(sum(ranks, []))) == list(range(10))  # every example, two of them twice


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(ValueError, match="set it to a multiple of 3"):
        make_loaders(_indexed_bundle(30), batch_size=16, rank=0, world_size=3)


def test_the_test_shards_hold_every_example_once():
    bundle = _indexed_bundle(11)
    shards = [make_loaders(bundle, batch_size=6, eval_batch_size=4, rank=r, world_size=3)[1] for r in range(3)]
    seen = sorted(int(v) for loader in shards for x, _ in loader for v in x.flatten())
    assert seen == list(range(11))  # no padding: summed counts are exact


def test_dist_context_reads_torchrun_environment():
    assert DistContext.from_env({}) is None
    ctx = DistContext.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert ctx == DistContext(rank=2, world_size=4, local_rank=0) and not ctx.is_main
    assert ctx.device(torch.device("cuda")) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="torchrun environment incomplete"):
        DistContext.from_env({"RANK": "0"})
    with pytest.raises(ConfigError, match="outside WORLD_SIZE"):
        DistContext.from_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def test_masks_digest_tells_one_flipped_bit_and_one_renamed_mask():
    masks = {"a": torch.ones(3, 3, dtype=torch.bool), "b": torch.zeros(4, dtype=torch.bool)}
    flipped = {**masks, "a": masks["a"].clone()}
    flipped["a"][1, 1] = False
    renamed = {"c": masks["a"], "b": masks["b"]}
    assert masks_digest(masks) == masks_digest(dict(reversed(masks.items())))  # order of the dict does not matter
    assert len({masks_digest(masks), masks_digest(flipped), masks_digest(renamed)}) == 3


def test_a_method_with_trainable_state_of_its_own_is_refused_under_torchrun(tmp_path):
    from robustsparse.train.jobs import dense_job, sparse_job
    from robustsparse.train.trainer import train_job

    cfg = config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 64},
            "train": {"epochs": 1, "batch_size": 32},
            "sparsity": {"method": "npn", "granularity": "filter", "target_sparsity": 0.5, "end_epoch": 1},
        }
    )
    cpu = torch.device("cpu")
    train_job(dense_job(cfg, 0), tmp_path / "dense-s0", device=cpu, progress=False)  # npn starts from it
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    rank0_of_2 = DistContext(rank=0, world_size=2, local_rank=0)  # refused before any collective is needed
    with pytest.raises(ConfigError, match="method 'npn' trains state of its own, which torchrun does not synchronise"):
        train_job(job, tmp_path / job.model_id, device=cpu, progress=False, distributed=rank0_of_2)
    assert not any((tmp_path / job.model_id).iterdir())  # nothing written
    # the command line refuses it before anything is written (no run folder, no dense parent)
    from robustsparse.pipeline.experiment import prepare_distributed

    with pytest.raises(ConfigError, match="method 'npn' trains state of its own"):
        prepare_distributed(cfg, tmp_path / "run", restart=False, distributed=rank0_of_2)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_every_method_but_npn_trains_under_torchrun_with_masks_agreeing(tmp_path):
    """~20 s: every mask update of every method is checked across the 2 ranks (a mismatch fails the run)."""
    gradual = {"granularity": "element", "target_sparsity": 0.7, "from_dense": True, "start_epoch": 0, "end_epoch": 2}
    settings = {
        "name": "ddp-methods",
        "data": {"dataset": "digits", "train_examples": 320, "test_examples": 100},
        "model": {"arch": "small_cnn"},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.05},
        "sparsity": [
            {**gradual, "method": ["campfire", "random", "snip", "synflow", "drop_pruning", "hybrid"]},
            {**gradual, "method": "psconv", "granularity": "window"},
            {**gradual, "method": "pconv", "granularity": "kernel"},
            {**gradual, "method": "campfire", "granularity": "filter", "allow_regrowth": True},
        ],
    }
    config = tmp_path / "methods.yaml"
    config.write_text(yaml.safe_dump(settings))
    logs = tmp_path / "logs"
    proc = _torchrun(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"], logs)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, (
        out[-3000:] + _rank_log(logs, 0, "stderr")[-3000:] + _rank_log(logs, 1, "stderr")[-3000:]
    )
    summary = _rank_log(logs, 0, "stdout")
    for method in ["campfire", "random", "snip", "synflow", "drop_pruning", "hybrid", "psconv", "pconv"]:
        assert f"{method}-" in summary
    assert summary.count(" trained") == 11 and "failed to train" not in summary  # 2 dense + 9 sparse, none failed
