"""Run by tests/train/test_distributed.py under torchrun (2 ranks, gloo): the mask agreement check.

First every rank holds the same masks (the check must stay quiet), then rank 1 flips one bit (the
check must fire, on every rank). Prints one line per outcome; exits 0 when both behaved.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from robustsparse.train.distributed import MasksDiverged, check_masks_agree

CPU = torch.device("cpu")


def main() -> int:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    masks = {"conv.weight": torch.ones(4, 3, 3, 3, dtype=torch.bool), "fc.weight": torch.zeros(10, 4, dtype=torch.bool)}
    check_masks_agree(masks, device=CPU, where="probe")  # identical: quiet
    print(f"rank {rank}: quiet on identical masks", flush=True)
    if rank == 1:
        masks["conv.weight"][2, 1, 0, 0] = False
    try:
        check_masks_agree(masks, device=CPU, where="probe")
    except MasksDiverged as exc:
        print(f"rank {rank}: fired: {exc}", flush=True)
        dist.destroy_process_group()
        return 0
    print(f"rank {rank}: did not fire", flush=True)
    dist.destroy_process_group()
    return 3


if __name__ == "__main__":
    sys.exit(main())
