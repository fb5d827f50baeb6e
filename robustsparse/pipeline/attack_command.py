"""`robustsparse attack`: evaluate any checkpoints over an eps sweep into a tidy results folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from attacks import AttackSpec, AttackSpecError, attack_info, parse_specs
from robustsparse.checkpoints import resolve_checkpoint_path
from robustsparse.config import load_config
from robustsparse.errors import ConfigError
from robustsparse.pipeline.evaluation import EvalSettings, collect_results
from robustsparse.pipeline.experiment import OUTCOMES_NAME, RESULTS_NAME, SANITY_NAME
from robustsparse.utils.atomic import write_csv_atomic

__all__ = ["attack_specs_from_args", "attack_command"]

SHORT_COLUMNS = [
    "model_id",
    "granularity",
    "achieved_sparsity",
    "attack",
    "eps_label",
    "steps",
    "accuracy",
    "ci_low",
    "ci_high",
]


def attack_specs_from_args(attacks: Sequence[str], eps: str | None, steps: int | None, seed: int) -> list[AttackSpec]:
    """Specs from `--attack NAME[:k=v,...]` (repeatable), `--eps a,b,c` and `--steps` (clean first).

    `--steps` applies to the attacks that have steps; the seed to those that take one, unless a
    spec sets its own.
    """
    if not attacks:
        raise ConfigError("no attack given: pass --attack NAME (e.g. --attack fgsm --eps 1/255,8/255) or --config FILE")
    eps_values = [e.strip() for e in eps.split(",") if e.strip()] if eps else [None]
    texts = ["clean"]
    try:
        for text in attacks:
            name, _, params = text.strip().partition(":")
            info = attack_info(name.strip())
            extra = [p for p in params.split(",") if p.strip()]
            if steps is not None and info.steps is not None and not any(p.strip().startswith("steps=") for p in extra):
                extra.append(f"steps={steps}")
            if info.eps != "none" and not any(p.strip().startswith("seed=") for p in extra):
                extra.append(f"seed={seed}")
            for value in eps_values:
                items = extra + ([f"eps={value}"] if value is not None else [])
                texts.append(f"{info.name}:{','.join(items)}" if items else info.name)
        return parse_specs(texts)
    except AttackSpecError as exc:
        raise ConfigError(f"attack: {exc}") from None


def attack_command(
    checkpoints: Sequence[Path],
    *,
    attacks: Sequence[str] = (),
    eps: str | None = None,
    steps: int | None = None,
    config: Path | None = None,
    n_examples: int | None = 1000,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device,
    data_root: Path | None = None,
    out_dir: Path,
    sanity: bool = True,
    progress: bool = True,
) -> tuple[pd.DataFrame, Path]:
    """Attack `checkpoints` and write results.csv, outcomes.csv.gz and sanity.csv into `out_dir`.

    Returns:
        `(short_table, out_dir)`: a few columns per model x spec, for printing.
    """
    if config is not None:
        section = load_config(config).attack
        specs = section.attack_specs()
        n_examples, batch_size, seed = section.n_examples, section.batch_size, section.seed
    else:
        specs = attack_specs_from_args(attacks, eps, steps, seed)
    if n_examples is not None and n_examples < 1:  # None, not 0, means all: 0 is a mistake, not a request
        raise ConfigError(
            f"n_examples = {n_examples} is not allowed; give N >= 1, or None (all) for the whole test split"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size} is not allowed; give an integer >= 1")
    model_dirs = [resolve_checkpoint_path(path).parent for path in checkpoints]
    settings = EvalSettings(n_examples, batch_size, seed, sanity)
    results, outcomes, flags, _ = collect_results(
        model_dirs, specs, settings, device=device, data_root=data_root, progress=progress
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out_dir / OUTCOMES_NAME, outcomes)
    write_csv_atomic(out_dir / SANITY_NAME, flags)
    write_csv_atomic(out_dir / RESULTS_NAME, results)
    return results[SHORT_COLUMNS], out_dir
