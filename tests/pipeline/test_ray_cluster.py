"""The Ray executor on a simulated two-node cluster, joined by address through the command line."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from robustsparse.cli import main
from robustsparse.config import load_config
from robustsparse.pipeline.experiment import run_experiment


def test_a_two_node_cluster_joined_by_address_gives_the_local_results(tmp_path, capsys, tiny_grid):
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    ray = pytest.importorskip("ray")
    config = tmp_path / "ray.yaml"
    config.write_text(yaml.safe_dump(tiny_grid))
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        code = main(
            ["run", str(config), "--out", str(tmp_path / "ray"), "--no-progress", "--no-report"]
            + ["--executor", "ray", "--ray-address", cluster.address]
        )
        assert code == 0, capsys.readouterr().err[-2000:]
        assert not ray.is_initialized()  # the driver left the cluster it joined
    finally:
        cluster.shutdown()
    local = run_experiment(
        load_config(config), tmp_path / "local", device=torch.device("cpu"), progress=False, report=False
    )
    on_ray = pd.read_csv(tmp_path / "ray" / "results.csv")
    assert len(on_ray) == len(local.results) > 0

    def rows(frame: pd.DataFrame) -> list[tuple]:
        return sorted(zip(frame["model_id"], frame["key"], frame["n_correct"].astype(int)))

    assert rows(on_ray) == rows(local.results)
