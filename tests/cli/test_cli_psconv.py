"""psconv's settings at the command line: out of vocabulary is one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
import yaml

from robustsparse.cli import main


@pytest.mark.parametrize(
    "sparsity, fragment",
    [
        ({"psconv_kept": 3}, "sparsity.psconv_kept = 3 is not allowed; expected null or one of 4, 2"),
        ({"psconv_period": 0}, "sparsity.psconv_period = 0 is not allowed"),
        ({"granularity": "element"}, "sparsity.granularity = 'element' is not allowed; expected one of window"),
    ],
)
def test_a_psconv_setting_outside_its_vocabulary_fails_at_load(tmp_path, capsys, sparsity, fragment):
    data = {
        "name": "cli",
        "data": {"dataset": "digits"},
        "model": {"arch": "small_cnn"},
        "sparsity": {"method": "psconv", "granularity": "window", "target_sparsity": 0.5, **sparsity},
    }
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and fragment in err, err
    assert not out.exists()
