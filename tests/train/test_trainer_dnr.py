"""dnr through the trainer: from scratch, resume between rewirings, inspect and the structure checks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.cli import main
from robustsparse.config import config_from_dict
from robustsparse.data import load_tensors
from robustsparse.sparsity import verify_structure
from robustsparse.sparsity.compact import compact_model
from robustsparse.sparsity.masks import mask_sparsity
from robustsparse.train.jobs import sparse_job
from robustsparse.train.trainer import load_job_data

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """A small CNN on 8x8 images: intra-op threads only add overhead; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("granularity", ["element", "channel"])
def test_interrupted_dnr_training_resumes_to_the_same_masks_and_weights(tmp_path, straight_and_resumed, granularity):
    cfg = config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 256},
            "train": {"epochs": 4, "batch_size": 128},  # 2 steps per epoch
            "sparsity": {
                "method": "dnr",
                "granularity": granularity,
                "target_sparsity": 0.7,
                "end_epoch": 4,
                # rewiring at step 4 (epoch 2), frozen at step 8: the run killed in epoch 2 resumes
                # from the state after epoch 1, between two rewirings, with momentum accumulated
                "update_every": 2,
                "dnr_anneal": "linear",
            },
        }
    )
    bundle = load_job_data(cfg.data)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id is None  # one training run from scratch
    straight = straight_and_resumed(job, tmp_path, bundle)
    model, meta, masks = load_checkpoint_with_masks(straight)
    assert meta["method"] == "dnr" and meta["parent"] is None and meta["granularity"] == granularity
    assert verify_structure(model, masks, meta) == []
    written = json.loads((straight / "meta.json").read_text())["sparsity"]
    names = [n for n, m in masks.items() if m.dim() > 1]
    sparsity = mask_sparsity(masks, names)
    assert written["nearest_achievable_sparsity"] == pytest.approx(sparsity)
    if granularity == "element":
        total = sum(masks[n].numel() for n in names)
        assert abs(sparsity - 0.7) * total <= len(names)  # within one weight per layer
    else:
        assert abs(sparsity - 0.7) < 0.05 and written["pruned_channels"]
        images, _ = load_tensors(bundle.test)
        small = compact_model(model, masks)  # whole channels: a thinner plain CNN, the same function
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            assert torch.allclose(small(images), model(images), atol=1e-4)
    assert meta["achieved_sparsity"] == pytest.approx(sparsity, abs=0.005)  # zeros measured, as Campfire's
    assert written["settings"]["dnr_prune_rate"] == 0.5 and written["settings"]["dnr_anneal"] == "linear"
    assert written["settings"]["from_dense"] is False and written["settings"]["start_epoch"] == 0
    updates = written["dnr"]["updates"]
    assert [u["step"] for u in updates] == [4] and updates[0]["removed"] > 0 and updates[0]["regrown"] > 0
    log = pd.read_csv(straight / "train_log.csv")
    assert log["masks_frozen"].tolist() == [False, False, False, True]
    assert main(["inspect", str(straight), "--layers"]) == 0


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"dnr_anneal": "step"}, "sparsity.dnr_anneal = 'step' is not allowed"),
        ({"dnr_prune_rate": 2}, "sparsity.dnr_prune_rate = 2.0 is not allowed; expected null or a fraction in (0, 1)"),
        ({"granularity": "filter"}, "sparsity.granularity = 'filter' is not allowed; expected one of element, channel"),
    ],
)
def test_a_bad_dnr_setting_fails_at_load_in_one_line(tmp_path, capsys, settings, fragment):
    data = {
        "name": "cli",
        "data": {"dataset": "digits"},
        "model": {"arch": "small_cnn"},
        "sparsity": {"method": "dnr", "granularity": "element", "target_sparsity": 0.7, **settings},
    }
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and fragment in err, err
    assert not out.exists()
