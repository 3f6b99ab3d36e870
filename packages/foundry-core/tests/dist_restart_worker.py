"""torchrun worker for test_train_distributed.py: a restart must join a fresh process group.

Usage: torchrun --nproc_per_node=2 --max-restarts=1 dist_restart_worker.py OUT_DIR
Attempt 0: both ranks join and all-reduce, then rank 1 SIGKILLs itself. Attempt 1: rank 0 waits 2 s, so
rank 1 reaches torchrun's store first, where attempt 0's keys still are; each rank then writes the sum of
an all-reduce to OUT_DIR.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from foundry_core.distributed import init_distributed


def main() -> None:
    out, attempt, rank = Path(sys.argv[1]), os.environ["TORCHELASTIC_RESTART_COUNT"], int(os.environ["RANK"])
    if attempt == "1" and rank == 0:
        time.sleep(2)
    init_distributed("ddp", "gloo", "cpu")
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    (out / f"attempt{attempt}_rank{rank}.txt").write_text(str(total.item()))
    if attempt == "0":
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(120)  # until torchrun stops this attempt


if __name__ == "__main__":
    main()
