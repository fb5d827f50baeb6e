"""The per-model evaluation cache finds its rows whatever characters the digest happens to hold."""

from __future__ import annotations

import pandas as pd

from robustsparse.pipeline.evaluation import _read_cached


def test_a_digest_of_decimal_digits_only_is_still_matched_as_text(tmp_path):
    # a 12-hex-digit digest is all decimal digits about once in 300 models; read as a number it never
    # matched, and that model's evaluations were recomputed on every run
    path = tmp_path / "results.csv"
    pd.DataFrame({"key": ["clean"], "eval_digest": ["157845232847"]}).to_csv(path, index=False)
    found = _read_cached(path, "157845232847")
    assert found is not None and list(found["key"]) == ["clean"]
    assert _read_cached(path, "0157845232847") is not None and _read_cached(path, "0157845232847").empty
