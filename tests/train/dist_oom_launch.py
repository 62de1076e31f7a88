"""`superhf` with out-of-memory injected on one process, for tests/train/test_distributed.py.

    torchrun --standalone --nproc_per_node 2 tests/train/dist_oom_launch.py train ...

On the process whose RANK is SUPERHF_TEST_OOM_RANK, every fine-tuning forward of more than one
sequence raises torch.OutOfMemoryError; the other processes run as they are.
"""

from __future__ import annotations

import os

import torch

import superhf.train.update
from superhf.cli import main

if os.environ.get("RANK") == os.environ.get("SUPERHF_TEST_OOM_RANK"):
    loss = superhf.train.update.superhf_loss

    def limited(logits, *args, **kwargs):
        if logits.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test).")
        return loss(logits, *args, **kwargs)

    superhf.train.update.superhf_loss = limited

main()
