"""SparsityConfig: defaults are valid, bad values fail with one line naming key, value and what is allowed."""

from __future__ import annotations

import dataclasses

import pytest

from robustsparse.errors import ConfigError
from robustsparse.sparsity import SparsityConfig


def test_defaults_are_valid_and_frozen() -> None:
    cfg = SparsityConfig()
    assert cfg.method == "none" and cfg.target_sparsity == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.target_sparsity = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "key", "shown"),
    [
        ({"target_sparsity": 1.0}, "target_sparsity", "1.0"),
        ({"target_sparsity": -0.1}, "target_sparsity", "-0.1"),
        ({"target_sparsity": 0.5, "initial_sparsity": 0.6}, "initial_sparsity", "0.6"),
        ({"method": "none", "target_sparsity": 0.5}, "target_sparsity", "0.5"),
        ({"granularity": "window", "allocation": "global"}, "allocation", "'global'"),
        ({"granularity": "window+kernel", "allocation": "global"}, "allocation", "'global'"),
        ({"granularity": "n:m", "allocation": "global"}, "allocation", "'global'"),
        ({"start_epoch": 5, "end_epoch": 5}, "end_epoch", "5"),
        ({"schedule": "one_shot", "start_epoch": 5, "end_epoch": 4}, "end_epoch", "4"),
        ({"update_every": 0}, "update_every", "0"),
        ({"pointwise_block": 1}, "pointwise_block", "1"),
        ({"window_kernel_split": 1.5}, "window_kernel_split", "1.5"),
        ({"m": 1}, "m", "1"),
        ({"granularity": "n:m", "target_sparsity": 0.7, "n": 2}, "n", "2"),
        ({"keep_dense": ("",)}, "keep_dense", "['']"),
        ({"granularity": "diagonal"}, "granularity", "'diagonal'"),
    ],
)
def test_bad_values_raise_one_line_naming_key_and_value(kwargs: dict, key: str, shown: str) -> None:
    kwargs = {"method": "campfire", **kwargs}
    with pytest.raises(ConfigError) as err:
        SparsityConfig(**kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert f"sparsity.{key} = {shown}" in message
    assert "expected" in message


@pytest.mark.parametrize(("target", "m", "n"), [(0.5, 4, 2), (0.75, 4, 1), (0.7, 4, 1), (0.75, 8, 2), (0.0, 4, 4)])
def test_nm_keep_count_is_derived_from_the_target(target: float, m: int, n: int) -> None:
    cfg = SparsityConfig(method="campfire", granularity="n:m", target_sparsity=target, m=m)
    assert cfg.n == n
    assert abs((1 - cfg.n / m) - target) <= 0.5 / m + 1e-12  # the nearest achievable
    assert SparsityConfig(method="campfire", granularity="n:m", target_sparsity=target, m=m, n=n) == cfg


def test_one_shot_may_start_and_end_at_the_same_epoch() -> None:
    cfg = SparsityConfig(method="campfire", target_sparsity=0.5, schedule="one_shot", start_epoch=3, end_epoch=3)
    assert cfg.end_epoch == 3
