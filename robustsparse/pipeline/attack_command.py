"""`robustsparse attack`: evaluate any checkpoints over an eps sweep into a tidy results folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from attacks import AttackSpec, AttackSpecError, attack_info
from reports.atomic import write_csv_atomic
from reports.contract import MODELS_DIR, OUTCOMES_FILE, RESULTS_FILE, SANITY_FILE
from robustsparse.checkpoints import resolve_checkpoint_path
from robustsparse.config import load_config
from robustsparse.errors import ConfigError
from robustsparse.external import ModelCard, import_external
from robustsparse.pipeline.evaluation import EvalSettings, collect_results

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


def _attack_params(text: str) -> dict[str, str]:
    """`NAME[:k=v,...]` (one `--attack`) as the mapping `AttackSpec.from_dict` takes."""
    name, _, params = text.strip().partition(":")
    out = {"name": name.strip()}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise AttackSpecError(f"bad --attack {text!r}: {item!r} is not key=value, e.g. 'pgd:steps=20'")
        out[key.strip()] = value.strip()
    return out


def attack_specs_from_args(attacks: Sequence[str], eps: str | None, steps: int | None, seed: int) -> list[AttackSpec]:
    """Specs from `--attack NAME[:k=v,...]` (repeatable), `--eps a,b,c` and `--steps` (clean first).

    `--steps` applies to the attacks that have steps; the seed to those that take one, unless a
    spec sets its own.
    """
    if not attacks:
        raise ConfigError("no attack given: pass --attack NAME (e.g. --attack fgsm --eps 1/255,8/255) or --config FILE")
    eps_values = [e.strip() for e in eps.split(",") if e.strip()] if eps else []
    specs = [AttackSpec.clean()]
    try:
        for text in attacks:
            params: dict[str, object] = _attack_params(text)
            info = attack_info(str(params["name"]))
            if steps is not None and info.steps is not None:
                params.setdefault("steps", steps)
            if info.eps != "none":
                params.setdefault("seed", seed)
            if eps_values:
                specs += [AttackSpec.from_dict({**params, "eps": value}) for value in eps_values]
            else:
                specs.append(AttackSpec.from_dict(params))
    except AttackSpecError as exc:
        raise ConfigError(f"attack: {exc}") from None
    return list({spec.key: spec for spec in specs}.values())  # one spec per key, first place kept


def attack_command(
    checkpoints: Sequence[Path],
    *,
    cards: Sequence[ModelCard] = (),
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
    """Attack `checkpoints` and external models (`cards`); write results.csv, outcomes.csv.gz and sanity.csv.

    External models are imported into `out_dir/models/<model_id>` (metadata only; the weights
    stay where they are), so their evaluations are cached like any model's.

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
    if not checkpoints and not cards:
        raise ConfigError("no model given: pass checkpoints, --model-card FILE, or --weights FILE with its options")
    ids = [card.model_id for card in cards]
    if len(set(ids)) != len(ids):
        raise ConfigError(
            f"two external models share the id {sorted({i for i in ids if ids.count(i) > 1})[0]!r}; give each a name"
        )
    model_dirs = [resolve_checkpoint_path(path).parent for path in checkpoints]
    model_dirs += [import_external(card, out_dir / MODELS_DIR) for card in cards]
    settings = EvalSettings(n_examples, batch_size, seed, sanity)
    results, outcomes, flags, _ = collect_results(
        model_dirs, specs, settings, device=device, data_root=data_root, progress=progress
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out_dir / OUTCOMES_FILE, outcomes)
    write_csv_atomic(out_dir / SANITY_FILE, flags)
    write_csv_atomic(out_dir / RESULTS_FILE, results)
    return results[SHORT_COLUMNS], out_dir
