"""The run folder: where an experiment's outputs live, and the guard against mixing two configs.

`<run_dir>/config.yaml` holds the resolved configuration. Starting again on the same folder with
the same configuration resumes; a different configuration is refused (unless `restart=True`,
which clears the folder first), so results of two experiments never mix.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from reports.atomic import write_text_atomic
from reports.contract import CONFIG_FILE
from robustsparse.config import ExperimentConfig, config_from_dict, dump_config, experiment_digest
from robustsparse.errors import ConfigError

__all__ = ["default_run_dir", "prepare_run_dir", "read_run_config"]

log = logging.getLogger(__name__)


def default_run_dir(cfg: ExperimentConfig) -> Path:
    """`runs/<name>`."""
    return Path("runs") / cfg.name


def read_run_config(run_dir: str | Path) -> ExperimentConfig:
    """The resolved configuration stored in a run folder."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} is not a run folder: {CONFIG_FILE} is missing; run `robustsparse run CONFIG --out {run_dir}` first"
        )
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def prepare_run_dir(cfg: ExperimentConfig, run_dir: str | Path, *, restart: bool = False) -> Path:
    """Create the run folder and write the resolved config, or check it matches the one there.

    The `execution` section is left out of the comparison: how a run executes (local or Ray,
    which resources) never changes what it computes, so any executor resumes any run folder.

    Raises:
        ConfigError: the folder holds a run of a different configuration and `restart` is False.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / CONFIG_FILE
    if config_file.is_file() and not restart:
        try:
            stored = read_run_config(run_dir)
        except ConfigError:
            stored = None
        if stored is None or experiment_digest(stored) != experiment_digest(cfg):
            raise ConfigError(
                f"{run_dir} holds a run of a different configuration ({CONFIG_FILE} differs); "
                "use another --out folder, or pass --restart to delete that run and start over"
            )
        return run_dir
    if restart and run_dir.exists():
        log.warning("--restart: deleting %s", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_file, dump_config(cfg))
    return run_dir
