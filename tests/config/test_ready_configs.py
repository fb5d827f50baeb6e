"""The ready experiment files in `configs/`: each validates, is internally consistent, and the
command lines shown in its comments validate too.

Only `load_config` runs here (no data, no training), so the whole module takes seconds.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from robustsparse.config import load_config
from robustsparse.config.attack_entries import pixel_eps
from robustsparse.data import list_datasets
from robustsparse.models import list_models
from robustsparse.sparsity.methods import get_method, method_names

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
CONFIG_IDS = [p.stem for p in CONFIGS]


def _one_sparsity_grid(path: Path) -> bool:
    """False for a config with a list of sparsity entries (one per method): --set cannot reach into
    it, and such configs (methods, haloc, robust) come with a CPU-budget version of their own."""
    return not isinstance(yaml.safe_load(path.read_text()).get("sparsity"), list)


CIFAR_CONFIGS = [p for p in CONFIGS if p.stem.startswith("cifar10-") and _one_sparsity_grid(p)]

# A CIFAR file must also run on the CPU with a reduced budget; start < end is what `cubic` needs.
CPU_BUDGET = ("train.epochs=1", "sparsity.end_epoch=1", "sparsity.start_epoch=0")
IMAGEFOLDER_ROUTE = ("data.dataset=imagefolder", "data.root=data/cifar10-jpeg")
# The sanity check "large eps near zero" needs an Linf budget at least this large (attacks.sanity default).
LARGE_LINF_EPS = 64 / 255
_SET = re.compile(r'--set\s+(?:"([^"]*)"|([^\s`"]+))')


def _commands_in_comments(path: Path) -> list[list[str]]:
    """The `--set` overrides of every command shown in the file's comments, one list per command.

    A command is a comment holding `--set`, joined with the following comment lines while it ends
    in a backslash (shell continuation).
    """
    # Whole-line and end-of-line comments (no value in these files contains '#').
    lines = [line.split("#", 1)[1].strip() for line in path.read_text(encoding="utf-8").splitlines() if "#" in line]
    commands: list[list[str]] = []
    i = 0
    while i < len(lines):
        text = lines[i]
        if "--set" not in text and not text.startswith("robustsparse run"):
            i += 1
            continue
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i]
        i += 1
        # `--set "k=v with spaces"` or `--set k=v`, also inside backticks in prose.
        overrides = [quoted or bare for quoted, bare in _SET.findall(text)]
        if overrides:
            commands.append(overrides)
    return commands


def test_there_are_ready_configs_for_every_supported_dataset():
    stems = set(CONFIG_IDS)
    assert {
        "digits-quick",
        "digits-campfire",
        "cifar10-resnet20",
        "cifar10-resnet18",
        "tinyimagenet-resnet18",
        "tinyimagenet-vgg16",
        "imagenet-resnet50-campfire",
    } <= stems


@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_config_is_consistent(path: Path):
    cfg = load_config(path)
    assert cfg.name == path.stem, "the run folder is runs/<name>: keep it equal to the file name"
    assert cfg.model.arch in list_models()
    assert cfg.data.dataset in list_datasets()
    assert cfg.sparsity, "every ready file has a sparse grid"
    for entry in cfg.sparsity:
        assert entry.method in method_names() and entry.method != "none"
        assert 0.0 < entry.target_sparsity < 1.0
        if get_method(entry.method).when == "before_training":  # masks fixed at step 0
            assert entry.start_epoch == entry.end_epoch == 0
        else:
            assert entry.start_epoch < entry.end_epoch <= cfg.train.epochs
    assert all(0 < m < cfg.train.epochs for m in cfg.train.milestones)


@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_attack_sweep_parses_clean_first(path: Path):
    specs = load_config(path).attack.attack_specs()
    assert specs[0].name == "clean" and specs[0].eps == 0
    attacked = specs[1:]
    assert attacked, "a sweep with attacks"
    assert all(s.name != "clean" for s in attacked)
    assert all(0 <= s.eps < math.inf for s in attacked)
    keys = [s.key for s in specs]
    assert len(set(keys)) == len(keys), f"duplicate attacks in the sweep: {keys}"
    assert any(s.norm == "Linf" and s.eps >= LARGE_LINF_EPS - 1e-12 for s in attacked), (
        "include one Linf budget >= 64/255 so the large-eps sanity check is not n/a"
    )
    # What the other sanity checks need, so none of them is "not_run" for want of a row.
    assert any(s.eps == 0 for s in attacked), "include an attack at eps 0 (eps0_equals_clean)"
    assert any(s.name == "square" for s in attacked), "include a gradient-free attack (square_not_stronger)"
    noise = {(s.norm, s.eps) for s in attacked if s.name == "noise"}
    assert noise & {(s.norm, s.eps) for s in attacked if s.name not in ("noise", "square")}, (
        "include the noise baseline at an eps a gradient attack runs at (noise_not_stronger)"
    )


@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_commands_shown_in_comments_validate(path: Path):
    for overrides in _commands_in_comments(path):
        cfg = load_config(path, overrides)
        for entry in cfg.sparsity:
            assert entry.end_epoch <= cfg.train.epochs


def test_comment_parser_finds_the_cifar_cpu_budget_command():
    # Guards the test above: if the parser found nothing, it would pass vacuously.
    commands = _commands_in_comments(CONFIG_DIR / "cifar10-resnet20.yaml")
    assert any(set(CPU_BUDGET) <= set(c) and set(IMAGEFOLDER_ROUTE) <= set(c) for c in commands)


def test_digits_quick_grid_is_four_granularities_by_three_levels():
    cfg = load_config(CONFIG_DIR / "digits-quick.yaml")
    grid = sorted((e.granularity, e.target_sparsity) for e in cfg.sparsity)
    expected = sorted((g, s) for g in ("element", "kernel", "window", "filter") for s in (0.5, 0.7, 0.9))
    assert grid == expected


def test_digits_campfire_is_the_documented_example():
    cfg = load_config(CONFIG_DIR / "digits-campfire.yaml")
    assert cfg.data.dataset == "digits" and cfg.model.arch == "small_cnn"
    assert sorted(e.granularity for e in cfg.sparsity) == sorted(["element", "kernel", "window", "filter"])
    assert all(e.target_sparsity == 0.7 and e.from_dense and e.schedule == "cubic" for e in cfg.sparsity)


def test_imagenet_config_is_the_paper_setting():
    cfg = load_config(CONFIG_DIR / "imagenet-resnet50-campfire.yaml")
    assert cfg.data.dataset == "imagenet" and cfg.model.arch in ("resnet50", "resnet50_v1")
    assert cfg.train.epochs == 90
    assert math.isclose(cfg.train.lr, 0.1 * cfg.train.batch_size / 256)
    assert {"window", "kernel"} <= {e.granularity for e in cfg.sparsity}
    assert all(e.target_sparsity == 0.7 for e in cfg.sparsity)
    assert all(e.keep_first_conv_dense and e.keep_last_linear_dense for e in cfg.sparsity)
    assert any(s.name == "fgsm" for s in cfg.attack.attack_specs())


@pytest.mark.parametrize("route", [(), IMAGEFOLDER_ROUTE], ids=["torchvision", "imagefolder"])
@pytest.mark.parametrize("path", CIFAR_CONFIGS, ids=[p.stem for p in CIFAR_CONFIGS])
def test_cifar_config_validates_with_cpu_budget(path: Path, route: tuple[str, ...]):
    cfg = load_config(path, CPU_BUDGET + route)
    assert cfg.train.epochs == 1
    assert cfg.sparsity and all(e.start_epoch == 0 and e.end_epoch == 1 for e in cfg.sparsity)
    full = load_config(path)
    # The budget shortens training only: the grid and the sweep are unchanged.
    assert len(cfg.sparsity) == len(full.sparsity)
    assert [s.key for s in cfg.attack.attack_specs()] == [s.key for s in full.attack.attack_specs()]
    if route:
        assert cfg.data.dataset == "imagefolder" and cfg.data.root == "data/cifar10-jpeg"


def test_cifar_grid_covers_granularities_and_levels():
    for path in CIFAR_CONFIGS:
        cfg = load_config(path)
        assert {e.granularity for e in cfg.sparsity} >= {"element", "kernel", "window", "filter", "window+kernel"}
        assert {e.target_sparsity for e in cfg.sparsity} == {0.5, 0.7, 0.9}
        assert cfg.attack.n_examples == 1000
        names = {s.name for s in cfg.attack.attack_specs()}
        assert {"fgsm", "pgd", "square"} <= names


@pytest.mark.parametrize("name", ["digits-methods", "cifar10-methods"])
def test_the_methods_configs_hold_every_registered_method(name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    assert {e.method for e in cfg.sparsity} == set(method_names()) - {"none"}
    levels = {e.target_sparsity for e in cfg.sparsity}
    assert 0.7 in levels and all(
        {e.target_sparsity for e in cfg.sparsity if e.method == m} == levels for m in {e.method for e in cfg.sparsity}
    )  # every method at every level


@pytest.mark.parametrize("name", ["digits-robust", "cifar10-robust-cpu", "cifar10-robust"])
def test_the_robust_configs_prune_a_robust_model_against_its_plain_control(name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    adversarial = cfg.train.adversarial
    assert adversarial.attack == "pgd" and adversarial.loss == "madry" and adversarial.plain_dense_control
    methods = {e.method for e in cfg.sparsity}
    # campfire and part 1's methods on the robust model, the robustness-aware ones, and part 2's
    assert {"campfire", "drop_pruning", "hybrid", "pconv", "npn", "hydra", "dnr", "structadmm", "dst"} <= methods
    assert {e.target_sparsity for e in cfg.sparsity} >= {0.7}
    # attacked at the training eps by FGSM, PGD and AutoAttack
    at_eps = {
        s.name
        for s in cfg.attack.attack_specs()
        if math.isclose(s.eps, pixel_eps(adversarial.eps, "train.adversarial.eps"))
    }
    assert {"fgsm", "pgd", "autoattack"} <= at_eps
