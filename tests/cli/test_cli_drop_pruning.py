"""drop_pruning's settings at the command line: a bad one is one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
import yaml

from robustsparse.cli import main


@pytest.mark.parametrize(
    "sparsity, fragment",
    [
        ({"drop_pruning_away_prob": 2}, "sparsity.drop_pruning_away_prob = 2.0 is not allowed; expected null or"),
        ({"drop_pruning_revive": "random"}, "drop_pruning_revive"),
        ({"granularity": "filter"}, "sparsity.granularity = 'filter' is not allowed; expected one of element, row"),
    ],
)
def test_a_drop_pruning_setting_out_of_range_fails_at_load(tmp_path, capsys, sparsity, fragment):
    data = {
        "name": "cli",
        "data": {"dataset": "digits"},
        "model": {"arch": "small_cnn"},
        "sparsity": {"method": "drop_pruning", "granularity": "element", "target_sparsity": 0.5, **sparsity},
    }
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and fragment in err, err
    assert not out.exists()
