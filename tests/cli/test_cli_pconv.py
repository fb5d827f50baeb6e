"""pconv at the command line: listed with its granularity; a bad setting is one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
import yaml

from robustsparse.cli import main


def test_list_methods_shows_pconv_with_kernel_only(capsys):
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(line for line in lines if line.split()[:1] == ["pconv"])
    assert "during_training" in head and "pattern" in head
    assert lines[lines.index(head) + 1].split("granularities: ")[1] == "kernel"


@pytest.mark.parametrize(
    "sparsity, fragment",
    [
        (
            {"pconv_pattern_size": 1},
            "sparsity.pconv_pattern_size = 1 is not allowed; expected null or an integer in [2, 8]",
        ),
        ({"pconv_library_size": 0}, "sparsity.pconv_library_size = 0 is not allowed"),
        ({"pconv_other_layers": "kernel"}, "sparsity.pconv_other_layers"),
        ({"granularity": "window"}, "sparsity.granularity = 'window' is not allowed; expected one of kernel"),
    ],
)
@pytest.mark.parametrize("command", ["train", "run"])
def test_a_pconv_setting_outside_its_range_fails_at_load(tmp_path, capsys, sparsity, fragment, command):
    data = {
        "name": "cli",
        "data": {"dataset": "digits"},
        "model": {"arch": "small_cnn"},
        "sparsity": {"method": "pconv", "granularity": "kernel", "target_sparsity": 0.7, **sparsity},
    }
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main([command, str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and fragment in err, err
    assert not out.exists()
