"""Experiment files: validation errors name key, value and allowed values; overrides; grid; digest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from robustsparse.config import (
    apply_overrides,
    config_digest,
    config_from_dict,
    dump_config,
    load_config,
)
from robustsparse.errors import ConfigError


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_are_valid_and_frozen():
    cfg = config_from_dict({})
    assert cfg.data.dataset == "digits"
    assert cfg.sparsity == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"train": {"epocs": 3}}, ["train.epocs", "allowed keys", "epochs"]),
        ({"bogus": 1}, ["bogus", "allowed keys"]),
        ({"train": {"epochs": "ten"}}, ["train.epochs", "'ten'", "integer"]),
        ({"train": {"optimizer": "adam"}}, ["train.optimizer", "'adam'", "sgd", "adamw"]),
        ({"train": {"lr": -1}}, ["train.lr", "-1"]),
        ({"train": {"nesterov": "yes"}}, ["train.nesterov", "true/false"]),
        ({"data": {"dataset": "mnistt"}}, ["data.dataset", "mnistt", "digits"]),
        ({"data": {"test_examples": 0}}, ["data.test_examples", "0", "positive integer or null"]),
        ({"model": {"arch": "resnet9000"}}, ["model.arch", "resnet9000", "small_cnn"]),
        ({"seeds": [0, 0]}, ["seeds", "distinct"]),
        ({"train": {"epochs": 5, "milestones": [7]}}, ["train.milestones", "[7]"]),
        ({"train": "fast"}, ["train", "mapping"]),
    ],
)
def test_bad_values_give_one_line_naming_key_value_and_allowed(raw, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_load_config_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: {epochs: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_overrides_apply_before_validation(tmp_path):
    path = write(tmp_path, {"name": "x", "train": {"epochs": 3}})
    cfg = load_config(path, ["train.epochs=7", "train.optimizer=adamw", "data.split_seed=3"])
    assert (cfg.train.epochs, cfg.train.optimizer, cfg.data.split_seed) == (7, "adamw", 3)
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(path, ["train.epochz=7"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_float_accepts_int_but_int_rejects_float_and_bool():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"epochs": 2.5}})
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"epochs": True}})


def test_sparsity_lists_expand_into_a_grid():
    cfg = config_from_dict(
        {
            "train": {"epochs": 6},
            "sparsity": {
                "method": "campfire",
                "granularity": ["element", "filter"],
                "target_sparsity": [0.5, 0.7],
                "end_epoch": 4,
                "keep_dense": ["net.fc"],
            },
        }
    )
    combos = {(s.granularity, s.target_sparsity) for s in cfg.sparsity}
    assert combos == {("element", 0.5), ("element", 0.7), ("filter", 0.5), ("filter", 0.7)}
    assert all(s.keep_dense == ("net.fc",) for s in cfg.sparsity)


def test_sparsity_end_epoch_beyond_training_is_refused():
    with pytest.raises(ConfigError, match="end_epoch"):
        config_from_dict(
            {"train": {"epochs": 3}, "sparsity": {"method": "campfire", "target_sparsity": 0.5, "end_epoch": 9}}
        )


def test_resolved_config_round_trips_with_the_same_digest(tmp_path):
    cfg = config_from_dict(
        {
            "name": "rt",
            "seeds": [0, 1],
            "train": {"epochs": 4},
            "sparsity": {
                "method": "campfire",
                "granularity": ["kernel", "window"],
                "target_sparsity": 0.5,
                "end_epoch": 2,
            },
        }
    )
    path = write(tmp_path, dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert config_digest(again) == config_digest(cfg)
    other = config_from_dict({"name": "rt", "seeds": [0, 1], "train": {"epochs": 5}})
    assert config_digest(other) != config_digest(cfg)


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "{}\n", "~\n"])
def test_an_empty_experiment_file_is_refused_not_run_with_defaults(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="is empty") as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    # PyYAML reads 1e6 and 5e-4 (no dot) as text; a float setting takes them as numbers
    path = write(tmp_path, "name: x\ntrain: {lr: 5e-2, weight_decay: 5e-4}\n")
    cfg = load_config(path, ["train.label_smoothing=1E-1"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.label_smoothing) == (0.05, 0.0005, 0.1)
    assert load_config(path, ["train.lr=1e6"]).train.lr == 1e6
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(path, ["train.lr=e6"])
    with pytest.raises(ConfigError, match="seeds"):
        load_config(path, ["seeds=[1e3]"])  # an integer setting stays strict
