"""Models from outside robustsparse: attacked from the command line exactly as the same object in Python."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn.utils import prune

from attacks import evaluate
from robustsparse.cli import main
from robustsparse.data import load_dataset, load_tensors
from robustsparse.errors import CheckpointError, ConfigError
from robustsparse.external import ModelCard, fold_torch_prune, load_external_model, zero_structure
from robustsparse.models import create_model

DIGITS_MEAN, DIGITS_STD = (0.3,), (0.4,)
EPS = "8/255"


def _python_results(model: nn.Module, dataset: str, root: str, n: int | None) -> dict[str, int]:
    """n_correct per attack key of `model` (a module taking [0,1] images) evaluated directly."""
    images, labels = load_tensors(load_dataset(dataset, root=root, augment=False).test, n)
    result = evaluate(model.eval(), images, labels, [f"fgsm:eps={EPS}", f"pgd:eps={EPS},steps=5"], seed=0)
    return dict(zip(result.to_frame()["key"], result.to_frame()["n_correct"], strict=True))


def _cli_results(tmp_path, capsys, *args: str) -> pd.DataFrame:
    out = tmp_path / "attacked"
    code = main(
        ["attack", *args, "--attack", "fgsm", "--attack", "pgd:steps=5", "--eps", EPS, "--out", str(out)]
        + ["--n-examples", "60", "--no-progress", "--no-sanity"]
    )
    assert code == 0, capsys.readouterr().err
    return pd.read_csv(out / "results.csv")


def _assert_same(frame: pd.DataFrame, expected: dict[str, int]) -> None:
    got = dict(zip(frame["key"], frame["n_correct"], strict=True))
    assert got == expected


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """A tiny ImageFolder of 32x32 RGB images in 3 classes (train/ and test/), made offline."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 8)):
        for label in range(3):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                pixels[..., label] = 255 - pixels[..., label] // 4  # a colour cue per class
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _wrapped(net: nn.Module, mean, std) -> nn.Module:
    """The user's own [0,1] wrapper: what robustsparse must reproduce from --mean/--std."""
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    class Wrapped(nn.Module):
        def forward(self, x):
            return net((x - mean_t) / std_t)

    return Wrapped().eval()


def test_a_torchvision_resnet18_state_dict_is_attacked_as_the_same_model_in_python(tmp_path, capsys, rgb_folder):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    weights = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), weights)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    frame = _cli_results(
        tmp_path,
        capsys,
        *("--weights", str(weights), "--arch", "torchvision:resnet18", "--dataset", "imagefolder"),
        *("--data-root", str(rgb_folder), "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--num-classes", "3"),
    )
    _assert_same(frame, _python_results(_wrapped(net, mean, std), "imagefolder", str(rgb_folder), 60))
    assert set(frame["model_id"]) == {"resnet18"} and set(frame["method"]) == {"external"}


@pytest.mark.parametrize("how, structure", [("l1_unstructured", "element"), ("ln_structured", "filter")])
def test_a_torch_prune_pruned_small_cnn_is_folded_attacked_and_accounted(tmp_path, capsys, how, structure):
    torch.manual_seed(0)
    net = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0,), std=(1,)).net.eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        if how == "l1_unstructured":
            prune.l1_unstructured(conv, "weight", amount=0.6)
        else:
            prune.ln_structured(conv, "weight", amount=0.5, n=1, dim=0)
    state = net.state_dict()
    assert any(k.endswith("weight_orig") for k in state)  # the torch.nn.utils.prune layout
    weights = tmp_path / "pruned.pt"
    torch.save(state, weights)
    card = tmp_path / "card.yaml"
    card.write_text(
        f"weights: {weights.name}\narch: small_cnn\ndataset: digits\nmean: [0.3]\nstd: [0.4]\nname: pruned\n"
    )
    frame = _cli_results(tmp_path, capsys, "--model-card", str(card))
    _assert_same(frame, _python_results(_wrapped(net, DIGITS_MEAN, DIGITS_STD), "digits", "data", 60))
    model, meta = load_external_model(
        ModelCard.from_mapping(
            {"weights": str(weights), "arch": "small_cnn", "dataset": "digits", "mean": [0.3], "std": [0.4]}
        )
    )
    conv_weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in conv_weights)
    assert zeros > 0 and meta["granularity"] == structure == frame["granularity"].iloc[0]
    assert meta["external"]["torch_prune_masks"] == len(convs)
    layer_table = pd.read_csv(tmp_path / "attacked" / "models" / "pruned" / "layer_sparsity.csv")
    per_layer = layer_table.set_index("name")["nonzeros"]
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            assert per_layer[f"{name}.weight"] == int((module.weight != 0).sum())


