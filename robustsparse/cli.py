"""The `robustsparse` command line: thin wrappers that chain library functions.

Every subcommand maps to one library call. Every error caused by the input (a bad argument, a
bad config, a missing dataset, an unsafe checkpoint, a report that cannot be built, a file that
cannot be written) prints one line and exits with code 2, without a traceback (`-v` logs it);
Ctrl-C exits with 130 and keeps everything finished. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from robustsparse._version import __version__
from robustsparse.errors import RobustSparseError

__all__ = ["main", "build_parser"]

log = logging.getLogger("robustsparse")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line argparse refuses (unknown option, bad value)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, steps)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected an integer >= 1")
    return value


def _n_examples(text: str) -> int | None:
    """A positive number of examples, or `all` (the whole test split)."""
    if text.strip().lower() == "all":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; give N >= 1, or 'all' for the whole test split") from None


def _add_common_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="experiment file (YAML), e.g. configs/digits-quick.yaml")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.epochs=5 --set sparsity.target_sparsity=[0.5,0.7]; repeatable",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    parser.add_argument(
        "--restart", action="store_true", help="delete an existing run folder of a different config and start over"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _number_type(strict: bool):
    """An argparse type: a finite number > 0 (`strict`: CPUs, GB) or >= 0 (GPUs)."""
    bound = "> 0" if strict else ">= 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
            raise argparse.ArgumentTypeError(f"{text} is not allowed; expected a number {bound}")
        return value

    return parse


_positive_number = _number_type(strict=True)
_non_negative_number = _number_type(strict=False)


#: command-line flag (its argparse dest) -> the key of the config's `execution` section it overrides
_EXECUTION_FLAGS = {
    "executor": "executor",
    "ray_address": "ray_address",
    "ray_num_cpus": "ray_num_cpus",
    "worker_threads": "worker_threads",
    "train_cpus": "train.cpus",
    "eval_cpus": "eval.cpus",
    "train_gpus": "train.gpus",
    "eval_gpus": "eval.gpus",
    "train_memory_gb": "train.memory_gb",
    "eval_memory_gb": "eval.memory_gb",
}


def _add_executor_args(parser: argparse.ArgumentParser) -> None:
    ex = parser.add_argument_group(
        "executor",
        "where the training and attack jobs run (Ray: pip install 'robustsparse[ray]'); each flag overrides "
        "the config's execution section, whose values are the defaults; none changes any result",
    )
    ex.add_argument(
        "--executor",
        choices=["local", "ray"],
        default=None,
        help="local (default): one job after another in this process; ray: every job a Ray task",
    )
    ex.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT",
        help="join a running Ray cluster (default: start an embedded Ray on this machine)",
    )
    ex.add_argument(
        "--ray-num-cpus", type=_positive_int, default=None, help="CPUs of the embedded Ray (default: the machine's)"
    )
    ex.add_argument("--train-cpus", type=_positive_number, default=None, help="CPUs per training task (default 1)")
    ex.add_argument("--eval-cpus", type=_positive_number, default=None, help="CPUs per attack task (default 1)")
    ex.add_argument("--train-gpus", type=_non_negative_number, default=None, help="GPUs per training task (default 0)")
    ex.add_argument("--eval-gpus", type=_non_negative_number, default=None, help="GPUs per attack task (default 0)")
    ex.add_argument(
        "--gpus-per-task",
        type=_non_negative_number,
        default=None,
        help="GPUs per task of both kinds (default 0: CPU only; > 0 trains and attacks on cuda)",
    )
    ex.add_argument(
        "--train-memory-gb", type=_positive_number, default=None, help="memory reserved per training task (default 2)"
    )
    ex.add_argument(
        "--eval-memory-gb", type=_positive_number, default=None, help="memory reserved per attack task (default 1)"
    )
    ex.add_argument("--worker-threads", type=_positive_int, default=None, help="torch threads per Ray task (default 1)")


def _with_execution_flags(cfg, args: argparse.Namespace):
    """`cfg` with the command line's executor flags over its `execution` section (validated again)."""
    from robustsparse.config import config_from_dict, config_to_dict

    flags = {key: getattr(args, dest, None) for dest, key in _EXECUTION_FLAGS.items()}
    gpus = getattr(args, "gpus_per_task", None)
    if gpus is not None:  # both kinds, unless a kind's own flag says otherwise
        flags["train.gpus"] = gpus if flags["train.gpus"] is None else flags["train.gpus"]
        flags["eval.gpus"] = gpus if flags["eval.gpus"] is None else flags["eval.gpus"]
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return cfg
    raw = config_to_dict(cfg)
    for key, value in given.items():
        section, _, name = key.rpartition(".")
        (raw["execution"][section] if section else raw["execution"])[name] = value
    return config_from_dict(raw)


