"""The sparsity engine: granularities, importance, allocation, schedules, masks, accounting, compressed encoding.

Works on any `nn.Module` with conv / linear layers. The training loop drives the pruner of a
registered method (`methods`: `build_pruner`; Campfire's is `CampfirePruner`); everything else is plain functions over a model and its masks (`dict[name, BoolTensor]`).

Example:
    >>> cfg = SparsityConfig(method="campfire", granularity="window", target_sparsity=0.7, end_epoch=10)
    >>> pruner = CampfirePruner(model, cfg, steps_per_epoch=len(loader))
    >>> # after every optimizer.step():  pruner.step(global_step, optimizer); pruner.apply_(optimizer)
    >>> layer_sparsity_table(model, pruner.masks, pruner.granularity_info())
"""

from robustsparse.sparsity.accounting import layer_sparsity_table, model_cost, structure_problems, verify_structure
from robustsparse.sparsity.compact import compact_model, removable_channels
from robustsparse.sparsity.coupling import ChannelGroup, find_channel_groups
from robustsparse.sparsity.encoding import compressed_size_bytes, dense_size_bytes, export_compressed, load_compressed
from robustsparse.sparsity.layers import prunable_layers
from robustsparse.sparsity.masks import achieved_sparsity, apply_masks_, mask_grads_, zero_masked_state_
from robustsparse.sparsity.methods import Method, Pruner, build_pruner, get_method, list_methods, method_names
from robustsparse.sparsity.pruner import CampfirePruner, compute_masks, prune_one_shot
from robustsparse.sparsity.schedule import (
    cubic_sparsity,
    linear_sparsity,
    one_shot_sparsity,
    schedule_sparsity,
    target_at_step,
)
from robustsparse.sparsity.settings import GRANULARITIES, SparsityConfig

__all__ = [
    "SparsityConfig",
    "GRANULARITIES",
    "CampfirePruner",
    "Method",
    "Pruner",
    "build_pruner",
    "get_method",
    "list_methods",
    "method_names",
    "prune_one_shot",
    "compute_masks",
    "prunable_layers",
    "apply_masks_",
    "zero_masked_state_",
    "mask_grads_",
    "achieved_sparsity",
    "cubic_sparsity",
    "linear_sparsity",
    "one_shot_sparsity",
    "schedule_sparsity",
    "target_at_step",
    "layer_sparsity_table",
    "model_cost",
    "verify_structure",
    "structure_problems",
    "export_compressed",
    "load_compressed",
    "compressed_size_bytes",
    "dense_size_bytes",
    "compact_model",
    "removable_channels",
    "ChannelGroup",
    "find_channel_groups",
]