def test_a_slimmed_model_saved_with_torch_export_is_attacked_from_its_own_graph(tmp_path, capsys):
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    net = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0,), std=(1,)).net.eval()
    example = torch.rand(2, 1, 8, 8)
    before = sum(p.numel() for p in net.parameters())
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(
        net, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5, ignored_layers=[last]
    )
    pruner.step()
    assert sum(p.numel() for p in net.parameters()) < before  # physically slimmed: fewer channels
    program = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("b", max=4096)},))
    weights = tmp_path / "slim.pt2"
    torch.export.save(program, str(weights))
    frame = _cli_results(
        tmp_path, capsys, "--weights", str(weights), "--dataset", "digits", "--mean", "0.3", "--std", "0.4"
    )
    _assert_same(frame, _python_results(_wrapped(net, DIGITS_MEAN, DIGITS_STD), "digits", "data", 60))


def test_a_torchscript_model_is_attacked_as_the_same_model_in_python(tmp_path, capsys):
    torch.manual_seed(0)
    net = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0,), std=(1,)).net.eval()
    weights = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 1, 8, 8)), str(weights))
    frame = _cli_results(
        tmp_path, capsys, "--weights", str(weights), "--dataset", "digits", "--mean", "0.3", "--std", "0.4"
    )
    _assert_same(frame, _python_results(_wrapped(net, DIGITS_MEAN, DIGITS_STD), "digits", "data", 60))


class _Boom:
    def __reduce__(self):
        return (print, ("EXECUTED",))


def test_a_pickled_object_is_refused_and_never_executed(tmp_path, capsys):
    weights = tmp_path / "evil.pt"
    with open(weights, "wb") as handle:
        pickle.dump({"conv.weight": _Boom()}, handle)
    card = ModelCard.from_mapping(
        {"weights": str(weights), "arch": "small_cnn", "dataset": "digits", "mean": [0.3], "std": [0.4]}
    )
    with pytest.raises(CheckpointError, match="only tensors load"):
        load_external_model(card)
    assert "EXECUTED" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"std": [0.4]}, "mean is missing"),
        ({"mean": [0.3], "std": [0.4, 0.4]}, "as many values as mean"),
        ({"mean": [0.3], "std": [0.0]}, "positive values"),
        ({"mean": [0.3], "std": [0.4], "dataset": "digitz"}, "dataset = 'digitz'"),
        ({"mean": [0.3], "std": [0.4], "format": "onnx"}, "format = 'onnx'"),
        ({"mean": [0.3], "std": [0.4], "colour": "red"}, "unknown key 'model card.colour'"),
    ],
)
def test_a_bad_model_card_is_one_line_naming_the_key(raw, words):
    with pytest.raises(ConfigError) as info:
        ModelCard.from_mapping({"weights": "x.pt", "dataset": "digits", **raw})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["attack", "--attack", "fgsm", "--eps", EPS, "--out", str(out)]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["attack", "--dataset", "digits", "--attack", "fgsm", "--eps", EPS, "--out", str(out)]) == 2
    assert "--dataset describes an external model: give its file with --weights" in capsys.readouterr().err
    weights = tmp_path / "w.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    args = ["attack", "--weights", str(weights), "--arch", "torchvision:resnet18", "--dataset", "digits"]
    assert main([*args, "--attack", "fgsm", "--eps", EPS, "--out", str(out)]) == 2
    assert "mean is missing" in capsys.readouterr().err
    assert main([*args, "--mean", "0.3", "--std", "0.4", "--attack", "fgsm", "--eps", EPS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not take digits images (1x8x8)" in err and "\n" not in err  # a 3-channel model on grey digits
    assert not out.exists()


def test_fold_torch_prune_refuses_half_pairs():
    with pytest.raises(CheckpointError, match="only one of _orig and _mask"):
        fold_torch_prune({"conv.weight_orig": torch.ones(2, 2)})


def test_zero_structure_reads_filters_kernels_and_elements():
    conv = nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight[1] = 0
    assert zero_structure(nn.Sequential(conv)) == "filter"
    with torch.no_grad():
        conv.weight[2, 0] = 0
    assert zero_structure(nn.Sequential(conv)) == "kernel"
    with torch.no_grad():
        conv.weight[3, 1, 0, 0] = 0
    assert zero_structure(nn.Sequential(conv)) == "element"