def _require_ray_when_used(cfg) -> None:
    """One line before anything is written when the run is to execute on Ray and Ray is missing."""
    if cfg.execution.executor != "ray":
        return
    from robustsparse.pipeline.ray_executor import RayMissing, import_ray

    try:
        import_ray()
    except RayMissing as exc:
        raise UsageError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="robustsparse",
        description="Train dense and sparse CNNs, attack them, and report what sparsity does to adversarial robustness.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"robustsparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train the dense and sparse models of an experiment",
        description="Train the dense model of every seed and every sparse model of the grid; finished models are skipped.",
    )
    _add_common_run_args(p)
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser(
        "run",
        help="train, attack and report a whole experiment (the main job)",
        description="From one experiment file: the dense model(s), the sparse grid, the attack sweep "
        "over every model, then the report. Started again on the same folder, it skips "
        "everything finished.",
    )
    _add_common_run_args(p)
    p.add_argument("--no-report", action="store_true", help="stop after the attack sweep")
    _add_executor_args(p)
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser(
        "attack",
        help="attack checkpoints over an eps sweep and write a tidy results table",
        description="Evaluate checkpoints on N test examples of their dataset (spread evenly over the split, the same for every model). Attacks come "
        "from --attack/--eps or from the attack section of a config file (--config).",
    )
    p.add_argument("checkpoints", type=Path, nargs="*", help="model folders or their model.pt files")
    ext = p.add_argument_group(
        "models from outside robustsparse",
        "a state_dict (plain or torch.nn.utils.prune's weight_orig/weight_mask) with its architecture, a "
        "torch.export .pt2 or a TorchScript file; loaded without unpickling Python objects",
    )
    ext.add_argument(
        "--model-card", type=Path, action="append", default=[], metavar="YAML", help="a model card file; repeatable"
    )
    ext.add_argument("--weights", type=Path, default=None, help="the model file (with the options below)")
    ext.add_argument("--arch", default=None, help="state dicts: torchvision:<name> or a robustsparse model")
    ext.add_argument("--dataset", default=None, help="the dataset whose test split is attacked")
    ext.add_argument("--mean", default=None, help="the normalisation the model expects, e.g. 0.4914,0.4822,0.4465")
    ext.add_argument("--std", default=None, help="e.g. 0.2470,0.2435,0.2616 (0,0,0 / 1,1,1: the model takes [0,1])")
    ext.add_argument("--num-classes", type=_positive_int, default=None, help="default: the dataset's")
    ext.add_argument("--format", default="auto", help="auto (default), state_dict, pt2 or torchscript")
    ext.add_argument("--name", default=None, help="model id in the results (default: the file's stem)")
    p.add_argument(
        "--attack",
        action="append",
        default=[],
        metavar="NAME[:k=v,...]",
        help="attack name or spec (e.g. pgd, 'pgd:steps=20', fgsm); repeatable; see attacks.list_attacks()",
    )
    p.add_argument("--eps", default=None, help="comma-separated eps in pixel units, e.g. 1/255,2/255,4/255,8/255")
    p.add_argument(
        "--steps", type=_positive_int, default=None, help="iterations of iterative attacks (queries for square)"
    )
    p.add_argument(
        "--config", type=Path, default=None, help="take the attacks, n_examples and seed from this experiment file"
    )
    p.add_argument(
        "--n-examples",
        type=_n_examples,
        default=1000,
        metavar="N",
        help="N test examples spread over the split (default 1000; 'all' for the whole split)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=256, help="attack batch size")
    p.add_argument("--seed", type=int, default=0, help="seed of randomised attacks")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--data-root", type=Path, default=None, help="folder holding the dataset, if not where it was at training time"
    )
    p.add_argument("--out", type=Path, default=Path("runs/attacks"), help="output folder (default runs/attacks)")
    p.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking sanity checks")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=_cmd_attack)

    p = sub.add_parser(
        "report",
        help="(re)build the report of a finished run folder",
        description="Write report/index.html, report/report.md, figures and tables from the run's results "
        "table and metadata (models are not loaded).",
    )
    p.add_argument("run_dir", type=Path, help="the run folder (runs/<name>)")
    p.add_argument("--eps", default=None, help="eps of the heatmap and findings (default: chosen from the results)")
    p.add_argument(
        "--correction",
        default="holm",
        help="multiple-comparison correction of the McNemar tests: holm (default), bh (Benjamini-Hochberg) or none",
    )
    p.add_argument("--parquet", action="store_true", help="also write the results table as report/results.parquet")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser(
        "export",
        help="export a checkpoint: compressed, compacted, or for torch.nn.utils.prune, torch.export, ONNX",
        description="compressed: only kept values plus the cheapest index for the granularity (loads back "
        "bit-identical). compact: filter/channel models rebuilt with fewer channels. torch-prune: a state dict "
        "with weight_orig/weight_mask. pt2: a torch.export program. onnx: an ONNX graph (needs the onnx extra).",
    )
    p.add_argument("checkpoint", type=Path, help="a model folder or its model.pt")
    p.add_argument(
        "--format",
        choices=["compressed", "compact", "torch-prune", "pt2", "onnx"],
        required=True,
        help="what to write (each is loaded back and checked before it is written)",
    )
    p.add_argument("--compact", action="store_true", help="pt2 / onnx: the compacted model (filter / channel pruning)")
    p.add_argument("--out", type=Path, default=None, help="output file (default beside the checkpoint)")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser(
        "list",
        help="list the registered models, datasets or sparsity methods",
        description="List the architectures, datasets or sparsity methods an experiment file can name.",
    )
    p.add_argument("what", choices=["models", "datasets", "methods"], help="what to list")
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser(
        "haloc-costs",
        help="build and save haloc's cost table (latency or MACs per layer and rank) for an experiment",
        description="For the model of an experiment file and the settings of its haloc entry, time every "
        "compressible conv's Tucker-2 layer at every rank candidate on a device and batch (or count its "
        "MACs) and write the table that sparsity.haloc_cost_table names.",
    )
    p.add_argument("config", type=Path, help="experiment file with a haloc sparsity entry")
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )
    p.add_argument("--kind", choices=["latency", "macs"], default="latency", help="measured latency (default) or MACs")
    p.add_argument("--device", default="cpu", help="the device to time on (cpu, cuda, cuda:N; default cpu)")
    p.add_argument("--batch", type=_positive_int, default=1, help="the deployment batch size (default 1)")
    p.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timing per layer and rank (default 0.2)")
    p.set_defaults(handler=_cmd_haloc_costs)

    p = sub.add_parser(
        "inspect",
        help="show a checkpoint's architecture, data, parameters, accuracy and per-layer sparsity",
        description="Load a checkpoint safely, verify its masks and structure against its metadata "
        "(non-zero exit when they disagree), and print what it is.",
    )
    p.add_argument("checkpoint", type=Path, help="a model folder (runs/<name>/models/<model_id>) or its model.pt")
    p.add_argument("--layers", action="store_true", help="print the per-layer sparsity table")
    p.set_defaults(handler=_cmd_inspect)
    return parser


