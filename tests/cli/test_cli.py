"""The command line end to end on digits, and its error paths (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from robustsparse.cli import main

FAST = ["--set", "train.epochs=2", "--set", "train.batch_size=128", "--no-progress"]


def write_config(tmp_path: Path, **sections) -> Path:
    data = {"name": "cli", "data": {"dataset": "digits"}, "model": {"arch": "small_cnn"}, **sections}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A dense and an element-sparse digits model trained through `robustsparse train`."""
    tmp = tmp_path_factory.mktemp("cli")
    config = write_config(
        tmp,
        sparsity={
            "method": "campfire",
            "granularity": "element",
            "target_sparsity": 0.5,
            "start_epoch": 0,
            "end_epoch": 1,
        },
    )
    out = tmp / "run"
    assert main(["train", str(config), "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_models_resolved_config_and_logs(trained, capsys):
    assert (trained / "config.yaml").is_file()
    for model_id in ("dense-s0", "campfire-element-50-s0"):
        folder = trained / "models" / model_id
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["model_id"] == model_id
        assert len(pd.read_csv(folder / "train_log.csv")) == 2
    meta = json.loads((trained / "models" / "campfire-element-50-s0" / "meta.json").read_text())
    assert abs(meta["achieved_sparsity"] - 0.5) < 0.005 and meta["parent"] == "dense-s0"


def test_train_again_finds_finished_models(trained, tmp_path, capsys):
    config_text = (trained / "config.yaml").read_text()
    config = tmp_path / "again.yaml"
    config.write_text(config_text)
    assert main(["train", str(config), "--out", str(trained), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("found") == 3  # dense, its continued control, element


def test_list_models_and_datasets(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for arch in ("small_cnn", "lenet5", "resnet20", "resnet50_v1", "vgg16_bn"):
        assert arch in out
    assert main(["list", "datasets"]) == 0
    assert "digits" in capsys.readouterr().out.split()


def test_list_methods_prints_each_method_when_and_granularities(capsys):
    from robustsparse.sparsity import list_methods

    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for method in list_methods():
        head = next(line for line in lines if line.split()[:1] == [method.name])
        assert method.when in head and method.description in head
        following = lines[lines.index(head) + 1]
        assert following.split("granularities: ")[1] == ", ".join(method.granularities)
    assert {line.split()[0] for line in lines if not line.startswith(" ")} >= {
        "campfire",
        "psconv",
        "random",
        "synflow",
        "snip",
    }


@pytest.mark.parametrize("command", ["train", "run"])
def test_a_method_asked_for_an_unsupported_granularity_fails_at_load(tmp_path, capsys, monkeypatch, command):
    from robustsparse.sparsity.methods import Method, get_method, registry

    toy = Method(
        "toy", "element and kernel only", "before_training", ("element", "kernel"), get_method("campfire").build_pruner
    )
    monkeypatch.setitem(registry._METHODS, "toy", toy)
    config = write_config(
        tmp_path, sparsity={"method": "toy", "granularity": ["element", "filter"], "target_sparsity": 0.5}
    )
    out = tmp_path / "out"
    assert main([command, str(config), "--out", str(out), *FAST]) == 2
    err = _one_error_line(capsys)
    assert "sparsity.granularity = 'filter'" in err and "element, kernel" in err and "'toy'" in err
    assert not out.exists()


def test_an_unknown_method_fails_at_load_naming_the_methods(tmp_path, capsys):
    config = write_config(tmp_path, sparsity={"method": "lottery", "target_sparsity": 0.5})
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), *FAST]) == 2
    err = _one_error_line(capsys)
    assert "sparsity.method = 'lottery'" in err and all(name in err for name in ("campfire", "psconv", "random"))
    assert not out.exists()


def test_inspect_shows_and_verifies(trained, capsys):
    assert main(["inspect", str(trained / "models" / "campfire-element-50-s0"), "--layers"]) == 0
    out = capsys.readouterr().out
    assert "small_cnn" in out and "digits" in out and "element" in out


def test_inspect_fails_on_a_tampered_checkpoint(trained, tmp_path, capsys):
    source = trained / "models" / "campfire-element-50-s0" / "model.pt"
    payload = torch.load(source, weights_only=True)
    name, mask = next((n, m) for n, m in payload["masks"].items() if (~m).any())
    payload["state_dict"][name][~mask] = 0.5  # pruned weights brought back
    torch.save(payload, tmp_path / "model.pt")
    assert main(["inspect", str(tmp_path / "model.pt")]) != 0
    assert "masked weights" in capsys.readouterr().err


def test_attack_command_writes_tidy_results(trained, tmp_path, capsys):
    out = tmp_path / "attacks"
    code = main(
        [
            "attack",
            str(trained / "models" / "dense-s0"),
            str(trained / "models" / "campfire-element-50-s0"),
            "--attack",
            "fgsm",
            "--attack",
            "pgd",
            "--eps",
            "2/255,8/255",
            "--steps",
            "3",
            "--n-examples",
            "60",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 * (1 + 2 + 2)
    assert set(results["n_examples"]) == {60}
    assert set(results["granularity"]) == {"dense", "element"}
    assert (out / "outcomes.csv.gz").is_file()
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "train.optimizer=adam"], ["train.optimizer", "adam", "sgd"]),
        (["--set", "train.epocs=3"], ["train.epocs", "allowed keys"]),
        (["--set", "model.arch=resnet9"], ["model.arch", "resnet9"]),
        (["--set", "data.dataset=cifar10", "--set", "data.root=MISSING"], ["cifar10", "download"]),
        (
            ["--set", "sparsity.granularity=diagonal", "--set", "sparsity.method=campfire"],
            ["sparsity.granularity", "diagonal"],
        ),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], ["device"]),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, words):
    config = write_config(tmp_path)
    out = tmp_path / "out"
    assert main(["train", str(config), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    for word in words:
        assert word in err
    assert not out.exists()


def test_missing_config_file_and_unknown_attack(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["attack", str(tmp_path), "--attack", "laser"]) == 2
    assert "unknown attack 'laser'" in capsys.readouterr().err
    assert main(["attack", str(tmp_path / "absent"), "--attack", "fgsm", "--eps", "1/255"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_python_dash_m_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "robustsparse", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for command in ("train", "run", "attack", "report", "inspect", "export", "list"):
        assert command in done.stdout


def test_attack_command_takes_the_sweep_from_a_config_file(trained, tmp_path):
    config = write_config(
        tmp_path,
        attack={
            "n_examples": 40,
            "specs": [
                {"name": "fgsm", "eps": ["1/255", "4/255", "16/255"]},
                {"name": "bim", "eps": ["4/255"], "steps": 2},
            ],
        },
    )
    out = tmp_path / "from-config"
    assert (
        main(
            [
                "attack",
                str(trained / "models" / "dense-s0"),
                "--config",
                str(config),
                "--out",
                str(out),
                "--no-progress",
                "--no-sanity",
            ]
        )
        == 0
    )
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["attack"]) == ["bim", "clean", "fgsm", "fgsm", "fgsm"]
    assert set(results["n_examples"]) == {40}
    assert not (out / "sanity.csv").exists() or pd.read_csv(out / "sanity.csv").empty


def test_report_command_rebuilds_a_report_and_refuses_a_folder_without_results(tiny_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    shutil.rmtree(run_dir / "report")
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "index.html").is_file() and (run_dir / "report" / "report.md").is_file()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "results.csv" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--correction", "bh"]) == 0
    assert "Benjamini-Hochberg" in (run_dir / "report" / "report.md").read_text()
    assert main(["report", str(run_dir), "--correction", "bonferroni"]) == 2
    assert "unknown correction 'bonferroni'; choose one of holm, bh, none" in capsys.readouterr().err


def test_export_command_writes_a_smaller_file(trained, tmp_path, capsys):
    out = tmp_path / "model.compressed.pt"
    assert (
        main(
            ["export", str(trained / "models" / "campfire-element-50-s0"), "--format", "compressed", "--out", str(out)]
        )
        == 0
    )
    assert out.is_file() and "smaller" in capsys.readouterr().out
    assert main(["export", str(trained / "models" / "campfire-element-50-s0"), "--format", "compact"]) == 2
    assert "filter or channel" in capsys.readouterr().err
    pruned = tmp_path / "torch_prune.pt"
    model_dir = str(trained / "models" / "campfire-element-50-s0")
    assert main(["export", model_dir, "--format", "torch-prune", "--out", str(pruned)]) == 0
    assert "torch-prune" in capsys.readouterr().out
    assert any(key.endswith(".weight_orig") for key in torch.load(pruned, weights_only=True))
    assert main(["export", model_dir, "--format", "compressed", "--compact", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--compact applies to pt2, onnx" in _one_error_line(capsys)
    assert not (tmp_path / "x.pt").exists()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "{}\n"])
def test_an_empty_experiment_file_is_refused(tmp_path, capsys, text):
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "is empty" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--batch-size", "0"], ["--batch-size", "0", ">= 1"]),
        (["--n-examples", "0"], ["--n-examples", "all"]),
        (["--n-examples", "-5"], ["--n-examples"]),
        (["--steps", "0"], ["--steps"]),
        (["--frobnicate"], ["unrecognized", "--help"]),
    ],
)
def test_bad_attack_arguments_give_one_line_and_exit_2(trained, tmp_path, capsys, args, words):
    out = tmp_path / "out"
    model = str(trained / "models" / "dense-s0")
    assert main(["attack", model, "--attack", "fgsm", "--eps", "1/255", "--out", str(out), *args]) == 2
    err = _one_error_line(capsys)
    for word in words:
        assert word in err
    assert not out.exists()


def test_n_examples_all_means_the_whole_test_split(trained, tmp_path):
    out = tmp_path / "out"
    model = str(trained / "models" / "dense-s0")
    args = ["attack", model, "--attack", "fgsm", "--eps", "1/255", "--n-examples", "all", "--out", str(out)]
    assert main([*args, "--no-sanity", "--no-progress"]) == 0
    assert set(pd.read_csv(out / "results.csv")["n_examples"]) == {360}  # the digits test split


def test_attack_command_refuses_zero_examples_and_batch_size_from_python(trained, tmp_path):
    from robustsparse.errors import ConfigError
    from robustsparse.pipeline.attack_command import attack_command

    model = [trained / "models" / "dense-s0"]
    for kwargs in ({"n_examples": 0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            attack_command(model, attacks=["fgsm"], eps="1/255", device=torch.device("cpu"), out_dir=tmp_path, **kwargs)


def test_a_report_error_inside_run_is_one_line(tmp_path, capsys):
    # every model diverges, so there is nothing to report: the report's error, not a traceback
    config = write_config(tmp_path, attack={"n_examples": 40, "specs": [{"name": "fgsm", "eps": ["8/255"]}]})
    code = main(["run", str(config), "--out", str(tmp_path / "out"), *FAST, "--set", "train.lr=1e6"])
    assert code == 2
    assert "no rows" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "field, value",
    [("granularity", "filter"), ("arch", "resnet20"), ("target_sparsity", 0.9), ("seed", 3), ("sparsity", None)],
)
def test_inspect_refuses_a_meta_json_edited_by_hand(trained, tmp_path, capsys, field, value):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(trained / "models" / "campfire-element-50-s0", folder)
    assert main(["inspect", str(folder)]) == 0  # as written: meta.json and the checkpoint agree
    capsys.readouterr()
    meta = json.loads((folder / "meta.json").read_text())
    meta[field] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    assert main(["inspect", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert "meta.json" in err and field in err


def test_a_path_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = write_config(tmp_path)
    assert main(["train", str(config), "--out", str(blocker / "run"), *FAST]) == 2
    assert "a-file" in _one_error_line(capsys)
