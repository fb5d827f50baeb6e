"""A method's own settings at the command line: a bad one is one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
import yaml

from robustsparse.cli import main

# (method, a granularity it supports, target, bad settings, what the one line must say)
CASES = [
    (
        "psconv",
        "window",
        0.5,
        {"psconv_kept": 3},
        "sparsity.psconv_kept = 3 is not allowed; expected null or one of 4, 2",
    ),
    ("psconv", "window", 0.5, {"psconv_period": 0}, "sparsity.psconv_period = 0 is not allowed"),
    (
        "psconv",
        "window",
        0.5,
        {"granularity": "element"},
        "sparsity.granularity = 'element' is not allowed; expected one of window",
    ),
    (
        "pconv",
        "kernel",
        0.7,
        {"pconv_pattern_size": 1},
        "sparsity.pconv_pattern_size = 1 is not allowed; expected null or an integer in [2, 8]",
    ),
    ("pconv", "kernel", 0.7, {"pconv_library_size": 0}, "sparsity.pconv_library_size = 0 is not allowed"),
    ("pconv", "kernel", 0.7, {"pconv_other_layers": "kernel"}, "sparsity.pconv_other_layers"),
    (
        "pconv",
        "kernel",
        0.7,
        {"granularity": "window"},
        "sparsity.granularity = 'window' is not allowed; expected one of kernel",
    ),
    (
        "drop_pruning",
        "element",
        0.5,
        {"drop_pruning_away_prob": 2},
        "sparsity.drop_pruning_away_prob = 2.0 is not allowed; expected null or",
    ),
    ("drop_pruning", "element", 0.5, {"drop_pruning_revive": "random"}, "drop_pruning_revive"),
    (
        "drop_pruning",
        "element",
        0.5,
        {"granularity": "filter"},
        "sparsity.granularity = 'filter' is not allowed; expected one of element, row",
    ),
    ("dst", "element", 0.7, {"dst_alpha": -1.0}, "sparsity.dst_alpha = -1.0 is not allowed; expected a number in"),
    ("dst", "element", 0.7, {"dst_lr": 0}, "sparsity.dst_lr = 0.0 is not allowed; expected a number > 0"),
    ("dst", "element", 0.7, {"dst_threshold": "kernel"}, "dst_threshold"),
    (
        "dst",
        "element",
        0.7,
        {"granularity": "filter"},
        "sparsity.granularity = 'filter' is not allowed; expected one of element with method 'dst'",
    ),
    (
        "campfire",
        "element",
        0.5,
        {"dst_alpha": 1e-3},
        "sparsity.dst_alpha = 0.001 is not allowed; expected null unless method is 'dst'",
    ),
    (
        "campfire",
        "element",
        0.5,
        {"psconv_kept": 4},
        "sparsity.psconv_kept = 4 is not allowed; expected null unless method is 'psconv'",
    ),
]


@pytest.mark.parametrize("command", ["train", "run"])
@pytest.mark.parametrize("method, granularity, target, sparsity, fragment", CASES)
def test_a_bad_method_setting_fails_at_load_in_one_line(
    tmp_path, capsys, command, method, granularity, target, sparsity, fragment
):
    data = {
        "name": "cli",
        "data": {"dataset": "digits"},
        "model": {"arch": "small_cnn"},
        "sparsity": {"method": method, "granularity": granularity, "target_sparsity": target, **sparsity},
    }
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main([command, str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and fragment in err, err
    assert not out.exists()


def test_list_methods_shows_pconv_with_kernel_only(capsys):
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(line for line in lines if line.split()[:1] == ["pconv"])
    assert "during_training" in head and "pattern" in head
    assert lines[lines.index(head) + 1].split("granularities: ")[1] == "kernel"
