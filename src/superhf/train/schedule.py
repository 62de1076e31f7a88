"""The learning-rate schedule, stepped once per iteration (not per optimizer step).

transformers' schedules with their warm-up moved one iteration earlier, so that the first
iteration already trains (`iteration_scheduler`); the trainer and `superhf compare` use it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import get_scheduler


def iteration_scheduler(
    name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, num_iterations: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """transformers' schedule `name`, stepped once per iteration, with its warm-up moved one
    iteration earlier: iteration 1 trains at learning_rate / warmup_steps (not 0, as
    transformers' step 0 would), iteration `warmup_steps` at the full rate. After the warm-up
    the schedule is transformers' own, so it ends where it always did.
    """
    scheduler = get_scheduler(name, optimizer, warmup_steps, num_iterations)
    if warmup_steps == 0 or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        return scheduler

    def shifted(schedule: Callable[[int], float]) -> Callable[[int], float]:
        # A plain function (not a callable object), so the scheduler's state_dict holds no
        # code and checkpoints load with weights_only=True.
        def lr_lambda(step: int) -> float:
            return schedule(step + 1) if step < warmup_steps else schedule(step)

        return lr_lambda

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [shifted(f) for f in scheduler.lr_lambdas])