def _configure_logging(verbose: bool) -> None:
    # under torchrun only rank 0 tells what happens; the other ranks say only what goes wrong
    other_rank = os.environ.get("RANK", "0").strip() not in ("", "0")
    logging.basicConfig(
        level=logging.WARNING if other_rank else logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _load_cfg(args: argparse.Namespace):
    from robustsparse.config import load_config

    return load_config(args.config, args.overrides)


def _device_and_ranks(args: argparse.Namespace):
    """The device, and the torchrun context (process group joined) when started by torchrun, else None."""
    from robustsparse.train.distributed import DistContext
    from robustsparse.utils.runtime import resolve_device

    device = resolve_device(args.device)
    distributed = DistContext.from_env()
    if distributed is None:
        return device, None
    device = distributed.device(device)
    distributed.init(device)
    return device, distributed


def _cmd_train(args: argparse.Namespace) -> int:
    from robustsparse.pipeline import default_run_dir, load_experiment_data, prepare_run_dir, train_experiment
    from robustsparse.pipeline.experiment import prepare_distributed
    from robustsparse.pipeline.training import STATUS_FAILED

    cfg = _load_cfg(args)
    device, distributed = _device_and_ranks(args)
    try:
        run_dir = args.out or default_run_dir(cfg)
        if distributed is None:
            bundle = load_experiment_data(cfg)  # a missing dataset fails here, before anything is written
            run_dir = prepare_run_dir(cfg, run_dir, restart=args.restart)
        else:
            bundle, run_dir = prepare_distributed(cfg, run_dir, restart=args.restart, distributed=distributed)
        summary = train_experiment(
            cfg, run_dir, device=device, bundle=bundle, progress=not args.no_progress, distributed=distributed
        )
    finally:
        if distributed is not None:
            distributed.close()
    if distributed is not None and not distributed.is_main:
        return 0
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    n_failed = int((summary["status"] == STATUS_FAILED).sum())
    if n_failed:
        print(f"\n{n_failed} model(s) failed to train; see the failure column")
    print(f"\nmodels: {run_dir / 'models'}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from robustsparse.pipeline import default_run_dir, run_experiment

    cfg = _with_execution_flags(_load_cfg(args), args)
    _require_ray_when_used(cfg)
    device, distributed = _device_and_ranks(args)
    if cfg.execution.executor == "ray" and distributed is not None:
        distributed.close()
        raise UsageError("--executor ray cannot run under torchrun: start it as a plain command")
    try:
        summary = run_experiment(
            cfg,
            args.out or default_run_dir(cfg),
            device=device,
            restart=args.restart,
            progress=not args.no_progress,
            report=not args.no_report,
            distributed=distributed,
        )
    finally:
        if distributed is not None:
            distributed.close()
    if distributed is not None and not distributed.is_main:
        return 0  # rank 0 attacks, reports and prints
    print(summary.headline().to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    failed = summary.failed()
    for row in failed.itertuples(index=False):
        print(f"FAILED {row.model_id}: {row.failure} (no results)")
    print(
        f"\n{len(summary.models)} models ({summary.n_trained} trained now, {len(failed)} failed), "
        f"{summary.n_evaluated} attack evaluations computed now, {summary.seconds:.1f} s"
    )
    print(f"results: {summary.run_dir / 'results.csv'}")
    if summary.report_path is not None:
        print(f"report:  {summary.report_path}")
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from robustsparse.pipeline.attack_command import attack_command
    from robustsparse.utils.runtime import resolve_device

    table, out = attack_command(
        args.checkpoints,
        cards=_model_cards(args),
        attacks=args.attack,
        eps=args.eps,
        steps=args.steps,
        config=args.config,
        n_examples=args.n_examples,
        batch_size=args.batch_size,
        seed=args.seed,
        device=resolve_device(args.device),
        data_root=args.data_root,
        out_dir=args.out,
        sanity=not args.no_sanity,
        progress=not args.no_progress,
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nresults: {out / 'results.csv'}")
    return 0


def _numbers(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} {text!r}: give comma-separated numbers, e.g. 0.5,0.5,0.5") from None


def _model_cards(args: argparse.Namespace) -> list:
    """The external models of `attack`: every --model-card, and the card made of --weights and its options."""
    from robustsparse.external import ModelCard, read_model_card

    cards = [read_model_card(path) for path in args.model_card]
    if args.data_root is not None:  # the data lives elsewhere on this machine, for every model
        cards = [ModelCard.from_mapping({**card.__dict__, "data_root": str(args.data_root)}) for card in cards]
    inline = {
        "arch": args.arch,
        "dataset": args.dataset,
        "mean": _numbers(args.mean, "--mean"),
        "std": _numbers(args.std, "--std"),
        "num_classes": args.num_classes,
        "name": args.name,
    }
    if args.weights is None:
        given = [f"--{k.replace('_', '-')}" for k, v in inline.items() if v is not None]
        if given:
            raise UsageError(f"{given[0]} describes an external model: give its file with --weights")
        return cards
    if args.dataset is None:
        raise UsageError("--weights needs --dataset: the dataset whose test split is attacked")
    raw = {k: v for k, v in inline.items() if v is not None}
    raw.update(weights=str(args.weights), format=args.format)
    if args.data_root is not None:
        raw["data_root"] = str(args.data_root)
    return [*cards, ModelCard.from_mapping(raw)]


def _cmd_report(args: argparse.Namespace) -> int:
    from reports import build_report

    path = build_report(args.run_dir, eps=args.eps, correction=args.correction, parquet=args.parquet)
    print(f"report: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from robustsparse.exporting import export_checkpoint

    summary = export_checkpoint(args.checkpoint, fmt=args.format, out=args.out, compact=args.compact)
    print(summary)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from robustsparse.models import list_models, model_info

        for name in list_models():
            print(f"{name:16s} {model_info(name).description}")
    elif args.what == "methods":
        from robustsparse.sparsity import list_methods

        for method in list_methods():
            print(f"{method.name:16s} {method.when:16s} {method.description}")
            print(f"{'':16s} {'':16s} granularities: {', '.join(method.granularities)}")
    else:
        from robustsparse.data import list_datasets

        for name in list_datasets():
            print(name)
    return 0


def _cmd_haloc_costs(args: argparse.Namespace) -> int:
    import torch

    from robustsparse.pipeline import load_experiment_data
    from robustsparse.sparsity.haloc_costs import build_cost_table, save_cost_table
    from robustsparse.train.trainer import model_spec
    from robustsparse.utils.runtime import resolve_device

    cfg = _load_cfg(args)
    entries = [e for e in cfg.sparsity if e.method == "haloc"]
    if not entries:
        raise UsageError(
            f"{args.config} has no sparsity entry with method: haloc; add one (its settings decide the layers and ranks)"
        )
    info = load_experiment_data(cfg).info
    spec = model_spec(cfg.model, info)
    example = torch.zeros(1, info.in_channels, info.image_size, info.image_size)
    device = resolve_device(args.device)
    table, described = build_cost_table(
        spec.build().eval(),
        example,
        entries[0],
        kind=args.kind,
        device=device,
        batch=args.batch,
        min_run_time=args.min_run_time,
    )
    path = save_cost_table(args.out, table, **described, arch=cfg.model.arch, dataset=info.name)
    print(f"{args.kind} table of {len(table)} layers written to {path}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from robustsparse.inspection import inspect_checkpoint

    report = inspect_checkpoint(args.checkpoint)
    print(report.render(layers=args.layers))
    if report.problems:
        for problem in report.problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1
    return 0


def _user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input, not a bug: one line and exit 2 for each.

    `attacks` and `reports` keep their own error types (they never import robustsparse). They
    are looked up only if already imported: an error of a module never imported cannot occur,
    and `--help` stays fast.
    """
    types: list[type[BaseException]] = [RobustSparseError, UsageError, OSError]
    for module, names in (
        ("attacks.errors", ("AttackSpecError", "AttackInputError")),
        ("reports.errors", ("ReportError",)),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            types += [getattr(loaded, name) for name in names]
    return tuple(types)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:  # e.g. --out in a folder that cannot be written
        return f"cannot access {exc.filename}: {exc.strerror or exc}; check the path and its permissions"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `robustsparse` console script and `python -m robustsparse`.

    Returns:
        0 on success, 1 when `inspect` finds problems, 2 on any error of the input, 130 on Ctrl-C.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(
            "interrupted: finished models and evaluations are kept; run the same command again to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not isinstance(exc, _user_error_types()):
            raise  # a bug: keep the traceback
        log.debug("details of the error below", exc_info=True)
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
