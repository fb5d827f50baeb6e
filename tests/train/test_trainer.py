"""The resumable trainer on digits: outputs, reproducibility, resume equals no-resume."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import robustsparse.train.trainer as trainer_module
from robustsparse import load_checkpoint
from robustsparse.checkpoints import ModelSpec, load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.data import load_dataset, load_tensors
from robustsparse.train.jobs import dense_job, experiment_jobs, sparse_job
from robustsparse.train.optim import build_optimizer
from robustsparse.train.trainer import is_finished, load_job_data, train_job

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_cfg(epochs=3, **train):
    return config_from_dict({"name": "t", "train": {"epochs": epochs, "batch_size": 128, **train}})


def test_dense_training_writes_a_loadable_model_that_reproduces_its_accuracy(tmp_path, digits):
    job = dense_job(small_cfg(epochs=3), seed=0)
    meta = train_job(job, tmp_path / job.model_id, device=CPU, bundle=digits, progress=False)
    folder = tmp_path / job.model_id
    files = {p.name for p in folder.iterdir()}
    assert {"model.pt", "meta.json", "train_log.csv", "layer_sparsity.csv"} <= files
    assert "best.pt" not in files and "best_acc" not in meta  # no model is chosen on the test split
    assert not (folder / "last.pt").exists()
    log = pd.read_csv(folder / "train_log.csv")
    assert list(log["epoch"]) == [1, 2, 3]
    assert meta["method"] == "dense" and meta["granularity"] == "dense" and meta["target_sparsity"] == 0.0
    for key in (
        "model_id",
        "arch",
        "dataset",
        "seed",
        "epochs",
        "clean_acc",
        "config_digest",
        "versions",
        "created_at",
    ):
        assert key in meta
    model, loaded_meta = load_checkpoint(folder)
    images, labels = load_tensors(digits.test)
    with torch.no_grad():
        acc = int((model(images).argmax(1) == labels).sum()) / len(labels)
    assert acc == pytest.approx(loaded_meta["clean_acc"], abs=1e-9)
    assert acc > 0.5  # three epochs already learn digits
    assert is_finished(folder, job)
    assert not is_finished(folder, dense_job(small_cfg(epochs=4), seed=0))


def test_same_seed_same_weights_and_different_seed_differs(tmp_path, digits):
    cfg = small_cfg(epochs=1)
    states = []
    for i, seed in enumerate([0, 0, 1]):
        job = dense_job(cfg, seed=seed)
        train_job(job, tmp_path / str(i), device=CPU, bundle=digits, progress=False)
        states.append(load_checkpoint(tmp_path / str(i))[0].state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_interrupted_training_resumes_to_identical_weights(tmp_path, digits, monkeypatch):
    job = dense_job(small_cfg(epochs=3, lr_schedule="cosine"), seed=0)
    train_job(job, tmp_path / "straight", device=CPU, bundle=digits, progress=False)

    calls = {"n": 0}
    real_evaluate = trainer_module.loss_and_accuracy

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # killed during epoch 2, after its training steps
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "loss_and_accuracy", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_job(job, tmp_path / "resumed", device=CPU, bundle=digits, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "resumed" / "last.pt").exists() and not (tmp_path / "resumed" / "meta.json").exists()
    train_job(job, tmp_path / "resumed", device=CPU, bundle=digits, progress=False)
    a = load_checkpoint(tmp_path / "straight")[0].state_dict()
    b = load_checkpoint(tmp_path / "resumed")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert list(pd.read_csv(tmp_path / "resumed" / "train_log.csv")["epoch"]) == [1, 2, 3]


def test_experiment_jobs_put_dense_parents_first():
    cfg = config_from_dict(
        {
            "seeds": [0, 1],
            "train": {"epochs": 4},
            "sparsity": {
                "method": "campfire",
                "granularity": ["element", "filter"],
                "target_sparsity": 0.5,
                "end_epoch": 2,
            },
        }
    )
    jobs = experiment_jobs(cfg)
    ids = [j.model_id for j in jobs]
    assert ids[:2] == ["dense-s0", "dense-s1"]
    assert "campfire-element-50-s1" in ids and "campfire-filter-50-s0" in ids
    assert all(j.parent_id == f"dense-s{j.seed}" for j in jobs[2:])
    assert len({j.digest for j in jobs}) == len(jobs)
    assert all(j.variant == "" for j in jobs)


def test_a_method_list_is_a_grid_axis_and_each_id_names_its_method():
    cfg = config_from_dict(
        {
            "train": {"epochs": 4},
            "sparsity": {
                "method": ["campfire", "random"],
                "granularity": "element",
                "target_sparsity": 0.7,
                "end_epoch": 2,
            },
        }
    )
    sparse = {j.model_id: j for j in experiment_jobs(cfg) if j.sparsity is not None}
    # random decides its own (one-shot) schedule: that is no variant of the grid
    assert set(sparse) == {"campfire-element-70-s0", "random-element-70-s0"}
    assert {j.method for j in sparse.values()} == {"campfire", "random"}
    assert sparse["random-element-70-s0"].sparsity.schedule == "one_shot"


def test_other_list_settings_become_a_variant_in_id_and_metadata():
    cfg = config_from_dict(
        {
            "train": {"epochs": 6},
            "sparsity": {
                "method": "campfire",
                "granularity": "kernel",
                "target_sparsity": 0.7,
                "end_epoch": [2, 4],
                "lr_mode": ["standard", "hold"],
            },
        }
    )
    sparse = [j for j in experiment_jobs(cfg) if j.sparsity is not None]  # not dense-s0 nor its control
    assert {j.variant for j in sparse} == {f"end_epoch={e},lr_mode={m}" for e in (2, 4) for m in ("standard", "hold")}
    assert "campfire-kernel-70-end_epoch4-lr_modehold-s0" in {j.model_id for j in sparse}


def test_interrupted_sparse_training_resumes_to_identical_weights_and_masks(tmp_path, digits, monkeypatch):
    cfg = config_from_dict(
        {
            "name": "t",
            "train": {"epochs": 3, "batch_size": 128},
            "sparsity": {
                "method": "campfire",
                "granularity": "kernel",
                "target_sparsity": 0.7,
                "start_epoch": 0,
                "end_epoch": 2,
            },
        }
    )
    train_job(dense_job(cfg, 0), tmp_path / "dense-s0", device=CPU, bundle=digits, progress=False)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_job(job, straight / job.model_id, device=CPU, bundle=digits, models_root=tmp_path, progress=False)

    calls = {"n": 0}
    real_evaluate = trainer_module.loss_and_accuracy

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # killed in epoch 2, while the masks are still changing
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "loss_and_accuracy", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_job(job, resumed / job.model_id, device=CPU, bundle=digits, models_root=tmp_path, progress=False)
    monkeypatch.undo()
    train_job(job, resumed / job.model_id, device=CPU, bundle=digits, models_root=tmp_path, progress=False)
    a_model, a_meta, a_masks = load_checkpoint_with_masks(straight / job.model_id)
    b_model, b_meta, b_masks = load_checkpoint_with_masks(resumed / job.model_id)
    assert a_masks.keys() == b_masks.keys() and all(torch.equal(a_masks[k], b_masks[k]) for k in a_masks)
    a, b = a_model.state_dict(), b_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a_meta["achieved_sparsity"] == b_meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.005)
    assert a_meta["parent"] == "dense-s0"


@pytest.mark.parametrize("granularity", ["filter", "kernel"])
def test_sparse_training_keeps_masked_weights_and_momentum_zero(tmp_path, digits, monkeypatch, granularity):
    cfg = config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 512},
            "train": {"epochs": 3, "batch_size": 64},
            "sparsity": {
                "method": "campfire",
                "granularity": granularity,
                "target_sparsity": 0.5,
                "start_epoch": 0,
                "end_epoch": 1,
                "from_dense": False,
            },
        }
    )
    bundle = load_job_data(cfg.data)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    folder = tmp_path / job.model_id

    # Stop in epoch 3 so the state after epoch 2 (8 steps after the freeze) stays on disk.
    calls = {"n": 0}
    real_evaluate = trainer_module.loss_and_accuracy

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "loss_and_accuracy", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_job(job, folder, device=CPU, bundle=bundle, progress=False)
    monkeypatch.undo()
    state = torch.load(folder / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["pruner"]["last_update_step"] == 8  # frozen after epoch 1
    model = ModelSpec("small_cnn", 10, 1, 8, (0.3,), (0.4,)).build()
    model.load_state_dict(state["state_dict"])
    optimizer = build_optimizer(model, cfg.train)
    optimizer.load_state_dict(state["optimizer"])
    params = dict(model.named_parameters())
    masks = state["pruner"]["masks"]
    assert masks and all(not bool(m.all()) for n, m in masks.items() if params[n].dim() > 1)
    for name, mask in masks.items():
        momentum = optimizer.state[params[name]]["momentum_buffer"]
        assert bool((params[name].detach()[~mask] == 0).all()), name
        assert bool((momentum[~mask] == 0).all()), f"momentum leaks into pruned entries of {name}"
        if params[name].dim() > 1:
            assert bool((momentum[mask] != 0).any()), name  # the check above is not vacuous

    meta = train_job(job, folder, device=CPU, bundle=bundle, progress=False)
    model, _, masks = load_checkpoint_with_masks(folder)
    params = dict(model.named_parameters())
    assert masks and all((params[n].detach()[~m] == 0).all() for n, m in masks.items())
    assert meta["parent"] is None and meta["granularity"] == granularity
    log = pd.read_csv(folder / "train_log.csv")
    assert bool(log["masks_frozen"].iloc[-1])
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert saved["pruner_state"]  # the pruner state needed to resume is saved


def test_adversarial_training_uses_examples_inside_the_eps_ball(tmp_path, digits):
    from robustsparse.config import AdversarialTrainingConfig
    from robustsparse.train.adversarial import make_adversary

    adversary = make_adversary(AdversarialTrainingConfig(attack="pgd", eps="8/255", steps=3))
    torch.manual_seed(0)
    model = ModelSpec("small_cnn", 10, 1, 8, (0.3,), (0.4,)).build().train()
    images, labels = load_tensors(digits.test, 32)
    adv = adversary(model, images, labels)
    assert model.training  # the model's mode is left as it was
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, images)
    assert make_adversary(AdversarialTrainingConfig()) is None

    clean = dense_job(small_cfg(epochs=1), seed=0)
    robust = dense_job(small_cfg(epochs=1, adversarial={"attack": "fgsm", "eps": "8/255", "ratio": 0.5}), seed=0)
    assert clean.digest != robust.digest
    train_job(clean, tmp_path / "clean", device=CPU, bundle=digits, progress=False)
    train_job(robust, tmp_path / "robust", device=CPU, bundle=digits, progress=False)
    a = load_checkpoint(tmp_path / "clean")[0].state_dict()
    b = load_checkpoint(tmp_path / "robust")[0].state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the adversarial examples were trained on


def test_data_label_names_the_dataset_without_changing_the_model(tmp_path, digits):
    plain = dense_job(small_cfg(epochs=1), seed=0)
    labelled = dense_job(
        config_from_dict({"name": "t", "data": {"label": "Digits (8x8)"}, "train": {"epochs": 1, "batch_size": 128}}),
        seed=0,
    )
    assert labelled.digest == plain.digest
    meta = train_job(labelled, tmp_path / "m", device=CPU, bundle=digits, progress=False)
    assert meta["dataset"] == "Digits (8x8)" and meta["data"]["dataset"] == "digits"


@pytest.mark.parametrize(
    "schedule",
    [
        {"schedule": "one_shot", "start_epoch": 0, "end_epoch": 0},
        {"schedule": "cubic", "initial_sparsity": 0.3, "start_epoch": 0, "end_epoch": 1},
    ],
    ids=["one_shot", "initial_sparsity"],
)
def test_a_corrupt_resume_file_restarts_with_the_step_zero_masks(tmp_path, digits, schedule):
    cfg = config_from_dict(
        {
            "name": "t",
            "train": {"epochs": 1, "batch_size": 128},
            "sparsity": {
                "method": "campfire",
                "granularity": "kernel",
                "target_sparsity": 0.7,
                "from_dense": False,
                **schedule,
            },
        }
    )
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    train_job(job, tmp_path / "clean", device=CPU, bundle=digits, progress=False)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "last.pt").write_bytes(b"half a file")
    train_job(job, corrupt, device=CPU, bundle=digits, progress=False)
    assert not (corrupt / "last.pt").exists()
    a, b = (load_checkpoint(tmp_path / name)[0].state_dict() for name in ("clean", "corrupt"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the first step already trained the sparse model
    logs = [pd.read_csv(tmp_path / name / "train_log.csv") for name in ("clean", "corrupt")]
    assert logs[0]["train_loss"].tolist() == logs[1]["train_loss"].tolist()


def test_interrupted_random_training_resumes_to_the_same_masks_and_weights(tmp_path, digits, straight_and_resumed):
    from robustsparse.sparsity import build_pruner

    cfg = config_from_dict(
        {
            "name": "t",
            "train": {"epochs": 3, "batch_size": 128},
            "sparsity": {"method": "random", "granularity": "kernel", "target_sparsity": 0.7, "from_dense": False},
        }
    )
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.model_id == "random-kernel-70-s0" and job.parent_id is None
    straight = straight_and_resumed(job, tmp_path, digits)
    a_model, a_meta, a_masks = load_checkpoint_with_masks(straight)
    assert a_meta["method"] == "random" and a_meta["sparsity"]["settings"]["schedule"] == "one_shot"
    assert a_meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.005) or a_meta["achieved_sparsity"] == pytest.approx(
        a_meta["sparsity"]["nearest_achievable_sparsity"], abs=0.005
    )
    # decided at step 0 and never changed: the final masks are the step-0 draw of the seed
    step0 = build_pruner(a_model, job.sparsity, 1, job.seed)
    step0.step(0)
    assert all(torch.equal(step0.masks[k], a_masks[k]) for k in a_masks)
    log = pd.read_csv(straight / "train_log.csv")
    assert log["masks_frozen"].all() and (log["target_sparsity"] == 0.7).all()


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_interrupted_training_at_initialisation_resumes_to_the_same_masks_and_weights(
    tmp_path, digits, method, straight_and_resumed
):
    """snip and synflow get one training batch from the trainer (its own seeded draw) and decide at step 0."""
    sparsity = {"method": method, "granularity": "element", "target_sparsity": 0.7, "from_dense": False}
    if method == "synflow":
        sparsity["synflow_rounds"] = 10
    cfg = config_from_dict({"name": "t", "train": {"epochs": 2, "batch_size": 128}, "sparsity": sparsity})
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    straight = straight_and_resumed(job, tmp_path, digits)
    a_model, a_meta, a_masks = load_checkpoint_with_masks(straight)
    assert a_meta["method"] == method and a_meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.005)
    settings = a_meta["sparsity"]["settings"]
    assert settings["global_ranking"] == "raw" and settings["schedule"] == "one_shot"
    assert settings["synflow_rounds"] == (10 if method == "synflow" else 100)
    assert method in a_meta["sparsity"] and "scores" in a_meta["sparsity"]


def test_test_examples_limits_the_trainers_test_pass_to_a_fixed_subset(tmp_path, digits):
    cfg = config_from_dict({"name": "t", "data": {"test_examples": 100}, "train": {"epochs": 1, "batch_size": 128}})
    job = dense_job(cfg, seed=0)
    assert job.digest != dense_job(small_cfg(epochs=1), seed=0).digest  # clean_acc is measured on other examples
    meta = train_job(job, tmp_path / "m", device=CPU, bundle=digits, progress=False)
    assert meta["n_test"] == 100 < len(digits.test)
    model, _ = load_checkpoint(tmp_path / "m")
    images, labels = load_tensors(digits.test, 100)  # the same evenly spread subset the attacks would use
    with torch.no_grad():
        acc = int((model(images).argmax(1) == labels).sum()) / len(labels)
    assert acc == pytest.approx(meta["clean_acc"], abs=1e-9)


def test_a_sparse_jobs_digest_ignores_unset_settings_but_not_set_ones():
    """Registering a method with new (unset by default) settings must not re-train finished models."""
    import dataclasses

    cfg = config_from_dict({"name": "t", "sparsity": {"method": "campfire", "target_sparsity": 0.7}})
    entry = cfg.sparsity[0]
    # the same settings after a new method added a field of its own, unset by default
    grown = dataclasses.make_dataclass(
        "GrownSparsityConfig", [("newmethod_setting", int | None, None)], bases=(type(entry),), frozen=True
    )
    values = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
    job = sparse_job(cfg, entry, seed=0)
    assert dataclasses.replace(job, sparsity=grown(**values)).digest == job.digest
    assert dataclasses.replace(job, sparsity=grown(**values, newmethod_setting=3)).digest != job.digest
    assert dataclasses.replace(job, sparsity=dataclasses.replace(entry, end_epoch=3)).digest != job.digest


def test_tensorboard_curves_are_the_train_log_and_leave_the_digest_alone(tmp_path, digits):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config_from_dict({"name": "t", "train": {"epochs": 2, "batch_size": 128, "tensorboard": True}})
    job = dense_job(cfg, seed=0)
    assert job.digest == dense_job(small_cfg(epochs=2), seed=0).digest  # curves do not change the weights
    train_job(job, tmp_path / "m", device=CPU, bundle=digits, progress=False)
    events = EventAccumulator(str(tmp_path / "m" / "tensorboard"))
    events.Reload()
    log = pd.read_csv(tmp_path / "m" / "train_log.csv")
    for column in ("train_loss", "test_acc", "lr"):
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == list(log["epoch"])
        assert [s.value for s in scalars] == pytest.approx(list(log[column]), rel=1e-6)


def test_tensorboard_without_its_package_is_one_line_and_writes_nothing(tmp_path, digits, monkeypatch):
    import robustsparse.train.curves as curves
    from robustsparse.errors import MissingExtra

    monkeypatch.setattr(curves, "TENSORBOARD_PACKAGE", "robustsparse_no_such_package")
    cfg = config_from_dict({"name": "t", "train": {"epochs": 1, "batch_size": 128, "tensorboard": True}})
    with pytest.raises(MissingExtra, match=r"robustsparse\[tensorboard\]"):
        train_job(dense_job(cfg, seed=0), tmp_path / "m", device=CPU, bundle=digits, progress=False)
    assert not (tmp_path / "m").exists()
